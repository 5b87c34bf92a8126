"""PKESK packets built directly from one session key, with `cryptography` (bench only).

Two uses in bench/fanout.py:

  * the raw public-key floor: per member, exactly the public-key work a copy needs --
    Curve25519: an ephemeral X25519 key, ECDH, the RFC 6637 KDF (SHA-256) and AES key wrap;
    RSA-3072: one PKCS #1 v1.5 encryption of the 32-byte session key -- written as real
    PKESK packets, so the floor is not a toy;
  * a prototype of the way the issue calls "building the PKESK packets directly from the
    session key": gpg signs the post once (with the list key, as today), this module
    encrypts the signed message once (SEIPD v1: AES-256 CFB with an MDC) and builds every
    member's PKESK. One shared packet however many members; no keyring lookups at all.
    fanout.py checks that such copies decrypt and verify with gpg, sq and rnp.

Nothing here is used by listserv itself. Key flags, expiry and revocation are not checked
(the benchmark's keys are fresh): a real implementation would take those from gpg's listing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

try:  # cryptography >= 47 keeps CFB among the "decrepit" modes; OpenPGP's SEIPD v1 needs it
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # older cryptography
    CFB = modes.CFB

from listserv import openpgp

AES256 = 9
_CV25519_OID = bytes.fromhex("2B060104019755010501")  # 1.3.6.1.4.1.3029.1.5.1
_HASHES = {8: hashlib.sha256, 9: hashlib.sha384, 10: hashlib.sha512}
_KEK_BYTES = {7: 16, 8: 24, 9: 32}


@dataclass(frozen=True)
class EncryptionKey:
    primary: str  # primary-key fingerprint (upper-case hex): the member's identity
    key_id: bytes  # 8 octets, of the encryption subkey
    fingerprint: bytes  # 20 octets, of the encryption subkey (the ECDH KDF needs it)
    algorithm: int  # 1 RSA, 18 ECDH
    public: object  # rsa.RSAPublicKey or x25519.X25519PublicKey
    kdf_param: bytes = b""  # ECDH: the RFC 6637 KDF parameter block, all but fixed per key
    kdf_hash: int = 8
    kek: int = 7


def _mpi(data: bytes, pos: int) -> tuple[bytes, int]:
    bits = int.from_bytes(data[pos:pos + 2], "big")
    size = (bits + 7) // 8
    return data[pos + 2:pos + 2 + size], pos + 2 + size


def _encode_mpi(value: bytes) -> bytes:
    value = value.lstrip(b"\0")
    bits = (len(value) - 1) * 8 + value[0].bit_length() if value else 0
    return bits.to_bytes(2, "big") + value


def _v4_fingerprint(body: bytes) -> bytes:
    return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).digest()


def encryption_keys(keyring: bytes) -> dict[str, EncryptionKey]:
    """The (last) RSA or ECDH/Curve25519 subkey of every v4 certificate in a binary keyring."""
    found: dict[str, EncryptionKey] = {}
    primary = None
    for packet in openpgp.parse(keyring):
        body = packet.body
        if packet.tag == 6:
            primary = _v4_fingerprint(body).hex().upper()
        if packet.tag != 14 or primary is None or body[0] != 4:
            continue
        algorithm, fingerprint = body[5], _v4_fingerprint(body)
        if algorithm in (1, 2):
            n, pos = _mpi(body, 6)
            e, _ = _mpi(body, pos)
            public = rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big")).public_key()
            found[primary] = EncryptionKey(primary, fingerprint[-8:], fingerprint, 1, public)
        elif algorithm == 18:
            oid = body[7:7 + body[6]]
            point, pos = _mpi(body, 7 + len(oid))
            kdf = body[pos + 1:pos + 1 + body[pos]]  # 01, hash id, KEK algorithm id
            if oid != _CV25519_OID or point[0] != 0x40 or len(kdf) != 3:
                continue
            param = (bytes([len(oid)]) + oid + bytes([18, 3]) + kdf + b"Anonymous Sender    "
                     + fingerprint)
            found[primary] = EncryptionKey(primary, fingerprint[-8:], fingerprint, 18,
                                           x25519.X25519PublicKey.from_public_bytes(point[1:]),
                                           param, kdf[1], kdf[2])
    return found


def _old_packet(tag: int, body: bytes) -> bytes:
    if len(body) < 256:
        return bytes([0x80 | tag << 2, len(body)]) + body
    return bytes([0x80 | tag << 2 | 1]) + len(body).to_bytes(2, "big") + body


def pkesk(key: EncryptionKey, session_key: bytes, algorithm: int = AES256) -> bytes:
    """A version 3 PKESK packet for `key` holding `session_key` (RFC 4880 §5.1, RFC 6637 §8)."""
    checksum = (sum(session_key) & 0xFFFF).to_bytes(2, "big")
    message = bytes([algorithm]) + session_key + checksum
    if key.algorithm == 1:
        encrypted = key.public.encrypt(message, padding.PKCS1v15())
        return _old_packet(1, b"\x03" + key.key_id + b"\x01" + _encode_mpi(encrypted))
    ephemeral = x25519.X25519PrivateKey.generate()
    shared = ephemeral.exchange(key.public)
    kek = _HASHES[key.kdf_hash](b"\0\0\0\1" + shared + key.kdf_param).digest()[:_KEK_BYTES[key.kek]]
    pad = 8 - len(message) % 8
    wrapped = aes_key_wrap(kek, message + bytes([pad]) * pad)
    point = b"\x40" + ephemeral.public_key().public_bytes_raw()
    return _old_packet(1, b"\x03" + key.key_id + b"\x12" + _encode_mpi(point)
                       + bytes([len(wrapped)]) + wrapped)


def seipd(session_key: bytes, signed: bytes) -> bytes:
    """One SEIPD v1 packet (AES-256 CFB, MDC) around `signed`, gpg's signed-message packets."""
    prefix = os.urandom(16)
    prefix += prefix[-2:]
    mdc_header = b"\xd3\x14"
    mdc = hashlib.sha1(prefix)
    mdc.update(signed)
    mdc.update(mdc_header)
    encryptor = Cipher(algorithms.AES(session_key), CFB(b"\0" * 16)).encryptor()
    parts = [encryptor.update(part) for part in (prefix, signed, mdc_header + mdc.digest())]
    body = b"".join([b"\x01", *parts, encryptor.finalize()])
    return b"\xd2\xff" + len(body).to_bytes(4, "big") + body
