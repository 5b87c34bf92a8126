"""`listserv mta postfix` and `listserv mta systemd`: what the MTA and the init system need."""

from __future__ import annotations

import os
import pwd
import shutil
import sys
from pathlib import Path

import click

from .. import postfix, systemd
from ..errors import EnvironmentProblem, StoreError
from ..durable import write_atomically
from . import App, main, pass_app


@main.group("mta")
def mta_group() -> None:
    """Configuration for Postfix and systemd, made from this home."""


@mta_group.command("postfix")
@click.option("--write", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Write one file per map into DIR (made if missing) instead of printing them.")
@pass_app
def mta_postfix(app: App, directory: Path | None) -> None:
    """The Postfix maps for every list: transport, relay_domains, relay_recipients, virtual
    (empty, kept for a main.cf that names it), service.cf (the listserv transport) and limits.cf.
    Make them again after adding or removing a list."""
    settings = app.settings
    lists = app.store.read().lists()
    files = postfix.render(lists, settings.listen, settings.max_data_kb, str(app.home.root))
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
    click.echo("Next, as root: apply service.cf, postmap each map, apply limits.cf (docs/postfix.md).")


def _command() -> list[str]:
    """How this installation runs listserv, by absolute path: the unit must not rely on PATH."""
    executable = Path(sys.executable).absolute() if sys.executable else None
    if executable is not None:
        script = executable.parent / "listserv"  # a venv's or pip's script beside its python
        if script.is_file() and os.access(script, os.X_OK):
            return [str(script)]
    found = shutil.which("listserv")
    if found:
        return [str(Path(found).absolute())]
    if executable is None:
        raise EnvironmentProblem("Cannot tell where listserv is installed; run it by its full path.")
    return [str(executable), "-m", "listserv"]


@mta_group.command("systemd")
@click.option("--user", default="listserv", show_default=True, help="The system user the service runs as.")
@pass_app
def mta_systemd(app: App, user: str) -> None:
    """A hardened systemd unit that runs `listserv serve` on this home as USER."""
    app.home.require()
    settings = app.settings
    command, home, outbox = _command(), app.home.root, app.home.outbox(settings)
    text = systemd.unit(command, home, outbox, settings, user)
    for warning in systemd.warnings(command, home, outbox, user, _owner(home)):
        click.echo(f"listserv: warning: {warning}.", err=True)  # the unit is printed all the same
    click.echo(text, nl=False)


def _owner(path: Path) -> str:
    uid = path.stat().st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
