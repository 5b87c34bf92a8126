"""`listserv member ...`: pin members' keys to a list, change and remove them."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click

from ..errors import Conflict, KeyProblem, ListservError, UsageError
from ..keyring import MAX_KEY_BYTES, MAX_KEYRING_BYTES, KeyInfo, StagedKeys
from ..model import (
    ACTIVE, SUSPENDED, MODES, ROLES, Member, fingerprint_format, iso, normalise_address, normalise_list_address, parse_iso, shown, split_user_id,
)
from ..membership import key_problem, list_address_problem, require_an_admin_left, single_key, unique_pseudonym
from ..revocation import Revocation, take_in, tell_admins
from ..store import Transaction
from . import App, echo_json, json_option, main, pass_app

# A key whose usable life ends within this many days is pinned with a warning: a month leaves
# the member time to extend it (or make a new one) and an admin time to pin that before the
# copies stop -- nothing is sent to a key once it has expired.
EXPIRY_WARNING_DAYS = 30

MEMBER_FIELDS = ("email", "name", "fingerprint", "mode", "role", "state", "paused", "bounce_paused", "key_expires", "bounces",
                 "added", "previous_fingerprints", "probation")


@main.group("member")
def member_group() -> None:
    """Add, change, remove and list the members of a list."""


# A path, not click.File: click opens a File argument while parsing and never closes it when
# a later option is refused, so every usage error leaked an open file.
key_path = click.Path(exists=True, dir_okay=False, readable=True, allow_dash=True, path_type=Path)


def _read_key(path: Path, limit: int) -> bytes:
    """Read at most `limit` bytes of key data from `path` ('-' is stdin), refusing more."""
    try:
        with click.open_file(str(path), "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise KeyProblem(f"{path} cannot be read ({exc.strerror}).") from None
    if len(data) > limit:
        raise KeyProblem(f"The key file is larger than {limit // 1024} KiB.")
    return data


def _warn_if_expiring(email: str, expires: str | None) -> None:
    """One line on stderr when the key pinned to `email` stops working within
    EXPIRY_WARNING_DAYS; `expires` is KeyInfo.expires (the end of its usable life)."""
    if expires is None:
        return
    ends = parse_iso(expires)
    if ends - datetime.now(timezone.utc) <= timedelta(days=EXPIRY_WARNING_DAYS):
        click.echo(f"listserv: warning: the key pinned to {email} stops working at {expires} "
                   f"(within {EXPIRY_WARNING_DAYS} days); ask the member for an extended key.", err=True)


def _describe(revocation: Revocation) -> str:
    who = ", ".join(f"{m.email} of {m.list}" for m in revocation.members)
    members = "member" if len(revocation.members) == 1 else "members"
    if revocation.newly:
        return (f"The key {revocation.fingerprint} is revoked: the revocation was applied; "
                f"{members} {who} can no longer post or receive.")
    return (f"The key {revocation.fingerprint} is revoked: the revocation had been applied already; "
            f"{members} {who} cannot post or receive.")


def _take_in_revocations(app: App, staged: StagedKeys) -> set[str]:
    """Apply at once any revocation in `staged` of a pinned key, whatever the command goes on
    to do, say so, and tell the admins. Returns the fingerprints of those revoked keys."""
    revocations = take_in(app.store, staged)
    for revocation in revocations:
        click.echo(_describe(revocation))
    if any(revocation.newly for revocation in revocations):
        for address, job in tell_admins(app.context, revocations):
            click.echo(f"notice to the admins of {address} queued as {job.qid}")
    return {revocation.fingerprint for revocation in revocations}


def _forget_unused_keys(app: App, fingerprints: set[str]) -> None:
    snapshot = app.store.read()
    for fingerprint in fingerprints:
        if not snapshot.fingerprint_in_use(fingerprint):
            app.keyring.forget(fingerprint)


mode_option = click.option("--mode", type=click.Choice(MODES), help="Delivery: each post now, or digests.")
welcome_option = click.option(
    "--welcome", is_flag=True,
    help="Send the new member(s) a welcome, encrypted to their key, with the list's key attached.")
role_option = click.option("--role", type=click.Choice(ROLES), help="Admins may be the only alert senders; spokespersons and admins may resend posts to contacts.")


def _welcome(app: App, list_address: str, members: list[Member]) -> None:
    from ..notices import welcome  # fan-out machinery loads only when a welcome is sent

    ctx = app.context
    mailing_list = app.store.read().require_list(list_address)
    key = app.keyring.export(mailing_list.fingerprint).encode()
    for member in members:
        for job in ctx.outbox.notices([welcome(ctx.templates, mailing_list, member, key)]):
            click.echo(f"welcome to {member.email} queued as {job.qid}")


@member_group.command("add")
@click.argument("list_address", metavar="LIST")
@click.argument("email")
@click.option("--key", "key_file", type=key_path, required=True,
              help="The member's public key, armored or binary; '-' reads stdin.")
@click.option("--name", help="Pseudonym shown to other members (default: a neutral 'Member NNNN').")
@mode_option
@role_option
@welcome_option
@pass_app
def member_add(app: App, list_address: str, email: str, key_file: Path, name: str | None,
               mode: str | None, role: str | None, welcome: bool) -> None:
    """Pin the key in --key to EMAIL as a member of LIST."""
    list_address = normalise_list_address(list_address)
    email = normalise_address(email, "member address")
    data = _read_key(key_file, MAX_KEY_BYTES)
    snapshot = app.store.read()
    snapshot.require_list(list_address)
    problem = list_address_problem(email, [ml.address for ml in snapshot.lists()])
    if problem:
        raise UsageError(f"{problem}.")
    with app.keyring.stage(data) as staged:
        revoked = _take_in_revocations(app, staged)
        key = single_key(staged, revoked)
        with app.store.transaction() as tx:
            tx.require_list(list_address)
            member = Member(
                list=list_address, email=email, fingerprint=key.fingerprint,
                name=unique_pseudonym(tx, list_address, name, email),
                mode=mode or "immediate", role=role or "member",
                key_expires=key.expires, added=iso(),
            )
            tx.add_member(member)
            # Inside the transaction: if the key cannot be copied, the member is not stored.
            staged.adopt([key.fingerprint])
    click.echo(f"added {email} to {list_address} as '{member.name}'")
    click.echo(f"pinned key {fingerprint_format(key.fingerprint)}")
    _warn_if_expiring(email, key.expires)
    if welcome:
        _welcome(app, list_address, [member])


@dataclass
class _ImportOutcome:
    added: list[Member]
    refused: list[tuple[str, str]]  # (what, why)


def _import_keys(tx: Transaction, list_address: str, keys: list[KeyInfo], revoked: set[str],
                 mode: str, role: str, progress) -> _ImportOutcome:
    outcome = _ImportOutcome([], [])
    current = tx.members(list_address)
    taken = {m.name.lower() for m in current}
    emails = {m.email for m in current}
    list_addresses = [ml.address for ml in tx.lists()]
    candidates: list[tuple[str, Member]] = []
    for key in keys:
        progress.update(1)
        label = shown(key.primary_uid) or key.fingerprint
        problem = key_problem(key, revoked)
        if problem:
            outcome.refused.append((label, problem))
            continue
        display, address = split_user_id(key.primary_uid)
        try:
            email = normalise_address(address, "address in the key's user id")
            if email in emails:
                raise Conflict(f"{email} is already a member of {list_address}.")
            problem = list_address_problem(email, list_addresses)
            if problem:
                raise UsageError(f"{problem}.")
            name = unique_pseudonym(tx, list_address, display or None, email, taken)
        except ListservError as exc:
            outcome.refused.append((label, str(exc).rstrip(".")))
            continue
        taken.add(name.lower())
        candidates.append((label, Member(list_address, email, key.fingerprint, name, mode, role,
                                         key.expires, iso())))
    labels = {id(member): label for label, member in candidates}
    for member, reason in tx.add_members(list_address, [member for _, member in candidates]):
        if reason is None:
            outcome.added.append(member)
        else:
            outcome.refused.append((labels[id(member)], reason))
    return outcome


@member_group.command("import")
@click.argument("list_address", metavar="LIST")
@click.argument("keyring_file", metavar="KEYRING", type=key_path)
@click.option("--mode", type=click.Choice(MODES), default="immediate", show_default=True)
@click.option("--role", type=click.Choice(ROLES), default="member", show_default=True)
@welcome_option
@pass_app
def member_import(app: App, list_address: str, keyring_file: Path, mode: str, role: str,
                  welcome: bool) -> None:
    """Add one member per key in KEYRING (address and pseudonym from each primary user id)."""
    list_address = normalise_list_address(list_address)
    app.store.read().require_list(list_address)
    data = _read_key(keyring_file, MAX_KEYRING_BYTES)
    with app.keyring.stage(data, limit=MAX_KEYRING_BYTES) as staged:
        revoked = _take_in_revocations(app, staged)
        with app.store.transaction() as tx:
            tx.require_list(list_address)
            # On stderr, so that stdout stays the summary a script can read.
            with click.progressbar(length=len(staged.keys), label="checking keys", file=sys.stderr) as bar:
                outcome = _import_keys(tx, list_address, staged.keys, revoked, mode, role, bar)
            staged.adopt([m.fingerprint for m in outcome.added])
    for member in outcome.added:
        click.echo(f"added   {member.email} as '{member.name}' ({member.fingerprint})")
    for label, why in outcome.refused:
        click.echo(f"refused {label}: {why}")
    click.echo(f"{len(outcome.added)} added, {len(outcome.refused)} refused")
    for member in outcome.added:
        _warn_if_expiring(member.email, member.key_expires)
    if welcome:
        _welcome(app, list_address, outcome.added)


@member_group.command("remove")
@click.argument("list_address", metavar="LIST")
@click.argument("email")
@pass_app
def member_remove(app: App, list_address: str, email: str) -> None:
    """Remove EMAIL from LIST (its key leaves the keyring unless another list pins it)."""
    list_address = normalise_list_address(list_address)
    email = normalise_address(email, "member address")
    with app.store.transaction() as tx:
        member = tx.require_member(list_address, email)
        require_an_admin_left(tx, list_address, member)
        tx.remove_member(list_address, email)
    _forget_unused_keys(app, {member.fingerprint})
    click.echo(f"removed {email} from {list_address}")


@member_group.command("set")
@click.argument("list_address", metavar="LIST")
@click.argument("email")
@mode_option
@role_option
@click.option("--name", help="New pseudonym.")
@click.option("--key", "key_file", type=key_path,
              help="Pin a new key (replaces the old one), or apply a revocation of the pinned key.")
@click.option("--probation", type=click.Choice(["on", "off"]),
              help="Put the member on probation (their posts are held for an admin), or end it.")
@pass_app
def member_set(app: App, list_address: str, email: str, mode: str | None, role: str | None,
               name: str | None, key_file: Path | None, probation: str | None = None) -> None:
    """Change a member's mode, role, pseudonym or key."""
    list_address = normalise_list_address(list_address)
    email = normalise_address(email, "member address")
    if not any(v is not None for v in (mode, role, name, key_file, probation)):
        raise UsageError("Nothing to change; give --mode, --role, --name, --key or --probation.")
    data = _read_key(key_file, MAX_KEY_BYTES) if key_file else None
    old_fingerprint = None
    pinning = reactivated = False
    staged = None
    if data is not None:
        # The pinned key goes into the scratch keyring first, so that a bare revocation
        # certificate for it applies there, and a copy sent again keeps a revocation taken in.
        pinned = app.store.read().require_member(list_address, email).fingerprint
        staged = app.keyring.stage(data, known=(pinned,))
    try:
        revoked = _take_in_revocations(app, staged) if staged is not None else set()
        with app.store.transaction() as tx:
            member = tx.require_member(list_address, email)
            if role is not None and role != "admin":
                require_an_admin_left(tx, list_address, member)
            changed = replace(
                member,
                mode=mode or member.mode,
                role=role or member.role,
                name=unique_pseudonym(tx, list_address, name, email) if name is not None else member.name,
                probation=member.probation if probation is None else probation == "on",
            )
            if staged is not None:
                key = single_key(staged, revoked, pinned=member.fingerprint)
                if key.fingerprint in revoked:  # the member's own key, revoked: taken in above
                    changed = replace(changed, state=SUSPENDED)
                else:
                    pinning, reactivated = True, member.state != ACTIVE
                    changed = replace(changed, fingerprint=key.fingerprint, key_expires=key.expires,
                                      state=ACTIVE)
                    old_fingerprint = member.fingerprint
            tx.update_member(changed)
            if pinning:
                staged.adopt([changed.fingerprint])
    finally:
        if staged is not None:
            staged.close()
    if old_fingerprint and old_fingerprint != changed.fingerprint:
        _forget_unused_keys(app, {old_fingerprint})
    if reactivated:
        click.echo(f"updated {email} on {list_address}: the new key replaces the revoked one; "
                   "the member can post and receive again")
    elif pinning or any(v is not None for v in (mode, role, name)):
        click.echo(f"updated {email} on {list_address}")
    if pinning:
        _warn_if_expiring(email, changed.key_expires)


