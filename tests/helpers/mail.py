"""Submissions built the way real mail clients build them, with real OpenPGP tools.

    post(user, list_key, body, subject, style=..., tool=...) -> bytes   a whole message, CRLF

Styles, each after the client whose output it imitates:

    pgpmime                Thunderbird / K-9: multipart/encrypted, one sign+encrypt OpenPGP
                           message (to the list and to the sender's own key) holding
                           multipart/mixed; protected-headers="v1"; outer Subject "..."
    mutt                   Mutt: multipart/encrypted, sign+encrypt, inner text/plain written
                           with LF line endings, real outer Subject, no protected headers
    encrypted-signed-mime  Apple Mail + GPG Suite: multipart/encrypted (encrypt only) around
                           multipart/signed (detached signature)
    signed                 multipart/signed, not encrypted (Thunderbird "sign only")
    inline                 text/plain whose body is one armored sign+encrypt PGP MESSAGE
    inline-signed          text/plain whose body is one armored signed (not encrypted) message
    clearsign              text/plain whose body is a clearsigned text

The OpenPGP part is always made by the member's own tool: `gpg` for GnuPG users, `sq` for
Sequoia users, `rnp` for RNP users (`User.tool`). The lower-level helpers (`sign_detached`,
`sign_and_encrypt`, `encrypt_only`, `clearsign`, `multipart`, `message`) are public so
tests can build the broken and hostile variants real clients never send.
"""

from __future__ import annotations

import base64
import quopri
import subprocess
import tempfile
import uuid
from email.header import Header
from email.utils import formatdate
from pathlib import Path

from .keys import User, fingerprints, run

LIST = "news@example.org"
STYLES = ("pgpmime", "mutt", "encrypted-signed-mime", "signed", "inline", "inline-signed",
          "clearsign")


def post(user: User, list_key: bytes | str | None, body: str = "Hello, list.",
         subject: str = "Hello", *, style: str = "pgpmime", tool: str | None = None,
         to: str = LIST, in_reply_to: str | None = None, references: str | None = None) -> bytes:
    """A complete submission from `user` to the list whose armored public key is `list_key`."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; one of {STYLES}")
    if tool not in (None, user.tool):
        raise ValueError(f"{user.name}'s keys live in {user.tool}, not {tool}")
    if list_key is None and style not in ("signed", "inline-signed", "clearsign"):
        raise ValueError(f"style {style!r} encrypts: the list's key is needed")
    key = list_key.encode() if isinstance(list_key, str) else list_key
    threading = {"In-Reply-To": in_reply_to, "References": references}
    outer = headers(user, to=to, subject=subject, **threading)

    if style == "pgpmime":
        inner = protected(user, to, subject, threading, text_part(body))
        # Thunderbird encrypts to the sender's own key as well (so the Sent folder can be read).
        return message(outer_subject(outer, "..."),
                       encrypted_entity(sign_and_encrypt(user, key, inner, to_self=True)))
    if style == "mutt":
        inner = text_part(body, disposition="inline").replace(b"\r\n", b"\n")
        return message(outer, encrypted_entity(sign_and_encrypt(user, key, inner), mutt=True))
    if style == "encrypted-signed-mime":
        inner = signed_entity(user, text_part(body, flowed=False, apple=True), apple=True)
        return message(outer, encrypted_entity(encrypt_only(user, key, inner), apple=True))
    if style == "signed":
        inner = protected(user, to, subject, threading, text_part(body))
        return message(outer, signed_entity(user, inner))
    text = crlf(body.encode())
    if style == "inline":
        armored = sign_and_encrypt(user, key, text)
    elif style == "inline-signed":
        armored = sign_inline(user, text)
    else:
        armored = clearsign(user, text)
    cte = "7bit" if armored.isascii() else "8bit"
    return message(outer, text_part(armored.decode(), cte=cte, flowed=False))


# -- headers and MIME assembly ------------------------------------------------

def headers(user: User, *, to: str = LIST, subject: str = "Hello", **extra: str | None) -> list[str]:
    """A client's top-level header lines; `extra` maps further header names to values."""
    lines = [
        f"Message-ID: <{uuid.uuid4()}@{user.email.split('@')[1]}>",
        f"Date: {formatdate(localtime=False)}",
        "MIME-Version: 1.0",
        f"From: {user.name} <{user.email}>",
        f"To: {to}",
        f"Subject: {encode_header(subject)}",
    ]
    lines += [f"{name}: {value}" for name, value in extra.items() if value]
    return lines


