"""Revocations of pinned keys: taken in at once, whichever command brought them.

A revocation is signed by the key itself, so it comes from whoever holds that key's secret:
its owner giving it up, or someone who stole it and wants the owner locked out. Either way the
list must stop trusting the key now. So when staged key data holds a revocation of a key pinned
to a member of any list in this home (the key sent again revoked, or the bare certificate gpg
writes at key generation), the revocation goes into the keyring, every member pinned to that
key is suspended (no posting, no copy of anything), and each of their lists' admins is
told. That happens even when the command that brought it refuses the rest of what it was asked
(a revoked key is never pinned to a new member). Only an admin pinning a new key undoes it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .errors import KeyProblem
from .keyring import Keyring, StagedKeys
from .model import SUSPENDED, Member
from .spool import OutJob
from .store import Store

if TYPE_CHECKING:
    from .context import Context
    from .notices import Notice


@dataclass(frozen=True)
class Revocation:
    fingerprint: str
    members: tuple[Member, ...]  # every member pinned to the key, all suspended now
    newly: tuple[Member, ...]  # the ones this revocation changed (their admins are told)


def take_in(store: Store, staged: StagedKeys) -> tuple[Revocation, ...]:
    """Apply every revocation in `staged` of a key pinned to a member: into the keyring, and
    those members suspended, in one store transaction.

    A pinned key offered again unrevoked while its members are suspended counts as revoked
    too: the revocation taken in earlier still stands, and the members stay as they are."""
    offered = {key.fingerprint for key in staged.keys}
    revoked = {key.fingerprint for key in staged.keys if key.revoked}
    with store.transaction() as tx:
        pinned = tx.members_pinned_to(offered)
        hit = revoked | {m.fingerprint for m in pinned if m.state == SUSPENDED}
        pinned = [m for m in pinned if m.fingerprint in hit]
        if not pinned:
            return ()
        newly = []
        for member in pinned:
            if member.state != SUSPENDED:
                newly.append(replace(member, state=SUSPENDED))
                tx.update_member(newly[-1])
        # Inside the transaction: if the keyring does not take the revocation, no member changes.
        staged.adopt(sorted(revoked & {m.fingerprint for m in pinned}))
    return tuple(
        Revocation(fingerprint,
                   tuple(replace(m, state=SUSPENDED) for m in pinned if m.fingerprint == fingerprint),
                   tuple(m for m in newly if m.fingerprint == fingerprint))
        for fingerprint in sorted({m.fingerprint for m in pinned})
    )


def take_in_offered(store: Store, keyring: Keyring, offered: tuple[bytes, ...],
                    known: tuple[str, ...]) -> tuple[Revocation, ...]:
    """The revocations of pinned keys in the key data a member's submission carries (an
    x-key-revoke's certificate, a key sent revoked in an update), taken in before anything
    else is done with it. `known`: the keys a bare revocation certificate may be for."""
    found: list[Revocation] = []
    for data in offered:
        try:
            with keyring.stage(data, known=known) as staged:
                if any(key.revoked for key in staged.keys):
                    found.extend(take_in(store, staged))
        except KeyProblem:
            continue  # not key data: nothing to take in
    return tuple(found)


def admin_notices(ctx: Context, revocations: tuple[Revocation, ...]) -> list[Notice | None]:
    """The notices `tell_admins` sends, for the worker to queue with its others."""
    from .notices import key_revoked

    snapshot = ctx.store.read()
    rosters = ((snapshot.roster_if_any(m.list), m) for revocation in revocations for m in revocation.newly)
    return [key_revoked(ctx.templates, roster, member) for roster, member in rosters if roster is not None]


def tell_admins(ctx: Context, revocations: tuple[Revocation, ...]) -> list[tuple[str, OutJob]]:
    """A notice to the admins of each list where a member was just suspended:
    (list address, queued notice) for each one sent. A list with no active admin gets none."""
    from .notices import key_revoked  # the fan-out machinery loads only when a notice is sent

    sent = []
    snapshot = ctx.store.read()
    for member in (m for revocation in revocations for m in revocation.newly):
        roster = snapshot.roster_if_any(member.list)
        if roster is None:
            continue
        for job in ctx.outbox.notices([key_revoked(ctx.templates, roster, member)]):
            sent.append((roster.mailing_list.address, job))
    return sent
