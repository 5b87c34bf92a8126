"""`listserv queue`, `listserv rejections` and `listserv requests`: what is spooled, what was
refused and why, and what members asked of LIST-request@."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import click

from ..model import normalise_list_address, shown
from ..spool import DEFERRED, FAILED, PENDING, SENT, Outgoing, Spool
from ..statements import shown as statements_shown
from ..store import Store
from . import App, echo_json, json_option, main, pass_app


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _utc(at: float) -> str:
    """A time as the tables show it (their heading says UTC)."""
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


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
@json_option("array")
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
@json_option("array")
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
        click.echo(f"{_utc(r.at):<20} {r.ref:<9} {r.kind:<6} {r.reply:<10} {r.reason:<20} {r.signer or '-'}")


@main.command()
@click.argument("list_address", metavar="LIST")
@json_option("array")
@pass_app
def statements(app: App, list_address: str, as_json: bool) -> None:
    """Show the list's statements (x-sign-this): each one's digest, who asked (pseudonyms) and
    when, and when the list signed it. The text itself is never kept."""
    address = normalise_list_address(list_address)
    snapshot = app.store.read()
    snapshot.require_list(address)
    records = snapshot.statements(address)
    if as_json:
        echo_json([{"digest": r["digest"], "first": r["first"], "signed": r["signed"], "quorum": r["quorum"],
                    "asked": r["asked"]} for r in records])
        return
    click.echo("\n".join(statements_shown(records)) or "No statements.")


@main.command()
@click.argument("list_address", metavar="LIST")
@json_option("array")
@pass_app
def requests(app: App, list_address: str, as_json: bool) -> None:
    """Show recent requests to LIST-request@: when, who (pseudonym), the commands and the outcome."""
    address = normalise_list_address(list_address)
    snapshot = app.store.read()
    snapshot.require_list(address)
    rows = [{"qid": r["qid"], "at": r["at"], "signer": r["signer"], "pseudonym": r["requester"]["name"],
             "commands": r["commands"], "outcome": "refused" if r["refused"] else "done"}
            for r in snapshot.requests(address)]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("No requests.")
        return
    click.echo(f"{'WHEN (UTC)':<20} {'QUEUE ID':<13} {'OUTCOME':<8} {'WHO':<20} COMMANDS")
    for r in rows:
        click.echo(f"{_utc(r['at']):<20} {r['qid']:<13} {r['outcome']:<8} {shown(r['pseudonym']):<20} "
                   f"{' '.join('x-' + c for c in r['commands']) or '-'}")

