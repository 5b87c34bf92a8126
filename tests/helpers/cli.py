"""The `listserv` command run in-process, the way a user types it, and homes set up with it."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from listserv.cli import main
from listserv.config import Home
from listserv.model import MailingList, iso
from listserv.options import defaults
from listserv.store import Store

from .keys import GPG_BATCH, User, gpg_fingerprint, keyring_listing, run


class Cli:
    """Runs `listserv --home HOME ...` in-process, the way a user types it."""

    def __init__(self, home: Path):
        self.home = home
        self.runner = CliRunner()

    def __call__(self, *args: str, input: bytes | str | None = None) -> Result:
        return self.runner.invoke(main, ["--home", str(self.home), *args], input=input,
                                  catch_exceptions=False)

    def ok(self, *args: str, input: bytes | str | None = None) -> Result:
        result = self(*args, input=input)
        assert result.exit_code == 0, (result.exit_code, result.output, result.stderr)
        return result

    def json(self, *args: str) -> object:
        return json.loads(self.ok(*args, "--json").stdout)


def write_key(tmp_path: Path, user: User) -> str:
    path = tmp_path / f"{user.email}.asc"
    path.write_bytes(user.public_key)
    return str(path)


def make_site(base: Path, people: dict[str, User], modes: dict[str, str], settings: str = "",
              address: str = "news@example.org") -> tuple[Cli, bytes, str]:
    """A home with one list whose members are `people[key]` in `modes[key]` delivery mode.
    `settings` replaces listserv.toml. Returns the CLI, the list's public key and fingerprint."""
    cli = Cli(base / "home")
    cli.ok("init")
    if settings:
        (cli.home / "listserv.toml").write_text(settings)
    cli.ok("list", "create", address, "--name", "News")
    for key, mode in modes.items():
        user = people[key]
        cli.ok("member", "add", address, user.email, "--key", write_key(base, user), "--name", user.name,
               "--mode", mode)
    list_key = cli.ok("list", "key", address).stdout.encode()
    fingerprint = json.loads(cli.ok("list", "show", address, "--json").stdout)["fingerprint"]
    return cli, list_key, fingerprint


def add_old_list(cli: Cli, address: str = "news@example.org", name: str = "News") -> str:
    """A list as `list create` made it before the list's key had user ids for LIST-request@ and
    LIST-owner@: a key made by gpg itself with the one user id `NAME <ADDRESS>`, and the list
    stored beside it with the options `list create` gives. Returns the key's fingerprint."""
    keys = cli.home / "keys"
    gpg = [*GPG_BATCH, "--homedir", str(keys)]  # the empty passphrase: an unprotected key
    run([*gpg, "--quick-gen-key", f"{name} <{address}>", "ed25519", "sign", "never"])
    fingerprint = gpg_fingerprint(keys, f"<{address}>")
    run([*gpg, "--quick-add-key", fingerprint, "cv25519", "encr", "never"])
    options = {**defaults(), "name": name, "subject_prefix": f"[{name}]"}
    with Store(Home(cli.home).database).transaction() as tx:
        tx.add_list(MailingList(address, name, fingerprint, options, iso()))
    return fingerprint


def state(cli: Cli) -> tuple[bytes | None, list[str]]:
    """Everything a refused command must leave alone: the database and the keyring."""
    database = cli.home / "data" / "listserv.json"
    return (database.read_bytes() if database.exists() else None), keyring_listing(cli.home / "keys")


def assert_refused(result, exit_code: int, *fragments: str) -> None:
    """Exit code as documented, one plain sentence on stderr, nothing on stdout, no traceback."""
    assert result.exit_code == exit_code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("listserv: ") and lines[0].endswith("."), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
