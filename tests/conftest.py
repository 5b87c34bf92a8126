"""Shared fixtures: a fresh listserv home, an in-process CLI, and throwaway member identities."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from listserv.cli import main

from .support import (
    User, make_expired_gpg_user, make_gpg_user, make_rnp_user, make_sq_user, revoked, secret_key,
)


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


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    runner = Cli(tmp_path / "home")
    runner.ok("init")
    return runner


@pytest.fixture
def news(cli: Cli) -> str:
    cli.ok("list", "create", "news@example.org", "--name", "News")
    return "news@example.org"


@pytest.fixture(scope="session")
def people(tmp_path_factory: pytest.TempPathFactory) -> dict[str, User]:
    """Members made once per test session by GnuPG, Sequoia and RNP."""
    base = tmp_path_factory.mktemp("people")
    return {
        "alice": make_gpg_user(base, "Alice", "alice@example.org"),
        "bob": make_gpg_user(base, "Bob", "bob@example.org", algo="rsa3072", subkey_algo="rsa3072"),
        "sally": make_sq_user(base, "Sally", "sally@example.net"),
        "rita": make_rnp_user(base, "Rita", "rita@example.net"),
        "mallory": make_gpg_user(base, "Mallory", "mallory@example.com"),
    }


@pytest.fixture(scope="session")
def unusable_keys(tmp_path_factory: pytest.TempPathFactory, people: dict[str, User]) -> dict[str, bytes]:
    """Key files `member add` must refuse, by what is wrong with them."""
    base = tmp_path_factory.mktemp("unusable")
    return {
        "sign-only": make_gpg_user(base, "Sig", "sig@example.org", encrypt=False).public_key,
        "expired": make_expired_gpg_user(base, "Old", "old@example.org").public_key,
        "expired-subkey": make_expired_gpg_user(
            base, "Stale", "stale@example.org", primary_expire="never").public_key,
        "revoked": revoked(make_gpg_user(base, "Rev", "rev@example.org")),
        "secret": secret_key(people["mallory"]),
        "two-keys": people["alice"].public_key + people["bob"].public_key,
        "garbage": bytes(range(256)) * 8,
        "empty": b"",
        "oversized": people["alice"].public_key + b"\n" * (512 * 1024),
    }


def write_key(tmp_path: Path, user: User) -> str:
    path = tmp_path / f"{user.email}.asc"
    path.write_bytes(user.public_key)
    return str(path)


@pytest.fixture(scope="session", autouse=True)
def _stop_gpg_agents(tmp_path_factory: pytest.TempPathFactory):
    """Every test home's keyring starts a gpg-agent; stop this session's agents at the end."""
    yield
    subprocess.run(["gpgconf", "--kill", "all"], capture_output=True)
    base = str(tmp_path_factory.getbasetemp())
    subprocess.run(["pkill", "-f", f"gpg-agent --homedir {base}/"], capture_output=True)


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
