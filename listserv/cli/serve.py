"""`listserv serve`: the service in the foreground."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from ..config import Settings, format_hostport, parse_hostport
from ..errors import UsageError
from . import App, main, pass_app


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

    # The line 'listening' says where copies go: a relay misspelt in listserv.toml would otherwise
    # send every copy to the outbox without a word.
    where = f"relay {format_hostport(*options.relay)}" if options.relay else f"the outbox {options.outbox}"

    def ready(host: str, port: int) -> None:
        click.echo(f"listserv listening on {format_hostport(host, port)}; copies go to {where}", err=True)

    server = Server(app.home, settings, options)  # holds data/serve.lock, or refuses
    try:
        asyncio.run(server.run(ready))
    finally:
        app.keyring.stop_agent()  # the agent this server used: no one else serves this home now
