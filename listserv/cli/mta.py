"""`listserv mta postfix`: what the MTA needs, made from the home."""

from __future__ import annotations

from pathlib import Path

import click

from .. import postfix
from ..errors import StoreError
from ..store import write_atomically
from . import App, main, pass_app


@main.group("mta")
def mta_group() -> None:
    """Configuration for Postfix, made from this home."""


@mta_group.command("postfix")
@click.option("--write", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Write one file per map into DIR (made if missing) instead of printing them.")
@pass_app
def mta_postfix(app: App, directory: Path | None) -> None:
    """The Postfix maps for every list: transport, relay_domains, relay_recipients, virtual, limits.cf."""
    settings = app.settings
    snapshot = app.store.read()
    lists = snapshot.lists()
    members = {ml.address: snapshot.members(ml.address) for ml in lists}
    files = postfix.render(lists, members, settings.listen, settings.max_data_kb, str(app.home.root))
    if directory is None:
        for name in postfix.FILES:
            click.echo(f"# ==> {name} <==")
            click.echo(files[name])
        return
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        for name in postfix.FILES:
            # Atomic: Postfix or postmap never reads a half-written map.
            write_atomically(directory / name, files[name].encode())
    except OSError as exc:
        raise StoreError(f"Cannot write the maps into {directory}: {exc.strerror}.") from None
    for name in postfix.FILES:
        click.echo(f"wrote {directory / name}")
    click.echo("Next, as root: postmap each map and apply limits.cf (docs/postfix.md).")

