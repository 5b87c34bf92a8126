"""Encrypt once, split per member (DESIGN.md "Fan-out encrypts once", FANOUT-NOTES.md).

One gpg call signs the post with the list key and encrypts it to a whole batch of members.
Its output is N PKESK packets (one per member, each naming that member's encryption subkey)
followed by one SEIPD packet that every member of the batch shares. A member's copy is their
own PKESK followed by the shared packet, so it names no other member.

Hidden recipients (wildcard key ids, `--throw-keyids`) were measured and rejected, so each
PKESK keeps its recipient's real key id. The run (GnuPG 2.2.40, sq 0.27, RNP 0.16.3; a post
signed by the list key and encrypted with and without --throw-keyids to an ed25519/cv25519
gpg key, an RSA-3072 gpg key, an sq key and an RSA-2048 rnp key, then split per member):

    gpg --decrypt  (member's own home)          real id: exit 0   wildcard: exit 0
    gpg --decrypt  (home with another secret key tried first)
                                                real id: exit 0   wildcard: exit 2, output written
                                                ("ecdh failed ... Checksum error" for the wrong key)
    sq decrypt --recipient-key KEY --signer-cert LIST
                                                real id: exit 0   wildcard: exit 0
    rnp --decrypt (RSA-2048 key, and cv25519)   real id: exit 0   wildcard: exit 1
                                                ("failed to obtain decrypting key or password")

RNP is Thunderbird's OpenPGP library, so a wildcard would lock out Thunderbird users, and
gpg's exit status 2 makes MUAs built on it report a failure. Real key ids leak nothing to
the other members: a copy only ever names its own recipient.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

from .. import openpgp
from ..errors import CryptoError, NotFound
from ..keyring import Keyring, check_fingerprint

# Options on top of the keyring's GPG_OPTIONS (no network, --trust-model always). Each one
# overrides something an operator's gpg.conf in the keyring home could switch on.
_ENCRYPT_OPTIONS = [
    "--cipher-algo", "AES256",  # one 3DES-only key would otherwise downgrade the whole batch
    "--no-throw-keyids",  # see the module docstring: RNP cannot read hidden recipients
    "--no-encrypt-to",  # no extra PKESK for a default recipient
    "--no-include-key-block",
]


@dataclass(frozen=True)
class Pkesk:
    batch: int  # which of Fanout.shared this key unlocks
    packet: bytes  # the member's PKESK packet, exact bytes


@dataclass(frozen=True)
class Fanout:
    """Everything needed to build each member's copy, and no copy built yet.

    Each gpg call (batch) makes its own session key, so there is one shared packet per
    batch: up to `batch_size` members, one for most lists. gpg 2.2 cannot encrypt a
    given session key, so batches cannot share one.
    """

    shared: tuple[bytes, ...]  # one SEIPD (tag 18) packet per gpg batch, exact bytes
    pkesks: Mapping[str, Pkesk]  # member's primary fingerprint -> their PKESK
    unusable: tuple[str, ...]  # fingerprints given with no usable encryption key (no copy)

    @cached_property
    def _armor(self) -> tuple[openpgp.SharedArmor, ...]:
        return tuple(openpgp.SharedArmor(packet) for packet in self.shared)


def encrypt_for(
    keyring: Keyring, signer: str, recipients: Sequence[str], plaintext: bytes, batch_size: int = 1000,
) -> Fanout:
    """Sign `plaintext` with the list key `signer` and encrypt it once per batch of members."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    signer = check_fingerprint(signer)
    wanted = list(dict.fromkeys(check_fingerprint(fingerprint) for fingerprint in recipients))
    batches = [wanted[start:start + batch_size] for start in range(0, len(wanted), batch_size)]
    workers = min(len(batches), os.cpu_count() or 1) or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda batch: _encrypt_batch(keyring, signer, batch, plaintext), batches))
    shared: list[bytes] = []
    pkesks: dict[str, Pkesk] = {}
    for packet, by_member in results:
        if packet is not None:
            pkesks.update((fingerprint, Pkesk(len(shared), pkesk)) for fingerprint, pkesk in by_member.items())
            shared.append(packet)
    unusable = tuple(fingerprint for fingerprint in wanted if fingerprint not in pkesks)
    return Fanout(tuple(shared), pkesks, unusable)


def armored_copy(fanout: Fanout, fingerprint: str) -> bytes:
    """One member's copy: their PKESK and the shared packet, ASCII-armored (RFC 3156 part 2)."""
    pkesk = fanout.pkesks.get(check_fingerprint(fingerprint))
    if pkesk is None:
        raise NotFound(f"The fan-out holds no copy for {fingerprint}.")
    return fanout._armor[pkesk.batch].armor(pkesk.packet)


def _encrypt_batch(
    keyring: Keyring, signer: str, wanted: list[str], plaintext: bytes,
) -> tuple[bytes | None, dict[str, bytes]]:
    """Sign and encrypt to the usable keys among `wanted`: (shared packet, PKESK per member)."""
    # gpg 2.2 fails a whole batch for one unusable recipient, so they are left out beforehand.
    key_ids = keyring.encryption_keys(wanted)
    batch = [fingerprint for fingerprint in wanted if fingerprint in key_ids]
    if not batch:
        return None, {}
    owner: dict[str, str] = {}
    for fingerprint in batch:
        for keyid in key_ids[fingerprint]:
            if owner.setdefault(keyid, fingerprint) != fingerprint:
                # A subkey bound to two primary keys: gpg would write one PKESK for both.
                raise CryptoError(
                    f"The keys {owner[keyid]} and {fingerprint} share the encryption key {keyid}."
                )
    data, status = keyring.sign_and_encrypt(plaintext, batch, signer, _ENCRYPT_OPTIONS)
    signatures = [line.split()[-1] for line in status if line.startswith("[GNUPG:] SIG_CREATED ")]
    if signatures != [signer]:  # one signature, by the list key (a gpg.conf could add more)
        raise CryptoError(f"GnuPG made {len(signatures)} signature(s), not one by the list key.")
    return _split(data, batch, owner)


def _split(data: bytes, batch: list[str], owner: dict[str, str]) -> tuple[bytes, dict[str, bytes]]:
    """Map gpg's PKESKs to members by key id and check each member got exactly one."""
    packets = openpgp.parse(data)
    *keys, shared = packets
    if shared.tag != openpgp.SEIPD or any(packet.tag != openpgp.PKESK for packet in keys):
        raise CryptoError("GnuPG's output is not a list of PKESKs followed by one SEIPD packet.")
    by_member: dict[str, bytes] = {}
    for packet in keys:
        fingerprint = owner.get(openpgp.pkesk_key_id(packet))
        if fingerprint is None or fingerprint in by_member:
            raise CryptoError("GnuPG encrypted to a key that is not one member's encryption key.")
        by_member[fingerprint] = packet.raw
    if len(by_member) != len(batch):
        raise CryptoError(f"GnuPG encrypted to {len(by_member)} of {len(batch)} members.")
    return shared.raw, by_member
