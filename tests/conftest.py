"""Shared fixtures, and only fixtures: a fresh listserv home, an in-process CLI, and throwaway
member identities. What they are made with lives in tests/helpers/."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from listserv.keyring import Keyring

from tests.helpers.cli import Cli
from tests.helpers.fanout import Clients, ListRing, export_secret, kill_agent
from tests.helpers.keys import (
    GPG_BATCH, User, make_expired_gpg_user, make_gpg_user, make_rnp_user, make_sq_user, revoked, run,
    secret_key,
)


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


@pytest.fixture(scope="session", autouse=True)
def _stop_gpg_agents(tmp_path_factory: pytest.TempPathFactory):
    """Every test home's keyring starts a gpg-agent; stop this session's agents at the end."""
    yield
    subprocess.run(["gpgconf", "--kill", "all"], capture_output=True)
    base = str(tmp_path_factory.getbasetemp())
    subprocess.run(["pkill", "-f", f"gpg-agent --homedir {base}/"], capture_output=True)


# -- a list keyring as deployed, and members' clients (stages/test_fanout.py, test_pkesk.py) --

@pytest.fixture(scope="module")
def outsiders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, User]:
    base = tmp_path_factory.mktemp("outsiders")
    users = {
        "expired": make_expired_gpg_user(base, "Expired", "expired@example.org", at="20240101T000000",
                                         home="gpg-expired"),  # valid one day in January 2024
        "signonly": make_gpg_user(base, "Sign Only", "signonly@example.org", encrypt=False),
    }
    yield users
    for user in users.values():
        kill_agent(user.home)


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory, people: dict[str, User], outsiders: dict[str, User]) -> ListRing:
    """A keyring laid out like a deployment's: the list key and every member's public key."""
    base = tmp_path_factory.mktemp("listserv")
    home = base / "keys"
    home.mkdir(mode=0o700)
    keyring = Keyring(home)
    fingerprint = keyring.generate_list_key("news@example.org", "News")
    for user in [*people.values(), *outsiders.values()]:
        assert keyring.import_keys(user.public_key) == [user.fingerprint]
    cert = base / "list.asc"
    cert.write_text(keyring.export(fingerprint))
    yield ListRing(keyring, fingerprint, cert)
    kill_agent(home)


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory, people: dict[str, User], ring: ListRing) -> dict[str, Clients]:
    made = {}
    for name, user in people.items():
        base = tmp_path_factory.mktemp(f"client-{name}")
        secret = base / "secret.asc"
        secret.write_bytes(export_secret(user))
        gpg_home, rnp_home = base / "gpg", base / "rnp"
        gpg_home.mkdir(mode=0o700)
        rnp_home.mkdir(mode=0o700)
        run([*GPG_BATCH, "--homedir", str(gpg_home), "--import", str(secret), str(ring.cert)])
        for key in (secret, ring.cert):
            run(["rnpkeys", "--homedir", str(rnp_home), "--import", str(key), "--password", ""])
        made[name] = Clients(gpg_home, rnp_home, secret)
    yield made
    for client in made.values():
        kill_agent(client.gpg_home)
