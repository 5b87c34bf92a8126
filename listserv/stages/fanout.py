"""Encrypt once, split per member (DESIGN.md "Fan-out encrypts once", FANOUT-NOTES.md).

One gpg call signs the post with the list key and encrypts it to the list's own key only.
Its output is one PKESK (the list's, dropped here) and one SEIPD packet that every member
shares. A second gpg call, on that output alone, reports the session key (in memory; the
plaintext it decrypts is compared with the post and never written). Each member's PKESK is
then built from the session key by listserv.pkesk, for the encryption subkey gpg's own
listing says gpg would use. A member's copy is their own PKESK followed by the shared
packet, so it names no other member, nor the list's key. Per member this costs one
public-key operation (~0.1 ms), whatever the size of the keyring.

Keys listserv.pkesk does not encrypt to (NIST or Brainpool curves, ElGamal, anything it
cannot parse) go the older way: one gpg call signs and encrypts to a batch of them, and its
PKESKs are split per member by key id; that batch has its own shared packet.

Hidden recipients (wildcard key ids, `--throw-keyids`) were measured and rejected, so each
PKESK keeps its recipient's real key id: RNP (Thunderbird) cannot read a wildcard, and gpg
exits 2 on one (docs/delivery.md, "Why each copy names its recipient's key"). Real key ids
leak nothing to the other members: a copy only ever names its own recipient.

`fan_out` is the stage: a composed message and its recipients in, a `Fanned` delivery job's
content out (the spool writes it). `encrypt_for` is its crypto, also measured by bench/.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

from .. import openpgp, pkesk, verp
from ..errors import CryptoError, NotFound
from ..keyring import Keyring, check_fingerprint
from ..model import MailingList, Member, Recipient
from .compose import Composed

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

    Normally one shared packet for the whole list: gpg encrypts the post once, to the list's
    own key, and each member's PKESK is built from that session key (listserv.pkesk). A
    member whose key listserv cannot encrypt to itself (a NIST or Brainpool curve, ElGamal)
    is encrypted to by gpg in a batch of its own, which adds one shared packet per batch.
    """

    shared: tuple[bytes, ...]  # SEIPD (tag 18) packets, exact bytes; Pkesk.batch indexes them
    pkesks: Mapping[str, Pkesk]  # member's primary fingerprint -> their PKESK
    unusable: tuple[str, ...]  # fingerprints given with no usable encryption key (no copy)

    @cached_property
    def _armor(self) -> tuple[openpgp.SharedArmor, ...]:
        return tuple(openpgp.SharedArmor(packet) for packet in self.shared)


@dataclass(frozen=True)
class Fanned:
    """A delivery job's content, ready for the spool (listserv.spool.Outgoing.write): the shared
    packets, the frame of every copy, and one record for each member who gets a copy."""

    shared: tuple[bytes, ...]
    prefix: bytes  # the outer message before a copy's armored ciphertext
    suffix: bytes
    return_path: str  # envelope sender, {token} to fill in per member
    records: tuple[Recipient, ...]  # empty: nobody gets a copy (then no job is written)
    unusable: tuple[str, ...]  # fingerprints of recipients with no usable encryption key

    @property
    def copies(self) -> int:
        return len(self.records)


def fan_out(composed: Composed, recipients: Sequence[Member], mailing_list: MailingList,
            keyring: Keyring, verp_key: bytes, keys_from: Keyring | None = None) -> Fanned:
    """Encrypt `composed` once for every recipient: a record each with their VERP token and PKESK.
    `keys_from`: the keyring the recipients' keys are in, when not the list's (a resend's
    contacts, listserv.contacts); only keys listserv.pkesk encrypts to are used from it."""
    fan = encrypt_for(keyring, mailing_list.fingerprint, [m.fingerprint for m in recipients],
                      composed.inner, keys_from=keys_from) if recipients else Fanout((), {}, ())
    records = tuple(
        Recipient(m.email, verp.token(verp_key, mailing_list.address, m.email),
                  fan.pkesks[m.fingerprint].packet, fan.pkesks[m.fingerprint].batch, m.fingerprint)
        for m in recipients if m.fingerprint in fan.pkesks
    )
    return_path = f"{mailing_list.local}-bounces+{{token}}@{mailing_list.domain}"
    return Fanned(fan.shared, composed.outer_prefix, composed.outer_suffix, return_path, records, fan.unusable)


