"""`listserv keys ...`: members' keys over their life (docs/keys.md): when each stops working,
and changes to a new key."""

from __future__ import annotations

import time

import click

from .. import invites, rotation
from ..model import ACTIVE, fingerprint_format, normalise_list_address, shown
from ..stages.expiry import near, standing
from . import App, echo_json, json_option, main, pass_app


@main.group("keys")
def keys_group() -> None:
    """Members' keys over their life: when each stops working, changes to a new key."""


def _status(st, now: float) -> str:
    if st.member.state != ACTIVE:
        return st.member.state
    if st.revoked:
        return "revoked"
    if not st.usable:
        return "expired" if st.usable_until is not None and st.usable_until <= now else "unusable"
    return "ok" if not near(st, now) else "expiring"


@keys_group.command("check")
@click.argument("list_address", metavar="LIST")
@json_option("array")
@pass_app
def keys_check(app: App, list_address: str, as_json: bool) -> None:
    """Show when each member's key stops being usable for encryption (the earlier of the key's
    expiry and its last encryption subkey's), read from the keyring now. Sends nothing: the
    running `listserv serve` warns members and admins once a day."""
    address = normalise_list_address(list_address)
    members = app.store.read().roster(address).members
    infos = app.keyring.key_infos([m.fingerprint for m in members])
    now = time.time()
    rows = []
    for member in members:
        st = standing(member, infos.get(member.fingerprint), now)
        rows.append({"name": member.name, "fingerprint": member.fingerprint, "usable_until": st.until_iso,
                     "days_left": st.days_left(now) if st.usable else None, "status": _status(st, now)})
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"{address} has no members.")
        return
    click.echo(f"{'pseudonym':<20} {'status':<12} {'usable until (UTC)':<21} {'days':>5}  fingerprint")
    for row in rows:
        days = "-" if row["days_left"] is None else str(row["days_left"])
        # No end and no use: a key whose encryption subkeys all expired, or missing from the keyring.
        until = row["usable_until"] or ("never" if row["status"] in ("ok", "expiring") else "-")
        click.echo(f"{shown(row['name']):<20} {row['status']:<12} {until:<21} "
                   f"{days:>5}  {row['fingerprint']}")


@keys_group.command("pending")
@click.argument("list_address", metavar="LIST")
@json_option("array")
@pass_app
def keys_pending(app: App, list_address: str, as_json: bool) -> None:
    """Show LIST's changes to a new key, most recent first: pending (awaiting the member's code
    or an admin's approval), expired, refused and approved."""
    address = normalise_list_address(list_address)
    app.store.read().require_list(address)
    rows = rotation.rows(app.store, address)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("No key changes.")
        return
    click.echo(f"{'REQUESTED (UTC)':<21} {'STATE':<18} {'UNTIL / ENDED':<21} {'PSEUDONYM':<20} {'EMAIL':<32} OLD -> NEW")
    for r in rows:
        click.echo(f"{r['requested']:<21} {r['state']:<18} {r['until'] or r['ended'] or '-':<21} "
                   f"{shown(r['pseudonym']):<20} {r['email']:<32} {fingerprint_format(r['old'])} -> "
                   f"{fingerprint_format(r['new'])}")


@main.command("invite")
@click.argument("list_address", metavar="LIST")
@click.option("--name", default="", help="The pseudonym the invitee will have (unique on the list).")
@click.option("--mode", default="immediate", type=click.Choice(["immediate", "digest"]), show_default=True)
@json_option("object")
@pass_app
def invite(app: App, list_address: str, name: str, mode: str, as_json: bool) -> None:
    """Make a one-time invitation code for LIST (good for 72 hours, for one x-join); hand it to
    the person out of band (docs/moderation.md)."""
    address = normalise_list_address(list_address)
    with app.store.transaction() as tx:
        ml = tx.require_list(address)
        code = invites.invite(tx, ml, "cli", name, mode)
    if as_json:
        echo_json({"list": address, "code": code, "hours": invites.CODE_HOURS, "name": name or None, "mode": mode})
        return
    click.echo(f"Invitation code: {code}\nIt is good for {invites.CODE_HOURS} hours and for one x-join to "
               f"{address.replace('@', '-request@')}; hand it to the person out of band.")
