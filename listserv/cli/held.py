"""`listserv held LIST [--json]` and `listserv held approve|reject|discard LIST ID [REASON]`:
the posts that wait for an admin (listserv.holds), as x-held and its commands at the request address."""

from __future__ import annotations

import click

from ..errors import Conflict, UsageError
from ..model import iso, normalise_list_address
from ..notices import held_rejected
from . import App, echo_json, json_option, main, pass_app

ACTIONS = ("approve", "reject", "discard")


@main.command("held")
@click.argument("words", nargs=-1, metavar="[approve|reject|discard] LIST [ID [REASON]]")
@json_option("array")
@pass_app
def held(app: App, words: tuple[str, ...], as_json: bool) -> None:
    """The held posts of LIST, or a decision on one of them (a running serve sends an approved one)."""
    action = words[0] if words and words[0] in ACTIONS else None
    rest = words[1:] if action else words
    if (action is None and len(rest) != 1) or (action and len(rest) < 2) or (action != "reject" and len(rest) > 2):
        raise UsageError("Write listserv held LIST, or listserv held approve|reject|discard LIST ID [REASON].")
    address = normalise_list_address(rest[0])
    roster = app.store.read().roster(address)
    holds = app.context.holds
    if action is None:
        waiting = holds.waiting(address)
        if as_json:
            echo_json([h.as_dict() for h in waiting])
            return
        for h in waiting:
            click.echo(f"{h.id}  {h.kind}  {h.pseudonym}  {h.reason}  since {iso(h.at)}")
        if not waiting:
            click.echo(f"Nothing is held for {address}.")
        return
    one = holds.get(address, rest[1])
    poster = roster.by_fingerprint.get(one.signer)
    if action == "approve":
        if poster is None or not poster.active:
            raise Conflict(f"Its sender ({one.pseudonym}) is no longer a member in good standing; reject or discard it.")
        holds.approve(one)
        click.echo(f"{one.id} is approved; the running listserv serve sends it to the list.")
    elif action == "reject":
        app.context.outbox.notices(held_rejected(app.context.templates, roster, ((one.signer, " ".join(rest[2:])),)),
                                   after=f"reject-{one.id}")
        holds.drop(one, "rejected")
        click.echo(f"{one.id} is rejected; {one.pseudonym} is told.")
    else:
        holds.drop(one, "discarded")
        click.echo(f"{one.id} is discarded.")
