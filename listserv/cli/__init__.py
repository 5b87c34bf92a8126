"""The `listserv` command line (click). One module per group; errors become one sentence + exit code."""

from __future__ import annotations

import functools
import json
import os
import pwd
import select
import shlex
import shutil
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click
from click.core import ParameterSource


from ..config import Home, Settings
from ..errors import ListservError, UsageError, WrongUser
from ..keyring import Keyring, require_gnupg
from ..store import Store
from .agent import stop_agent_after_command

if TYPE_CHECKING:
    from ..context import Context

INTERNAL_ERROR_EXIT = 70
CLOSED_PIPE_EXIT = 128 + 13  # SIGPIPE's: what the shell reports for `cat big | head -1`


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (`listserv ... | head -1`)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False  # not a file (click's test runner): a broken pipe came from elsewhere
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _leave_quietly() -> None:
    """What is still buffered for stdout goes nowhere: else Python's flush at exit fails again
    and prints 'Exception ignored ... BrokenPipeError'."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


_ARGV = "listserv.argv"  # ctx.meta key: the arguments as typed, before click parsed them


def _program() -> list[str]:
    """The listserv this process is, as another user would start it: the script's path as
    the shell found it, or this interpreter with -m."""
    if not sys.argv or not sys.argv[0] or sys.argv[0].endswith("__main__.py"):
        return [sys.executable, "-m", "listserv"]
    return [sys.argv[0]]


def _as_owner(uid: int, command_line: list[str]) -> tuple[str, str]:
    """The owner's name and the command line that runs `command_line` as them."""
    try:
        name = user = pwd.getpwuid(uid).pw_name
    except KeyError:
        name, user = f"uid {uid}", f"#{uid}"  # sudo's way to name a user id without a name
    if os.geteuid() == 0 and not shutil.which("sudo") and not user.startswith("#"):
        prefix = ["runuser", "-u", user, "--"]  # root on a system without sudo (minimal Debian)
    else:
        prefix = ["sudo", "-u", user]
    return name, shlex.join([*prefix, *command_line])


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


class App:
    """What every command needs, opened lazily: the home, its settings, store and keyring."""

    def __init__(self, home: Path, command_line: list[str] | None = None):
        self._home = Home(home)
        self.command_line = command_line or [*_program(), "--home", str(home)]

    @functools.cached_property
    def home(self) -> Home:
        """The home, once it is known to belong to the user running this command. Every
        command reaches the home through here, so none writes a file another user's server
        then cannot read; `--help` never gets here."""
        owners = self._home.owners()
        if len(owners) > 1:
            raise WrongUser(self._mixed(owners))
        foreign = self._home.foreign_part()
        if foreign is not None:
            path, uid = foreign
            name, command = _as_owner(uid, self.command_line)
            raise WrongUser(f"{path} belongs to {name}; run: {command}")
        return self._home

    def _mixed(self, owners: dict[int, tuple[int, Path]]) -> str:
        """The sentence for a home whose files have several owners (a command run as root in
        a service user's home, a copy made as root): who owns what, and the chown that mends it."""
        keeper = next(iter(owners))  # the home folder's owner: whom the rest is given back to
        name, command = _as_owner(keeper, self.command_line)
        chown_to = name if not name.startswith("uid ") else str(keeper)
        strays = [(uid, count, first) for uid, (count, first) in owners.items() if uid != keeper]
        parts = []
        for uid, count, first in strays:
            more = f" and {count - 1} more" if count > 1 else ""
            parts.append(f"{first}{more} belong{'s' if count == 1 else ''} to {_name(uid)}")
        fix = f"as root, run: chown -R {shlex.quote(chown_to)}: {shlex.quote(str(self._home.root))}"
        then = f", then: {command}" if os.geteuid() != keeper else ""
        return (f"{self._home.root} has files of more than one owner ({'; '.join(parts)}; the rest "
                f"to {name}), which the server cannot all read; {fix}{then}")

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

    @functools.cached_property
    def context(self) -> "Context":
        """The home's parts for a command that queues mail from the list (listserv.context)."""
        from ..context import Context  # the fan-out machinery loads only for such a command

        return Context.open(self.home, self.store, self.keyring)


class _Group(click.Group):
    """Turns listserv's errors into one plain sentence and the error's exit code."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:
            ctx.meta[_ARGV] = list(args)
        try:
            return super().parse_args(ctx, args)  # where `listserv --help` and --version print
        except BrokenPipeError:
            if not _stdout_closed():
                raise
            _leave_quietly()
            ctx.exit(CLOSED_PIPE_EXIT)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ListservError as exc:
            click.echo(f"listserv: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # never a traceback for a user, unless asked for
            if isinstance(exc, BrokenPipeError) and _stdout_closed():
                # The reader went away, as `| head` or `| grep -m1` do: stop quietly, like
                # coreutils. (A broken pipe of listserv's own, to gpg, is an internal error.)
                _leave_quietly()
                ctx.exit(CLOSED_PIPE_EXIT)
            if os.environ.get("LISTSERV_DEBUG"):
                traceback.print_exc()
            click.echo(
                f"listserv: internal error ({type(exc).__name__}); "
                "run again with LISTSERV_DEBUG=1 for details.",
                err=True,
            )
            ctx.exit(INTERNAL_ERROR_EXIT)


def json_option(shape: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The --json flag of a command that prints a table or, with it, a JSON `shape`."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print a JSON {shape} (see docs/cli.md).")


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


pass_app = click.make_pass_decorator(App)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="LISTSERV_HOME",
    default=".",
    help="Deployment home (listserv.toml, keys/, data/). Without --home: $LISTSERV_HOME, "
    "else the current directory.",
)
@click.version_option(package_name="listserv")
@click.pass_context
def main(ctx: click.Context, home: Path) -> None:
    """listserv: a private mailing list whose posts are signed by members' pinned keys
    and re-encrypted to every member.

    Start with `listserv init`, create a list with `listserv list create`, add members
    with `listserv member add`, then run `listserv serve`.
    """
    typed = ctx.meta.get(_ARGV, [])
    if ctx.get_parameter_source("home") is not ParameterSource.COMMANDLINE:
        typed = ["--home", str(home.absolute()), *typed]  # sudo clears the environment, LISTSERV_HOME too
    ctx.obj = App(home.absolute(), [*_program(), *typed])


@main.command()
@pass_app
def init(app: App) -> None:
    """Create the home (listserv.toml, keys/, data/). Harmless to run again."""
    checkout = app.home.git_checkout()
    if checkout is not None:
        where = ("is a git checkout" if checkout in (app.home.root.absolute(), app.home.root.resolve())
                 else f"is inside the git checkout {checkout}")
        raise UsageError(f"{app.home.root} {where}, where the lists' secret keys would be one 'git add' "
                         "from a commit and one 'git clean -xdf' from deletion; give --home a directory "
                         "outside it.")
    require_gnupg()
    created = app.home.initialise()
    for path in created:
        click.echo(f"created {path}")
    if not created:
        click.echo(f"{app.home.root} is already a listserv home; nothing changed.")


def _register() -> None:
    from . import contacts, digests, held, keys, lists, members, mta, queue, serve, verify, wkd  # noqa: F401  (the modules attach their commands)


_register()
