"""Members' PKESK packets built from one session key (RFC 9580 §5.1, RFC 6637 §8).

gpg signs the post and encrypts it once, to the list's own key; the session key it chose is
read back (`Keyring.session_key`) and this module encrypts that session key to each member's
encryption subkey, writing a version 3 PKESK packet exactly as gpg would: the subkey's real
key id, RSA PKCS #1 v1.5 or ECDH on Curve25519 with the KDF parameters bound in the key.

No symmetric encryption of the message happens here (gpg writes the SEIPD packet), and this
module decides nothing about whether a key may be used: which subkey to encrypt to, and
whether it is expired or revoked, comes from gpg's own listing. Here only the public key
material of the subkey gpg chose is read from the exported certificate, found by its
fingerprint, so what is encrypted to is exactly the key gpg named.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import padding, rsa, x25519
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from . import openpgp
from .errors import CryptoError

AES256 = 9
RSA_ALGORITHMS = (1, 2)  # RSA (encrypt or sign), RSA encrypt-only
ECDH = 18
CV25519_OID = bytes.fromhex("2B060104019755010501")  # 1.3.6.1.4.1.3029.1.5.1
_KDF_HASHES = {8: hashlib.sha256, 9: hashlib.sha384, 10: hashlib.sha512}
_KEK_BYTES = {7: 16, 8: 24, 9: 32}  # AES-128, -192, -256 key wrap
_PUBLIC_KEY_TAGS = (6, 14)  # public key, public subkey


@dataclass(frozen=True)
class RecipientKey:
    """One encryption (sub)key's public material, as needed to build a PKESK for it."""

    fingerprint: str  # v4 fingerprint of this (sub)key, 40 upper-case hex digits
    algorithm: int  # 1 or 2 (RSA), 18 (ECDH)
    public: object  # rsa.RSAPublicKey or x25519.X25519PublicKey
    kdf_param: bytes = b""  # ECDH: RFC 6637 §8 "Param", fixed per key
    kdf_hash: int = 0
    kek: int = 0

    @property
    def key_id(self) -> bytes:
        return bytes.fromhex(self.fingerprint)[-8:]