def encrypt_for(
    keyring: Keyring, signer: str, recipients: Sequence[str], plaintext: bytes, batch_size: int | None = None,
    keys_from: Keyring | None = None,
) -> Fanout:
    """Sign `plaintext` with the list key `signer` and encrypt it once for all `recipients`.

    `batch_size`, when given, caps how many members share one session key (one shared packet
    per group of that many); by default every member shares one.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    signer = check_fingerprint(signer)
    wanted = list(dict.fromkeys(check_fingerprint(fingerprint) for fingerprint in recipients))
    size = batch_size or max(len(wanted), 1)
    groups = [wanted[start:start + size] for start in range(0, len(wanted), size)]
    workers = min(len(groups), os.cpu_count() or 1) or 1
    if workers == 1:
        results = [_encrypt_group(keyring, signer, group, plaintext, keys_from) for group in groups]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda group: _encrypt_group(keyring, signer, group, plaintext, keys_from), groups))
    shared: list[bytes] = []
    pkesks: dict[str, Pkesk] = {}
    for parts in results:
        for packet, by_member in parts:
            if packet is not None and by_member:
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


_GPG_BATCH = 1000  # recipients per gpg call on gpg's own path (argv length, FANOUT-NOTES.md 5)


def _encrypt_group(
    keyring: Keyring, signer: str, wanted: list[str], plaintext: bytes, keys_from: Keyring | None = None,
) -> list[tuple[bytes | None, dict[str, bytes]]]:
    """One shared packet for the members whose PKESK is built here, and gpg batches for the rest
    (none from `keys_from`: gpg's own path needs the keys in the list's keyring)."""
    # gpg signs and encrypts the post to the list's key while the members' keys are listed.
    with ThreadPoolExecutor(max_workers=1) as pool:
        own = pool.submit(_own_copy, keyring, signer, plaintext)
        keys = (keys_from or keyring).recipient_keys(wanted)  # on an error here, the pool still waits for gpg
        direct = {fingerprint: key for fingerprint, key in keys.items() if key is not None}
        others = [fingerprint for fingerprint, key in keys.items() if key is None and keys_from is None]
        results = []
        if direct:
            shared, session_key = own.result()
            results.append((shared, {fingerprint: pkesk.build(key, session_key) for fingerprint, key in direct.items()}))
        else:
            own.exception()  # not needed (no member on this path): its outcome does not count
    for start in range(0, len(others), _GPG_BATCH):
        results.append(_encrypt_batch(keyring, signer, others[start:start + _GPG_BATCH], plaintext))
    return results


def _sign_and_encrypt(keyring: Keyring, signer: str, recipients: list[str], plaintext: bytes) -> bytes:
    data, signatures = keyring.sign_and_encrypt(plaintext, recipients, signer, _ENCRYPT_OPTIONS)
    if signatures != [signer]:  # one signature, by the list key (a gpg.conf could add more)
        raise CryptoError(f"GnuPG made {len(signatures)} signature(s), not one by the list key.")
    return data


def _own_copy(keyring: Keyring, signer: str, plaintext: bytes) -> tuple[bytes, bytes]:
    """gpg signs and encrypts once, to the list's own key: (the SEIPD packet, its AES-256
    session key). Members' PKESKs are built from that key; the list's own PKESK is dropped,
    so no copy carries it."""
    data = _sign_and_encrypt(keyring, signer, [signer], plaintext)
    packets = openpgp.parse(data)
    if [packet.tag for packet in packets] != [openpgp.PKESK, openpgp.SEIPD]:
        raise CryptoError("GnuPG's output is not one PKESK followed by one SEIPD packet.")
    shared = packets[1]
    if shared.raw[shared.spans[0][0]:shared.spans[0][0] + 1] != b"\x01":
        raise CryptoError("GnuPG wrote a SEIPD packet that is not version 1.")
    algorithm, session_key = keyring.session_key(data, plaintext)
    if algorithm != pkesk.AES256 or len(session_key) != 32:
        raise CryptoError(f"GnuPG chose cipher {algorithm}, not AES-256.")
    return shared.raw, session_key


def _encrypt_batch(
    keyring: Keyring, signer: str, wanted: list[str], plaintext: bytes,
) -> tuple[bytes | None, dict[str, bytes]]:
    """gpg's own path, for keys listserv.pkesk cannot encrypt to: sign and encrypt to the
    usable keys among `wanted` in one call: (shared packet, PKESK per member)."""
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
    data = _sign_and_encrypt(keyring, signer, batch, plaintext)
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
