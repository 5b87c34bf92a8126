"""`listserv digest send|show`: the digest of a list, now or when it is due."""

from __future__ import annotations

import click

from ..model import iso, normalise_list_address
from ..templates import counted
from . import App, echo_json, json_option, main, pass_app


def digests_for(app: App):
    return app.context.digests


@main.group("digest")
def digest_group() -> None:
    """Send a list's digest now, or see what waits for it."""


@digest_group.command("send")
@click.argument("list_address", metavar="LIST")
@pass_app
def digest_send(app: App, list_address: str) -> None:
    """Send LIST's pending digest now (delivered by the running `listserv serve`)."""
    address = normalise_list_address(list_address)
    mailing_list = app.store.read().require_list(address)
    digests = digests_for(app)
    pending = digests.outlook(mailing_list).pending
    job = digests.send(address)
    if pending == 0:
        click.echo(f"Nothing is waiting for the {address} digest; none was sent.")
    elif job is None:
        click.echo(f"{counted(pending, 'post')} cleared from the backlog; no member of {address} takes digests.")
    else:
        click.echo(f"Digest of {counted(pending, 'post')} queued as {job.qid}.")


@digest_group.command("show")
@click.argument("list_address", metavar="LIST")
@json_option("object")
@pass_app
def digest_show(app: App, list_address: str, as_json: bool) -> None:
    """How many posts wait for LIST's digest and when it is due."""
    address = normalise_list_address(list_address)
    mailing_list = app.store.read().require_list(address)
    outlook = digests_for(app).outlook(mailing_list)
    shown = {
        "list": address, "pending": outlook.pending,
        "next_due": iso(outlook.next_due),
        "last_sent": iso(outlook.last_sent) if outlook.last_sent else None,
        "volume": outlook.volume, "issue": outlook.issue,
    }
    if as_json:
        echo_json(shown)
        return
    waits = "waits" if outlook.pending == 1 else "wait"
    click.echo(f"{counted(outlook.pending, 'post')} {waits} for the next {address} digest.")
    click.echo(f"next due   {shown['next_due']} (UTC; sent then only if posts wait)")
    click.echo(f"last sent  {shown['last_sent'] or 'never'} (volume {outlook.volume}, issue {outlook.issue})")
