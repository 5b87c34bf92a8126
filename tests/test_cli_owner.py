"""A home belongs to the user the server runs as: any other user's command changes nothing.

Run as root on a home owned by the service user, a command would leave root-owned 0600 files
that the server cannot read (every later post answered 451). These tests make a real second
user, give it a home, and run every command as root against it.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from listserv.cli import main

from tests.helpers.cli import Cli, write_key

LIST = "news@example.org"


class Stranger:
    """A throwaway system user; homes given to it are given back to root afterwards."""

    def __init__(self) -> None:
        self.name = f"lstest-{secrets.token_hex(4)}"
        self.given: list[Path] = []

    def take(self, path: Path) -> None:
        self.given.append(path)
        subprocess.run(["chown", "-R", f"{self.name}:", str(path)], check=True)


@pytest.fixture
def stranger():
    if os.geteuid() != 0:
        pytest.fail("this test gives a home to a throwaway second user, which needs root "
                    "(useradd, chown); run the suite as root, as .ci/run does in CI")
    user = Stranger()
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user.name],
                   check=True, capture_output=True)
    try:
        yield user
    finally:
        for path in user.given:
            subprocess.run(["chown", "-R", "0:0", str(path)], check=True)
        subprocess.run(["userdel", user.name], check=True, capture_output=True)


def snapshot(home: Path) -> dict[str, tuple]:
    """Every file and folder of the home with its owner, mode, size and modification time."""
    found = {}
    for folder, dirs, files in os.walk(home):
        for name in ["", *dirs, *files]:
            path = Path(folder, name)
            st = path.lstat()
            found[str(path.relative_to(home))] = (st.st_uid, st.st_gid, st.st_mode, st.st_size, st.st_mtime_ns)
    return found


def the_runner() -> list[str]:
    """How the refusal says to run a command as the owner, on this machine."""
    return ["sudo", "-u"] if shutil.which("sudo") else ["runuser", "-u"]


@pytest.fixture
def foreign_home(cli, news, people, tmp_path, stranger):
    """A home with a list and a member, owned by `stranger`; returns (home, user name, key file)."""
    key = write_key(tmp_path, people["alice"])
    cli.ok("member", "add", news, "alice@example.org", "--key", key, "--name", "Alice")
    stranger.take(cli.home)
    return cli, stranger.name, write_key(tmp_path, people["bob"])


def command_lines(key: str) -> dict[str, list[str]]:
    """A valid command line for every command that reaches the home (serve: see below)."""
    return {
        "listserv init": ["init"],
        "listserv lists": ["lists"],
        "listserv list create": ["list", "create", "other@example.org", "--name", "Other"],
        "listserv list show": ["list", "show", LIST],
        "listserv list key": ["list", "key", LIST],
        "listserv list set": ["list", "set", LIST, "footer", "Bye"],
        "listserv list delete": ["list", "delete", LIST, "--yes"],
        "listserv member add": ["member", "add", LIST, "bob@example.org", "--key", key],
        "listserv member import": ["member", "import", LIST, key],
        "listserv member set": ["member", "set", LIST, "alice@example.org", "--mode", "digest"],
        "listserv member remove": ["member", "remove", LIST, "alice@example.org"],
        "listserv member list": ["member", "list", LIST],
        "listserv member pause": ["member", "pause", LIST, "alice@example.org"],
        "listserv member resume": ["member", "resume", LIST, "alice@example.org"],
        "listserv digest send": ["digest", "send", LIST],
        "listserv digest show": ["digest", "show", LIST],
        "listserv keys check": ["keys", "check", LIST],
        "listserv queue": ["queue"],
        "listserv queue retry": ["queue", "retry"],
        "listserv rejections": ["rejections", LIST],
        "listserv requests": ["requests", LIST],
        "listserv statements": ["statements", LIST],
        "listserv contact add": ["contact", "add", LIST, "desk@example.com"],
        "listserv contact list": ["contact", "list", LIST],
        "listserv contact remove": ["contact", "remove", LIST, "desk@example.com"],
        "listserv keys pending": ["keys", "pending", LIST],
        "listserv held": ["held", LIST],
        "listserv invite": ["invite", LIST],
        "listserv mta postfix": ["mta", "postfix"],
        "listserv mta systemd": ["mta", "systemd"],
        "listserv wkd export": ["wkd", "export", str(Path(key).parent / "wkd-export")],
        # With --list the list's key is the home's; with --key it needs no home (docs/verify.md).
        "listserv verify": ["verify", key, "--list", LIST],
    }


def runnable_commands(group: click.Group, prefix: str = "listserv"):
    """Every command a user can run: the leaves, and groups that do something on their own."""
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if not isinstance(command, click.Group) or command.invoke_without_command:
            yield path
        if isinstance(command, click.Group):
            yield from runnable_commands(command, path)


def test_every_command_is_refused_on_another_users_home_and_changes_nothing(foreign_home):
    cli, owner, key = foreign_home
    lines = command_lines(key)
    assert set(runnable_commands(main)) == {*lines, "listserv serve"}, \
        "a new command: add it to command_lines() (or to the serve test if it cannot run in-process)"
    before = snapshot(cli.home)
    for path, args in lines.items():
        result = cli(*args)
        assert result.exit_code == 77, (path, result.exit_code, result.output)
        assert result.stdout == "" and "Traceback" not in result.output, (path, result.output)
        [line] = result.stderr.splitlines()
        assert line.startswith(f"listserv: {cli.home} belongs to {owner}; run: "), (path, line)
        suggested = shlex.split(line.split("; run: ", 1)[1])
        assert suggested[:3] == [*the_runner(), owner], (path, line)
        assert suggested[-len(args) - 2:] == ["--home", str(cli.home), *args], (path, line)
    assert snapshot(cli.home) == before


def test_help_is_free_on_another_users_home(foreign_home):
    cli, _, _ = foreign_home
    before = snapshot(cli.home)
    for args in (["--help"], ["--version"], ["member", "add", "--help"], ["serve", "--help"]):
        assert cli(*args).exit_code == 0, args
    assert snapshot(cli.home) == before


def test_root_typing_a_command_is_told_the_command_to_type_as_the_owner(foreign_home):
    """As a shell runs it: a real process, the home from LISTSERV_HOME (which sudo drops)."""
    cli, owner, _ = foreign_home
    before = snapshot(cli.home)
    result = subprocess.run([sys.executable, "-m", "listserv", "member", "list", LIST],
                            env={**os.environ, "LISTSERV_HOME": str(cli.home)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 77 and result.stdout == ""
    runner = [*the_runner(), owner] + (["--"] if the_runner()[0] == "runuser" else [])
    expected = shlex.join([*runner, sys.executable, "-m", "listserv", "--home", str(cli.home),
                           "member", "list", LIST])
    assert result.stderr == f"listserv: {cli.home} belongs to {owner}; run: {expected}\n"
    assert snapshot(cli.home) == before


def test_serve_on_another_users_home_refuses_before_it_locks_or_listens(foreign_home):
    cli, owner, _ = foreign_home
    before = snapshot(cli.home)
    result = subprocess.run([sys.executable, "-m", "listserv", "--home", str(cli.home), "serve",
                             "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 77, result.stderr
    assert f"belongs to {owner}; run: " in result.stderr and "listening" not in result.stderr
    assert result.stderr.rstrip("\n").endswith(f"--home {cli.home} serve --listen 127.0.0.1:0")
    assert snapshot(cli.home) == before


def test_a_part_of_the_home_owned_by_another_user_is_named(cli, stranger):
    stranger.take(cli.home / "data")
    result = cli("lists")
    assert result.exit_code == 77
    assert result.stderr.startswith(f"listserv: {cli.home} has files of more than one owner "
                                    f"({cli.home / 'data'} belongs to {stranger.name}; the rest to root)")


def test_init_of_an_existing_home_of_another_user_is_refused(tmp_path, stranger):
    home = tmp_path / "empty"
    home.mkdir()
    stranger.take(home)
    result = Cli(home)("init")
    assert result.exit_code == 77
    assert list(home.iterdir()) == []



def test_a_home_of_mixed_owners_is_refused_with_the_chown_that_gives_it_back(foreign_home):
    """The service user's home, where root then made files (a copy, an old version run as
    root): one sentence names them and the exact `chown -R USER: HOME`; doing it mends it."""
    cli, owner, _ = foreign_home
    for name in ("data/listserv.json", "keys/pubring.kbx"):
        os.chown(cli.home / name, 0, 0)
    before = snapshot(cli.home)
    result = cli("lists")
    assert result.exit_code == 77 and result.stdout == "" and "Traceback" not in result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"listserv: {cli.home} has files of more than one owner (")
    assert f"{cli.home / 'keys'}" in line or f"{cli.home / 'data'}" in line
    assert "and 1 more belong to root; the rest to " + owner in line
    chown = f"as root, run: chown -R {owner}: {cli.home}"
    assert chown in line, line
    then = shlex.split(line.split(", then: ", 1)[1])
    assert then[:3] == [*the_runner(), owner] and then[-3:] == ["--home", str(cli.home), "lists"]
    assert snapshot(cli.home) == before
    # What the sentence says to type, typed: one owner again, and only "run it as them" is left.
    subprocess.run(shlex.split(chown.split("run: ", 1)[1]), check=True)
    again = cli("lists")
    assert again.exit_code == 77
    assert again.stderr.startswith(f"listserv: {cli.home} belongs to {owner}; run: ")


def test_the_owner_is_told_the_chown_too_but_not_to_switch_user(cli, news, stranger):
    """Root's own home with a file another user owns: root is the owner, so only the chown."""
    stranger.take(cli.home / "data" / "listserv.json")
    result = cli("lists")
    assert result.exit_code == 77
    [line] = result.stderr.splitlines()
    assert f"{cli.home / 'data' / 'listserv.json'} belongs to {stranger.name}; the rest to root" in line
    assert line.endswith(f"as root, run: chown -R root: {cli.home}") and ", then: " not in line
