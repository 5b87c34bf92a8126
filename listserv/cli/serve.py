"""`listserv serve`, `listserv queue` and `listserv rejections`."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import click

from ..config import Settings, format_hostport, parse_hostport
from ..errors import UsageError
from ..model import normalise_list_address
from ..store import Store
from ..spool import DEFERRED, FAILED, PENDING, SENT, Outgoing, Spool
from . import App, echo_json, main, pass_app


@main.command()
@click.option("--listen", metavar="HOST:PORT", help=f"Where to accept SMTP [listserv.toml, else "
              f"{format_hostport(*Settings.listen)}]. Port 0 picks a free port.")
@click.option("--relay", metavar="HOST:PORT", help="Deliver outgoing copies through this SMTP relay.")
@click.option("--outbox", type=click.Path(file_okay=False, path_type=Path),
              help="Write outgoing copies to this maildir instead of a relay [data/outbox].")
@pass_app
def serve(app: App, listen: str | None, relay: str | None, outbox: Path | None) -> None:
    """Run the service in the foreground until SIGTERM or SIGINT."""
    from ..server import Server, ServeOptions  # the server's modules load only to serve

    if relay and outbox:
        raise UsageError("Give --relay or --outbox, not both.")
    settings = app.settings
    app.keyring  # checks the home and the GnuPG version before anything listens
    options = ServeOptions(
        listen=parse_hostport(listen, "--listen") if listen else settings.listen,
        relay=parse_hostport(relay, "--relay") if relay else (None if outbox else settings.relay),
        outbox=(outbox or app.home.outbox(settings)).absolute(),
    )
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # aiosmtpd's own log names every client's IP address and port: never let it through.
    logging.getLogger("mail.log").disabled = True

    # The first line says where copies go: a relay misspelt in listserv.toml would otherwise
    # send every copy to the outbox without a word.
    where = f"relay {format_hostport(*options.relay)}" if options.relay else f"the outbox {options.outbox}"

    def ready(host: str, port: int) -> None:
        click.echo(f"listserv listening on {format_hostport(host, port)}; copies go to {where}", err=True)

    server = Server(app.home, settings, options)  # holds data/serve.lock, or refuses
    try:
        asyncio.run(server.run(ready))
    finally:
        app.keyring.stop_agent()  # the agent this server used: no one else serves this home now


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _jobs(app: App) -> list[dict]:
    """Accepted submissions and delivery jobs, alerts first."""
    app.home.require()
    spool = Spool(app.home.spool)
    rows = []
    if spool.incoming.exists():
        for job in spool.submissions():
            rows.append({**job.as_dict(), "age": round(job.age, 1)})
    if spool.outgoing.exists():
        outgoing = Outgoing(spool)
        now = time.time()
        for out in outgoing.jobs():
            row = {**out.as_dict(), "age": round(now - out.created, 1)}
            try:
                count = len(outgoing.recipients(out))
                states = [p.state for p in outgoing.progress(out, count, repair=False)]
            except FileNotFoundError:
                continue  # delivered and removed while we looked
            except (OSError, ValueError):
                rows.append({**row, "state": "damaged", "copies": {}})  # the server sets it aside
                continue
            rows.append({**row, "state": "delivering",
                         "copies": {s: states.count(s) for s in (PENDING, SENT, DEFERRED, FAILED)}})
    return rows


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (see docs/cli.md).")
@click.pass_context
def queue(ctx: click.Context, as_json: bool) -> None:
    """Show what is spooled: queue id, list, kind, age, state and copies per state."""
    if ctx.invoked_subcommand:
        return
    rows = _jobs(ctx.find_object(App))
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("The queue is empty.")
        return
    click.echo(f"{'QUEUE ID':<14} {'LIST':<28} {'KIND':<7} {'AGE':>5}  {'STATE':<11} COPIES")
    for row in rows:
        copies = " ".join(f"{k}={v}" for k, v in row.get("copies", {}).items() if v)
        click.echo(f"{row['qid']:<14} {row['list']:<28} {row['kind']:<7} {_age(row['age']):>5}  "
                   f"{row['state']:<11} {copies}")


@queue.command("retry")
@pass_app
def queue_retry(app: App) -> None:
    """Retry deferred copies now (the running server picks this up within a second)."""
    app.home.require()
    spool = Spool(app.home.spool)
    spool.retry_flag.parent.mkdir(parents=True, exist_ok=True)
    spool.retry_flag.touch()
    click.echo("Deferred copies will be retried now by the running server.")


@main.command()
@click.argument("list_address", metavar="LIST")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (see docs/cli.md).")
@pass_app
def rejections(app: App, list_address: str, as_json: bool) -> None:
    """Show refused submissions to LIST with the specific reason (senders only see 5.7.1)."""
    address = normalise_list_address(list_address)
    app.store.read().require_list(address)
    records = Store(app.home.events).read().rejections(address)
    if as_json:
        echo_json([r.as_dict() for r in records])
        return
    if not records:
        click.echo("No refused submissions.")
        return
    click.echo(f"{'WHEN (UTC)':<20} {'REF':<9} {'KIND':<6} {'REPLY':<10} {'REASON':<20} SIGNER")
    for r in records:
        when = datetime.fromtimestamp(r.at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{when:<20} {r.ref:<9} {r.kind:<6} {r.reply:<10} {r.reason:<20} {r.signer or '-'}")
