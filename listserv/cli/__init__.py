"""The `listserv` command line (click). One module per group; errors become one sentence + exit code."""

from __future__ import annotations

import functools
import json
import os
import traceback
from pathlib import Path
from typing import Any

import click

from ..config import Home, Settings
from ..errors import ListservError
from ..keyring import Keyring, require_gnupg
from ..store import Store
from .agent import stop_agent_after_command

INTERNAL_ERROR_EXIT = 70


class App:
    """What every command needs, opened lazily: the home, its settings, store and keyring."""

    def __init__(self, home: Path):
        self.home = Home(home)

    @functools.cached_property
    def settings(self) -> Settings:
        return self.home.settings()

    @functools.cached_property
    def store(self) -> Store:
        self.home.require()
        return Store(self.home.database)

    @functools.cached_property
    def keyring(self) -> Keyring:
        self.home.require()
        require_gnupg()
        keyring = Keyring(self.home.keys)
        stop_agent_after_command(self.home, keyring)
        return keyring


class _Group(click.Group):
    """Turns listserv's errors into one plain sentence and the error's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ListservError as exc:
            click.echo(f"listserv: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # never a traceback for a user, unless asked for
            if os.environ.get("LISTSERV_DEBUG"):
                traceback.print_exc()
            click.echo(
                f"listserv: internal error ({type(exc).__name__}); "
                "run again with LISTSERV_DEBUG=1 for details.",
                err=True,
            )
            ctx.exit(INTERNAL_ERROR_EXIT)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


pass_app = click.make_pass_decorator(App)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="LISTSERV_HOME",
    default=".",
    show_default="the current directory, or $LISTSERV_HOME",
    help="Deployment home: listserv.toml, keys/ and data/.",
)
@click.version_option(package_name="listserv")
@click.pass_context
def main(ctx: click.Context, home: Path) -> None:
    """listserv: a private mailing list whose posts are signed by members' pinned keys
    and re-encrypted to every member.

    Start with `listserv init`, create a list with `listserv list create`, add members
    with `listserv member add`, then run `listserv serve`.
    """
    ctx.obj = App(home.absolute())


@main.command()
@pass_app
def init(app: App) -> None:
    """Create the home (listserv.toml, keys/, data/). Harmless to run again."""
    require_gnupg()
    created = app.home.initialise()
    for path in created:
        click.echo(f"created {path}")
    if not created:
        click.echo(f"{app.home.root} is already a listserv home; nothing changed.")


def _register() -> None:
    from . import digests, lists, members, mta, serve  # noqa: F401  (the modules attach their commands)


_register()
