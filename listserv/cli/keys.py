"""`listserv keys ...`: members' keys over their life (docs/keys.md)."""

from __future__ import annotations

import click

from .. import rotation
from ..model import fingerprint_format, normalise_list_address, shown
from . import App, echo_json, json_option, main, pass_app


@main.group("keys")
def keys_group() -> None:
    """Members' keys over their life: changes to a new key (docs/keys.md)."""


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
