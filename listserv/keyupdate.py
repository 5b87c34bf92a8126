"""Key updates: a member's own pinned key sent again with newer self-signatures -- a later
expiry, a new subkey, a new user id -- taken in place of the copy the keyring holds.

The fingerprint is the identity. An update never pins another key (a new key needs proof of
possession and the admins' word: listserv.rotation); only the copy offered of the very key
pinned is read, with self-signatures only (a flood of third-party signatures is dropped by
gpg's import filter, after the size cap), and an update that would leave the key unusable is
not taken: the list keeps the copy it had. A revocation that comes this way is no update: it
is taken in before anything else, by listserv.revocation, and the member is suspended.

Two ways in, one rule:

    x-key-update          Renewals.renew, a request's line: the reply says what happened
    a post or request     refresh: the same, quietly, when a member's valid submission carries
                          their key (attached, or in an Autocrypt header inside the encryption)

Nothing reaches the keyring before the store transaction that records it commits its
changes (`Renewals.adopt` runs inside it, last), so a request that fails leaves no key behind.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from .errors import KeyProblem, ListservError
from .keyring import KeyInfo, Keyring, StagedKeys
from .model import Member, Roster, fingerprint_format
from .revocation import Revocation, take_in_offered
from .stages.open import Opened
from .stages.renew import offered_keys
from .store import Store, Transaction

log = logging.getLogger("listserv.keys")


class Renewals:
    """The key data one submission offers, staged on demand beside the pinned copy of a key."""

    def __init__(self, keyring: Keyring, offered: tuple[bytes, ...]):
        self.keyring, self.offered = keyring, offered
        self._staged: list[StagedKeys] = []
        self._adopt: list[tuple[StagedKeys, str]] = []

    def renew(self, tx: Transaction, member: Member) -> str:
        """Take in the offered update of `member`'s pinned key, for every membership pinned to
        it: the reply's sentence, or KeyProblem saying why nothing changed."""
        fingerprint = member.fingerprint
        if not self.offered:
            raise KeyProblem("Attach your updated public key (an .asc file) to the request.")
        for data in self.offered:
            staged = self.keyring.stage(data, known=(fingerprint,))
            self._staged.append(staged)
            mine = [key for key in staged.keys if key.fingerprint == fingerprint]
            if mine:
                return self._take(tx, staged, mine[0])
        raise KeyProblem(f"The attached key is not your pinned key {fingerprint_format(fingerprint)}; an update "
                         "renews the key you have. To move to a new key, send x-key-change.")

    def _take(self, tx: Transaction, staged: StagedKeys, key: KeyInfo) -> str:
        shown = fingerprint_format(key.fingerprint)
        if key.fingerprint not in staged.changed:
            return f"Your key {shown} is unchanged: the attached copy holds nothing newer than the list's."
        problem = key.problem()
        if problem:
            raise KeyProblem(f"The updated key cannot be used ({problem}); the list keeps the copy it has.")
        for pinned in tx.members_pinned_to({key.fingerprint}):
            tx.update_member(replace(pinned, key_expires=key.expires))
        self._adopt.append((staged, key.fingerprint))
        return f"Your key {shown} is updated: usable until {key.expires or 'it is revoked (no expiry)'}."

    @property
    def pending(self) -> bool:
        """Whether an update waits to be adopted."""
        return bool(self._adopt)

    def adopt(self) -> None:
        """Into the keyring: call inside the transaction, after every change is made."""
        for staged, fingerprint in self._adopt:
            staged.adopt([fingerprint])
        self._adopt.clear()

    def close(self) -> None:
        for staged in self._staged:
            staged.close()
        self._staged.clear()


def take_offered(store: Store, keyring: Keyring, roster: Roster, opened: Opened) -> tuple[Revocation, ...]:
    """A member's valid post carried key data (listserv.stages.renew.offered_keys): a revocation
    of their key is taken in (they are suspended), else the key is renewed if the data holds a
    newer copy. The revocations."""
    member, offered = roster.by_fingerprint.get(opened.signer), offered_keys(opened.content)
    if member is None or not offered:
        return ()
    revoked = take_in_offered(store, keyring, offered, (member.fingerprint,))
    if not revoked:
        refresh(store, keyring, member, offered)
    return revoked


def refresh(store: Store, keyring: Keyring, member: Member, offered: tuple[bytes, ...]) -> bool:
    """A member's valid submission carried key data: if it renews their pinned key, take the
    update in, quietly (an unusable or foreign copy is simply not taken). Whether it was."""
    if not offered:
        return False
    renewals = Renewals(keyring, offered)
    try:
        with store.transaction() as tx:
            current = tx.get_member(member.list, member.email)
            if current is None or current.fingerprint != member.fingerprint:
                return False
            renewals.renew(tx, current)
            taken = renewals.pending
            renewals.adopt()
    except ListservError as exc:
        log.info("key-update fingerprint=%s taken=no reason=%s", member.fingerprint, type(exc).__name__)
        return False
    finally:
        renewals.close()
    log.info("key-update fingerprint=%s taken=%s", member.fingerprint, "yes" if taken else "unchanged")
    return taken


KEY_COMMANDS = ("key-update", "key-revoke")  # the request lines run here (listserv.ledger)


def key_command(tx: Transaction, renewals: Renewals, member: Member, line) -> str:
    """x-key-update and x-key-revoke, for the requester's own pinned key."""
    current = tx.require_member(member.list, member.email)
    if line.command.keyword == "key-update":
        return renewals.renew(tx, current)
    # A revocation of the requester's key is taken in before the request runs, and then
    # nothing else of it runs (listserv.ledger.run_request): reaching here, there was none.
    raise KeyProblem(f"The request holds no revocation of your key {fingerprint_format(current.fingerprint)}: "
                     "attach its revocation certificate (gpg keeps one in ~/.gnupg/openpgp-revocs.d) "
                     "or the key as revoked.")
