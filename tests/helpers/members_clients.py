"""What a member's own client does with a copy from the list: find the encrypted part and
decrypt it with that member's tool (GnuPG, Sequoia or RNP), checking the list's signature;
and what it does when writing to one of the list's addresses: find the key by that address; and how
it checks a message the list signed but could not encrypt (LIST-sendkey@, the key watch)."""

from __future__ import annotations

import email
import subprocess
import tempfile
from email import policy
from email.message import EmailMessage
from pathlib import Path

from listserv import mime, openpgp

from .keys import GPG_BATCH, User, run


def encrypted_part(copy: bytes) -> bytes:
    """The armored OpenPGP message of an RFC 3156 multipart/encrypted copy."""
    message = email.message_from_bytes(copy, policy=policy.default)
    assert message.get_content_type() == "multipart/encrypted", message.get_content_type()
    assert message.get_param("protocol") == "application/pgp-encrypted"
    control, data = list(message.iter_parts())
    assert control.get_content_type() == "application/pgp-encrypted"
    assert b"Version: 1" in control.get_payload(decode=True)
    return data.get_payload(decode=True)


def recipient_key_ids(armored: bytes) -> list[str]:
    packets = openpgp.parse(openpgp.dearmor(armored))
    return [openpgp.pkesk_key_id(p) for p in packets if p.tag == 1]


def decrypt(user: User, armored: bytes, list_key: bytes, list_fingerprint: str) -> bytes:
    """Decrypt with the member's own tool; fails unless the list's key made a good signature."""
    with tempfile.TemporaryDirectory(prefix="member-client-") as scratch:
        key_file = Path(scratch) / "list.asc"
        key_file.write_bytes(list_key)
        if user.tool == "gpg":
            out = run(["gpg", "--batch", "--homedir", str(user.home), "--status-fd", "2",
                       "--trust-model", "always", "--no-auto-key-retrieve", "--import"],
                      input=list_key)
            out = run(["gpg", "--batch", "--homedir", str(user.home), "--status-fd", "2",
                       "--trust-model", "always", "--decrypt"], input=armored)
            validsig = [line for line in out.stderr.decode().splitlines() if "VALIDSIG" in line]
            assert len(validsig) == 1 and list_fingerprint in validsig[0], out.stderr.decode()
            return out.stdout
        if user.tool == "sq":
            out = run(["sq", "decrypt", "--recipient-key", str(user.secret_file),
                       "--signer-cert", str(key_file)], input=armored)
            return out.stdout
        run(["rnpkeys", "--homedir", str(user.home), "--import", str(key_file)])
        out = subprocess.run(["rnp", "--homedir", str(user.home), "--decrypt", "--password", "",
                              "--output", "-"], input=armored, capture_output=True)
        assert out.returncode == 0, out.stderr.decode()
        assert "Good signature" in out.stderr.decode() or "Valid signature" in out.stderr.decode(), out.stderr.decode()
        return out.stdout


def encrypt_to_address(tool: str, address: str, certificates: bytes, text: bytes) -> bytes:
    """`text` encrypted, armored, by `tool` to the key among `certificates` that has a user id
    for exactly `address` -- found by the tool itself, as a client does for the To: address."""
    with tempfile.TemporaryDirectory(prefix="member-client-") as scratch:
        certs = Path(scratch) / "certs.asc"
        certs.write_bytes(certificates)
        home = Path(scratch) / "home"
        home.mkdir(mode=0o700)
        if tool == "gpg":
            gpg = [*GPG_BATCH, "--homedir", str(home), "--no-autostart"]  # public keys only: no agent
            run([*gpg, "--import", str(certs)])
            return run([*gpg, "--trust-model", "always", "--armor",
                        "--encrypt", "--recipient", f"<{address}>"], input=text).stdout
        if tool == "sq":  # sq 0.27 encrypts to certificate files: pick the one by address first
            found = Path(scratch) / "found.pgp"
            run(["sq", "keyring", "filter", "--email", address, "--prune-certs", "--output", str(found), str(certs)])
            assert found.stat().st_size > 0, f"sq finds no certificate for {address}"
            return run(["sq", "encrypt", "--recipient-cert", str(found)], input=text).stdout
        run(["rnpkeys", "--homedir", str(home), "--import", str(certs)])
        return run(["rnp", "--homedir", str(home), "--encrypt", "--armor", "--recipient", address,
                    "--output", "-"], input=text).stdout


def read_reply(copy, user, list_key, fingerprint) -> tuple[EmailMessage, EmailMessage]:
    """A reply from the list, as its member reads it: the outer message, and the inner one
    decrypted with their own tool (the list's signature checked)."""
    outer = email.message_from_bytes(copy.data, policy=policy.default)
    inner = email.message_from_bytes(decrypt(user, encrypted_part(copy.data), list_key, fingerprint),
                                     policy=policy.default)
    return outer, inner


def text_of(inner) -> str:
    """The text parts of a message, joined."""
    return "\n".join(part.get_content() for part in inner.walk() if part.get_content_type() == "text/plain")


def verify_reply(data: bytes, list_key: bytes, fingerprint: str, scratch: Path) -> EmailMessage:
    """RFC 3156 §5 as a recipient checks it, with gpg and with sq: the first part's bytes as
    sent, the list's detached signature over them, by the key the reply itself carries."""
    message = email.message_from_bytes(data, policy=policy.default)
    assert message.get_content_type() == "multipart/signed"
    assert message.get_param("protocol") == "application/pgp-signature"
    assert message.get_param("micalg") == "pgp-sha512"
    body = data.split(b"\r\n\r\n", 1)[1]
    signed_part, signature_part = mime.body_parts(b"\r\n" + body, message.get_boundary())
    sig = signature_part.split(b"\r\n\r\n", 1)[1]
    (scratch / "data").write_bytes(signed_part)
    (scratch / "sig").write_bytes(sig)
    (scratch / "list.asc").write_bytes(list_key)
    home = scratch / "gnupg"
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--batch", "--homedir", str(home), "--import", str(scratch / "list.asc")],
                   check=True, capture_output=True)
    out = subprocess.run(["gpg", "--batch", "--homedir", str(home), "--status-fd", "1", "--verify",
                          str(scratch / "sig"), str(scratch / "data")], capture_output=True, text=True)
    assert out.returncode == 0 and f"VALIDSIG {fingerprint}" in out.stdout, out.stdout + out.stderr
    out = subprocess.run(["sq", "verify", "--signer-cert", str(scratch / "list.asc"), "--detached",
                          str(scratch / "sig"), str(scratch / "data")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return message
