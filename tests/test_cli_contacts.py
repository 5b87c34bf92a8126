"""`listserv contact add|list|remove` (docs/cli.md): outsiders' keys in a keyring of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import assert_refused, write_key
from tests.helpers.keys import fingerprints_in

LIST = "news@example.org"


def contacts_home(cli) -> Path:
    return cli.home / "data" / "contacts"


def state(cli) -> tuple[bytes, set[str], set[str]]:
    """What a refused contact command must leave alone: the database and both keyrings."""
    keys = fingerprints_in(contacts_home(cli)) if contacts_home(cli).is_dir() else set()
    return (cli.home / "data" / "listserv.json").read_bytes(), fingerprints_in(cli.home / "keys"), keys


def test_add_list_remove_a_contact_in_its_own_keyring(cli, news, people, tmp_path):
    alice = people["alice"]
    members_keys = fingerprints_in(cli.home / "keys")
    added = cli.ok("contact", "add", LIST, "Desk@Paper.example", "--key", write_key(tmp_path, alice))
    assert "added the contact desk@paper.example" in added.stdout
    assert fingerprints_in(contacts_home(cli)) == {alice.fingerprint}
    assert fingerprints_in(cli.home / "keys") == members_keys  # never into the members' keyring
    assert (contacts_home(cli).stat().st_mode & 0o777) == 0o700
    cli.ok("contact", "add", LIST, "plain@paper.example")  # no key: plain copies only
    shown = cli.json("contact", "list", LIST)
    assert [(c["address"], c["fingerprint"]) for c in shown] == [("desk@paper.example", alice.fingerprint),
                                                                 ("plain@paper.example", None)]
    assert "no key" in cli.ok("contact", "list", LIST).stdout
    cli.ok("contact", "remove", LIST, "desk@paper.example")
    assert fingerprints_in(contacts_home(cli)) == set()
    assert [c["address"] for c in cli.json("contact", "list", LIST)] == ["plain@paper.example"]


def test_a_key_two_lists_pin_stays_until_the_last_contact_goes(cli, news, people, tmp_path):
    cli.ok("list", "create", "other@example.org", "--name", "Other")
    key = write_key(tmp_path, people["alice"])
    cli.ok("contact", "add", LIST, "desk@paper.example", "--key", key)
    cli.ok("contact", "add", "other@example.org", "desk@paper.example", "--key", key)
    cli.ok("contact", "remove", LIST, "desk@paper.example")
    assert fingerprints_in(contacts_home(cli)) == {people["alice"].fingerprint}
    cli.ok("list", "delete", "other@example.org", "--yes")
    assert fingerprints_in(contacts_home(cli)) == set()


@pytest.mark.parametrize("args, key, code, says", [
    (["nobody@example.org", "desk@paper.example"], "alice", 3, "There is no list nobody@example.org"),
    ([LIST, "not an address"], "alice", 2, "is not a valid email contact address"),
    ([LIST, "news-owner@example.org"], "alice", 2, "is an address of the list news@example.org"),
    ([LIST, "desk@paper.example"], "sign-only", 5, "no usable encryption subkey"),
    ([LIST, "desk@paper.example"], "two-keys", 5, "holds 2 keys; give exactly one"),
    ([LIST, "desk@paper.example"], "expired", 5, "expired"),
    ([LIST, "desk@paper.example"], "secret", 5, "secret key"),
])
def test_add_refusals_say_why_and_change_nothing(cli, news, people, unusable_keys, tmp_path, args, key, code, says):
    path = tmp_path / "key.asc"
    path.write_bytes(people[key].public_key if key in people else unusable_keys[key])
    before = state(cli)
    assert_refused(cli("contact", "add", *args, "--key", str(path)), code, says)
    assert state(cli) == before


def test_already_a_contact_and_not_a_contact(cli, news, people, tmp_path):
    key = write_key(tmp_path, people["alice"])
    cli.ok("contact", "add", LIST, "desk@paper.example", "--key", key)
    before = state(cli)
    assert_refused(cli("contact", "add", LIST, "desk@paper.example", "--key", key), 4, "is a contact of")
    assert_refused(cli("contact", "remove", LIST, "other@paper.example"), 3, "is not a contact of")
    assert_refused(cli("contact", "list", "nobody@example.org"), 3, "There is no list")
    assert state(cli) == before
