"""The prototype fan-out of bench/fanout.py: listserv's own PKESKs (listserv.pkesk) around a
SEIPD packet written in Python.

Two uses in bench/fanout.py:

  * the raw public-key floor: per member, exactly the public-key work a copy needs --
    Curve25519: an ephemeral X25519 key, ECDH, the RFC 6637 KDF (SHA-256) and AES key wrap;
    RSA-3072: one PKCS #1 v1.5 encryption of the 32-byte session key -- written as real
    PKESK packets by listserv.pkesk.build, so the floor is not a toy;
  * a prototype of the way the issue calls "building the PKESK packets directly from the
    session key": gpg signs the post once (with the list key), this module encrypts the
    signed message once (SEIPD v1: AES-256 CFB with an MDC) and listserv.pkesk builds every
    member's PKESK. One shared packet however many members; no keyring lookups at all.
    fanout.py checks that such copies decrypt and verify with gpg, sq and rnp.

listserv itself has gpg write the SEIPD packet; only `seipd` here is the benchmark's own. Key
flags, expiry and revocation are not checked (the benchmark's keys are fresh): listserv takes
those from gpg's listing.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

try:  # cryptography >= 47 keeps CFB among the "decrepit" modes; OpenPGP's SEIPD v1 needs it
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # older cryptography
    CFB = modes.CFB

from listserv import openpgp
from listserv.pkesk import RecipientKey, read_key, v4_fingerprint


def encryption_keys(keyring: bytes) -> dict[str, RecipientKey]:
    """The (last) RSA or ECDH/Curve25519 subkey of every v4 certificate in a binary keyring,
    by the certificate's primary fingerprint."""
    found: dict[str, RecipientKey] = {}
    primary = None
    for packet in openpgp.parse(keyring):
        if packet.tag == 6:
            primary = v4_fingerprint(packet.body)
        elif packet.tag == 14 and primary is not None:
            key = read_key(packet.body)
            if key is not None:
                found[primary] = key
    return found


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