def encode_header(text: str) -> str:
    return text if text.isascii() else Header(text, "utf-8").encode()


def outer_subject(lines: list[str], placeholder: str) -> list[str]:
    return [f"Subject: {placeholder}" if line.startswith("Subject:") else line for line in lines]


def message(header_lines: list[str], entity: bytes) -> bytes:
    """Top-level headers followed by an entity that begins with its own Content-* headers."""
    return crlf("\r\n".join(header_lines).encode() + b"\r\n") + entity


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def boundary(prefix: str = "------------") -> str:
    return prefix + uuid.uuid4().hex[:24]


def multipart(content_type: str, parts: list[bytes], *, preamble: str = "",
              separator: str | None = None, extra_headers: tuple[str, ...] = ()) -> bytes:
    """A multipart entity: `content_type` gets the boundary parameter appended."""
    sep = separator or boundary()
    head = [f'Content-Type: {content_type};\r\n boundary="{sep}"', *extra_headers]
    out = "\r\n".join(head).encode() + b"\r\n\r\n"
    if preamble:
        out += preamble.encode() + b"\r\n"
    for part in parts:
        out += f"--{sep}\r\n".encode() + part + b"\r\n"
    return out + f"--{sep}--\r\n".encode()


def text_part(body: str, *, disposition: str | None = None, cte: str | None = None,
              flowed: bool = True, apple: bool = False) -> bytes:
    """A text/plain entity, CRLF, ending in CRLF."""
    raw = crlf(body.encode())
    charset = "us-ascii" if raw.isascii() else "utf-8"
    cte = cte or ("7bit" if raw.isascii() else "quoted-printable")
    if cte == "quoted-printable":
        raw = crlf(quopri.encodestring(raw))
    elif cte == "base64":
        raw = crlf(base64.encodebytes(raw))
    content_type = f"Content-Type: text/plain; charset={charset}" + ("; format=flowed" if flowed else "")
    lines = [f"Content-Transfer-Encoding: {cte}", content_type] if apple \
        else [content_type, f"Content-Transfer-Encoding: {cte}"]
    if disposition:
        lines.append(f"Content-Disposition: {disposition}")
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + raw.rstrip(b"\r\n") + b"\r\n"


def protected(user: User, to: str, subject: str, threading: dict[str, str | None],
              *parts: bytes) -> bytes:
    """RFC 9788 header protection as Thunderbird writes it: the real headers inside."""
    inner = [f"Subject: {encode_header(subject)}", f"From: {user.name} <{user.email}>", f"To: {to}"]
    inner += [f"{name}: {value}" for name, value in threading.items() if value]
    return multipart('multipart/mixed; protected-headers="v1"', list(parts),
                     preamble="This is a multi-part message in MIME format.",
                     extra_headers=tuple(inner))