def _pause(app: App, list_address: str, email: str, paused: bool) -> None:
    list_address = normalise_list_address(list_address)
    email = normalise_address(email, "member address")
    with app.store.transaction() as tx:
        current = tx.require_member(list_address, email)
        # Resuming ends a bounce pause too (docs/moderation.md); pausing leaves it as it is.
        tx.update_member(replace(current, paused=paused, bounce_paused=current.bounce_paused and paused))
    click.echo(f"{'paused' if paused else 'resumed'} {email} on {list_address}")


@member_group.command("pause")
@click.argument("list_address", metavar="LIST")
@click.argument("email")
@pass_app
def member_pause(app: App, list_address: str, email: str) -> None:
    """Stop sending EMAIL posts and digests of LIST for now (urgent alerts still go)."""
    _pause(app, list_address, email, True)


@member_group.command("resume")
@click.argument("list_address", metavar="LIST")
@click.argument("email")
@pass_app
def member_resume(app: App, list_address: str, email: str) -> None:
    """Send EMAIL posts and digests of LIST again after a pause, or after their mailbox refused
    mail (a bounce pause: check with them out of band first)."""
    _pause(app, list_address, email, False)


def _standing(member: Member) -> str:
    """The STATE column: a bounce pause shows there, as it stops everything a state would."""
    return "bounce-paused" if member.active and member.bounce_paused else member.state


@member_group.command("list")
@click.argument("list_address", metavar="LIST")
@json_option("array")
@pass_app
def member_list(app: App, list_address: str, as_json: bool) -> None:
    """Show the members of LIST with their pinned keys, modes and bounce counts."""
    address = normalise_list_address(list_address)
    snapshot = app.store.read()
    snapshot.require_list(address)
    members = snapshot.members(address)
    if as_json:
        echo_json([{field: getattr(m, field) for field in MEMBER_FIELDS} for m in members])
        return
    if not members:
        click.echo("No members.")
        return
    click.echo(f"{'EMAIL':<32} {'PSEUDONYM':<20} {'MODE':<9} {'ROLE':<6} {'STATE':<13} {'BOUNCES':>7}  "
               f"{'KEY EXPIRES':<20} FINGERPRINT")
    for m in members:
        click.echo(
            f"{m.email:<32} {m.name:<20} {m.mode + ('*' if m.paused else '') + ('?' if m.probation else ''):<9} {m.role:<6} {_standing(m):<13} {m.bounces:>7}  "
            f"{m.key_expires or 'never':<20} {m.fingerprint}"
        )