def _mpi(body: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(body):
        raise ValueError("truncated MPI")
    bits = int.from_bytes(body[pos:pos + 2], "big")
    end = pos + 2 + (bits + 7) // 8
    if end > len(body):
        raise ValueError("truncated MPI")
    return body[pos + 2:end], end


def _encode_mpi(value: bytes) -> bytes:
    value = value.lstrip(b"\0")
    bits = (len(value) - 1) * 8 + value[0].bit_length() if value else 0
    return bits.to_bytes(2, "big") + value


def v4_fingerprint(body: bytes) -> str:
    """The v4 fingerprint of a public (sub)key packet body (RFC 9580 §5.5.4.2)."""
    return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()


def read_key(body: bytes) -> RecipientKey | None:
    """The material of one v4 public (sub)key packet body, or None when it is not an RSA or
    ECDH-Curve25519 key this module can encrypt to (v5/v6 keys, ElGamal, NIST or Brainpool
    curves, unknown KDF parameters): such members take gpg's own path."""
    try:
        if len(body) < 7 or body[0] != 4:
            return None
        fingerprint, algorithm = v4_fingerprint(body), body[5]
        if algorithm in RSA_ALGORITHMS:
            n, pos = _mpi(body, 6)
            e, _ = _mpi(body, pos)
            public = rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big")).public_key()
            if public.key_size < 2048:
                return None
            return RecipientKey(fingerprint, algorithm, public)
        if algorithm == ECDH:
            size = body[6]
            oid = body[7:7 + size]
            point, pos = _mpi(body, 7 + size)
            if oid != CV25519_OID or len(point) != 33 or point[0] != 0x40:
                return None
            kdf = body[pos + 1:pos + 1 + body[pos]]  # 01, KDF hash id, KEK algorithm id
            if len(kdf) != 3 or kdf[0] != 1 or kdf[1] not in _KDF_HASHES or kdf[2] not in _KEK_BYTES:
                return None
            param = (bytes([size]) + oid + bytes([ECDH, 3]) + kdf + b"Anonymous Sender    "
                     + bytes.fromhex(fingerprint))
            return RecipientKey(fingerprint, ECDH, x25519.X25519PublicKey.from_public_bytes(point[1:]),
                                param, kdf[1], kdf[2])
    except (ValueError, IndexError, TypeError):  # malformed material: let gpg judge the key
        return None
    return None


def read_keys(certificates: bytes) -> dict[str, RecipientKey | None]:
    """Every v4 public key and subkey in a binary keyring export, by its own fingerprint
    (None for a key this module cannot encrypt to)."""
    found: dict[str, RecipientKey | None] = {}
    for packet in openpgp.parse(certificates):
        if packet.tag in _PUBLIC_KEY_TAGS and packet.body[:1] == b"\x04":
            body = packet.body
            found[v4_fingerprint(body)] = read_key(body)
    return found


def _old_packet(tag: int, body: bytes) -> bytes:
    """An old-format packet header, as gpg writes PKESKs."""
    if len(body) < 256:
        return bytes([0x80 | tag << 2, len(body)]) + body
    return bytes([0x80 | tag << 2 | 1]) + len(body).to_bytes(2, "big") + body


def build(key: RecipientKey, session_key: bytes, algorithm: int = AES256) -> bytes:
    """A version 3 PKESK packet, exact bytes, holding `session_key` for `key`."""
    if algorithm != AES256 or len(session_key) != 32:
        raise CryptoError("Only an AES-256 session key is encrypted to members.")
    checksum = (sum(session_key) & 0xFFFF).to_bytes(2, "big")
    message = bytes([algorithm]) + session_key + checksum
    head = b"\x03" + key.key_id + bytes([key.algorithm])
    if key.algorithm in RSA_ALGORITHMS:
        encrypted = key.public.encrypt(message, padding.PKCS1v15())
        return _old_packet(openpgp.PKESK, head + _encode_mpi(encrypted))
    # RFC 6637 §8: ephemeral key, shared point, KDF over (counter, ZZ, Param), AES key wrap of
    # the PKCS #5-padded message. For Curve25519 ZZ is the 32-octet X25519 output.
    ephemeral = x25519.X25519PrivateKey.generate()
    try:
        shared = ephemeral.exchange(key.public)
    except ValueError:  # a low-order point: no usable shared secret
        raise CryptoError(f"The key {key.fingerprint} is not a usable Curve25519 key.") from None
    kek = _KDF_HASHES[key.kdf_hash](b"\0\0\0\1" + shared + key.kdf_param).digest()[:_KEK_BYTES[key.kek]]
    pad = 8 - len(message) % 8
    wrapped = aes_key_wrap(kek, message + bytes([pad]) * pad)
    point = b"\x40" + ephemeral.public_key().public_bytes_raw()
    return _old_packet(openpgp.PKESK, head + _encode_mpi(point) + bytes([len(wrapped)]) + wrapped)


class KeyCache:
    """Parsed recipient keys, kept while the keyring file is unchanged.

    Entries are found by the subkey fingerprint gpg's listing names, and every entry was
    parsed from a packet whose body hashes to that fingerprint, so an entry can never stand
    for another key; the whole cache is dropped when the keyring's mtime changes, which keeps
    it from growing with keys long removed.
    """

    def __init__(self) -> None:
        self._stamp: object = None
        self._keys: dict[str, RecipientKey | None] = {}

    def lookup(self, stamp: object, wanted: Iterable[str], export) -> dict[str, RecipientKey | None]:
        """The keys for `wanted` (primary fingerprint -> encryption subkey fingerprint).
        `export(primaries)` returns the binary certificates of those not cached yet."""
        if stamp != self._stamp:
            self._keys, self._stamp = {}, stamp
        wanted = dict(wanted)
        missing = [primary for primary, subkey in wanted.items() if subkey not in self._keys]
        if missing:
            data = export(missing)
            read = read_keys(data) if data else {}
            for primary in missing:
                self._keys[wanted[primary]] = read.get(wanted[primary])
        return {primary: self._keys[subkey] for primary, subkey in wanted.items()}