def encrypted_entity(armored: bytes, *, mutt: bool = False, apple: bool = False,
                     extra_parts: tuple[bytes, ...] = ()) -> bytes:
    """RFC 3156 §4 multipart/encrypted around an armored OpenPGP message."""
    if apple:
        control = (b"Content-Transfer-Encoding: 7bit\r\nContent-Type: application/pgp-encrypted\r\n"
                   b"Content-Description: PGP/MIME Versions Identification\r\n\r\nVersion: 1\r\n")
        data = (b"Content-Transfer-Encoding: 7bit\r\nContent-Disposition: inline;\r\n"
                b"\tfilename=encrypted.asc\r\nContent-Type: application/octet-stream;\r\n"
                b"\tname=encrypted.asc\r\nContent-Description: OpenPGP encrypted message\r\n\r\n")
        sep = boundary("Apple-Mail=_")
    elif mutt:
        control = (b"Content-Type: application/pgp-encrypted\r\nContent-Disposition: attachment\r\n"
                   b"\r\nVersion: 1\r\n")
        data = (b"Content-Type: application/octet-stream\r\n"
                b'Content-Disposition: inline; filename="msg.asc"\r\n\r\n')
        sep = uuid.uuid4().hex[:16]
    else:
        control = (b"Content-Type: application/pgp-encrypted\r\n"
                   b"Content-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n")
        data = (b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
                b"Content-Description: OpenPGP encrypted message\r\n"
                b'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n')
        sep = None
    preamble = "" if (mutt or apple) else "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)"
    return multipart('multipart/encrypted;\r\n protocol="application/pgp-encrypted"',
                     [control, data + crlf(armored).rstrip(b"\r\n"), *extra_parts],
                     preamble=preamble, separator=sep)


def signed_entity(user: User, signed: bytes, *, apple: bool = False,
                  signature: bytes | None = None) -> bytes:
    """RFC 3156 §5 multipart/signed: `signed` exactly as transmitted, and its detached signature."""
    sig = crlf(signature if signature is not None else sign_detached(user, signed))
    if apple:
        head = (b"Content-Transfer-Encoding: 7bit\r\nContent-Disposition: attachment;\r\n"
                b"\tfilename=signature.asc\r\nContent-Type: application/pgp-signature;\r\n"
                b"\tname=signature.asc\r\nContent-Description: Message signed with OpenPGP\r\n\r\n")
        sep = boundary("Apple-Mail=_")
    else:
        head = (b'Content-Type: application/pgp-signature; name="OpenPGP_signature.asc"\r\n'
                b"Content-Description: OpenPGP digital signature\r\n"
                b'Content-Disposition: attachment; filename="OpenPGP_signature.asc"\r\n\r\n')
        sep = None
    preamble = "" if apple else "This is an OpenPGP/MIME signed message (RFC 4880 and 3156)"
    return multipart('multipart/signed; micalg=pgp-sha256;\r\n protocol="application/pgp-signature"',
                     [signed, head + sig.rstrip(b"\r\n")],
                     preamble=preamble, separator=sep)


# -- the OpenPGP tools --------------------------------------------------------

def _tool(args: list[str], data: bytes) -> bytes:
    try:
        return run(args, input=data).stdout
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{args[0]} failed: {exc.stderr.decode(errors='replace')}") from None


def _gpg(user: User, *args: str, data: bytes) -> bytes:
    return _tool(["gpg", "--batch", "--no-tty", "--quiet", "--pinentry-mode", "loopback",
                  "--passphrase", "", "--homedir", str(user.home), "--trust-model", "always",
                  *args], data)


class _ListKeyFile:
    """The list's public key in a scratch file, as the tools want it."""

    def __init__(self, list_key: bytes, user: User | None = None):
        self._dir = tempfile.TemporaryDirectory(prefix="mail-factory-")
        self.path = Path(self._dir.name) / "list.asc"
        self.path.write_bytes(list_key)
        self.fingerprint = key_fingerprint(list_key)
        if user is not None and user.tool == "rnp":
            # rnp reads keys from one place: the member's secret key plus the list's key.
            secret = _tool(["rnpkeys", "--homedir", str(user.home), "--export-key", "--secret",
                            user.email], b"")
            self.path.write_bytes(secret + b"\n" + list_key)

    def __enter__(self) -> "_ListKeyFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self._dir.cleanup()


def key_fingerprint(key: bytes) -> str:
    return fingerprints(_tool(["gpg", "--show-keys", "--with-colons"], key))[0]


def sign_and_encrypt(user: User, list_key: bytes, data: bytes, *, to_self: bool = False,
                     also: tuple[bytes, ...] = ()) -> bytes:
    """One armored OpenPGP message, signed by `user` and encrypted to the list, by user.tool;
    `to_self` also encrypts it to the sender's own key, as Thunderbird always does, and `also`
    to more lists' keys after the first (a cross-post; gpg and sq only)."""
    if also and user.tool == "rnp":
        raise ValueError("rnp reads its recipients from one key file here: no cross-posts")
    with _ListKeyFile(list_key, user) as keys:
        more = []
        for n, key in enumerate(also):
            more.append(keys.path.with_name(f"also-{n}.asc"))
            more[-1].write_bytes(key)
        if user.tool == "gpg":
            own = ["--recipient", user.fingerprint] if to_self else []
            others = [arg for path in more for arg in ("--recipient-file", str(path))]
            return _gpg(user, "--armor", "--sign", "--encrypt", "--local-user", user.fingerprint,
                        "--recipient-file", str(keys.path), *others, *own, data=data)
        if user.tool == "sq":
            own_cert = keys.path.with_name("own.asc")
            own_cert.write_bytes(user.public_key)
            own = ["--recipient-cert", str(own_cert)] if to_self else []
            others = [arg for path in more for arg in ("--recipient-cert", str(path))]
            return _tool(["sq", "encrypt", "--signer-key", str(user.secret_file),
                          "--recipient-cert", str(keys.path), *others, *own], data)
        own = ["--recipient", user.fingerprint] if to_self else []
        return _tool(["rnp", "--keyfile", str(keys.path), "--sign", "--encrypt", "--armor",
                      "--recipient", keys.fingerprint, *own, "--userid", user.fingerprint,
                      "--password", ""], data)


def encrypt_only(user: User, list_key: bytes, data: bytes) -> bytes:
    """Encrypted to the list, not signed (the signature travels inside, as multipart/signed)."""
    with _ListKeyFile(list_key) as keys:
        if user.tool == "gpg":
            return _gpg(user, "--armor", "--encrypt", "--recipient-file", str(keys.path), data=data)
        if user.tool == "sq":
            return _tool(["sq", "encrypt", "--recipient-cert", str(keys.path)], data)
        return _tool(["rnp", "--keyfile", str(keys.path), "--encrypt", "--armor",
                      "--recipient", keys.fingerprint], data)


def sign_detached(user: User, data: bytes) -> bytes:
    """An armored detached signature over `data`, byte for byte."""
    if user.tool == "gpg":
        return _gpg(user, "--armor", "--detach-sign", "--local-user", user.fingerprint, data=data)
    if user.tool == "sq":
        return _tool(["sq", "sign", "--detached", "--signer-key", str(user.secret_file)], data)
    return _tool(["rnp", "--homedir", str(user.home), "--sign", "--detach", "--armor",
                  "--userid", user.fingerprint, "--password", ""], data)


def sign_inline(user: User, data: bytes) -> bytes:
    """An armored signed (not encrypted) OpenPGP message."""
    if user.tool == "gpg":
        return _gpg(user, "--armor", "--sign", "--local-user", user.fingerprint, data=data)
    if user.tool == "sq":
        return _tool(["sq", "sign", "--signer-key", str(user.secret_file)], data)
    return _tool(["rnp", "--homedir", str(user.home), "--sign", "--armor",
                  "--userid", user.fingerprint, "--password", ""], data)


def clearsign(user: User, text: bytes) -> bytes:
    if user.tool == "gpg":
        return _gpg(user, "--clearsign", "--local-user", user.fingerprint, data=text)
    if user.tool == "sq":
        return _tool(["sq", "sign", "--cleartext-signature", "--signer-key", str(user.secret_file)], text)
    return _tool(["rnp", "--homedir", str(user.home), "--clearsign",
                  "--userid", user.fingerprint, "--password", ""], text)
