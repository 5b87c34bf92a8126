"""`listserv init`, `listserv list ...` and `listserv lists`, as an operator uses them."""

from __future__ import annotations

import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import mail as mf
from listserv.errors import CryptoError
from listserv.keyring import Keyring

from tests.helpers.cli import Cli, add_old_list, assert_refused, make_site, state, write_key
from tests.helpers.keys import fingerprints, fingerprints_in, primary_user_ids, run, user_ids
from tests.helpers.members_clients import encrypt_to_address
from tests.helpers.server import ServeProcess
from tests.helpers.smtp import submit

LIST_FIELDS = {"address", "name", "fingerprint", "urgent_address", "request_address", "owner_address",
               "sendkey_address", "created", "members", "options"}
OPTION_NAMES = {"name", "subject_prefix", "require_encryption", "alert_senders", "digest_schedule",
                "max_message_size_kb", "max_signature_age", "footer", "missed_notice",
                "key_change_approval", "announce_key_changes", "join_approval", "bounce_pause",
                "new_member_probation", "max_days_to_hold",
                "emergency", "post_senders", "hold_refused_posts", "statement_signers", "statement_quorum", "resend_unencrypted"}


# -- init and the home ------------------------------------------------------------------------

def test_init_creates_the_home_with_a_private_keyring(tmp_path):
    home = tmp_path / "fresh"
    result = Cli(home).ok("init")
    for created in ("keys", "data", "listserv.toml"):
        assert f"created {home / created}" in result.stdout
    for private in ("keys", "data"):
        assert stat.S_IMODE((home / private).stat().st_mode) == 0o700
    assert "[server]" in (home / "listserv.toml").read_text()


def test_init_again_is_harmless_and_overwrites_nothing(cli, news):
    config = cli.home / "listserv.toml"
    config.write_text(config.read_text().replace('concurrency = 4', 'concurrency = 9'))
    before = state(cli)
    result = cli.ok("init")
    assert result.stdout == f"{cli.home} is already a listserv home; nothing changed.\n"
    assert "concurrency = 9" in config.read_text()
    assert state(cli) == before
    assert cli.json("list", "show", news)["name"] == "News"


def test_init_restores_a_missing_part_only(cli):
    (cli.home / "listserv.toml").unlink()
    result = cli.ok("init")
    assert result.stdout == f"created {cli.home / 'listserv.toml'}\n"


def test_home_from_the_environment(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from listserv.cli import main

    monkeypatch.setenv("LISTSERV_HOME", str(tmp_path / "envhome"))
    result = CliRunner().invoke(main, ["init"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "envhome" / "keys").is_dir()


def test_commands_outside_a_home_say_to_run_init(tmp_path):
    cli = Cli(tmp_path / "nothing-here")
    for args in (["lists"], ["list", "create", "news@example.org", "--name", "News"],
                 ["member", "list", "news@example.org"]):
        assert_refused(cli(*args), 69, "is not a listserv home", "init")
    assert not (tmp_path / "nothing-here" / "keys").exists()


# -- list create / show / lists --------------------------------------------------------------

def test_list_create_prints_the_fingerprint_and_show_reports_it(cli):
    result = cli.ok("list", "create", "News@Example.org", "--name", "News")
    printed = re.fullmatch(r"created news@example\.org\nfingerprint ((?:[0-9A-F]{4} ){9}[0-9A-F]{4})\n",
                           result.stdout)
    assert printed, result.stdout
    shown = cli.json("list", "show", "news@example.org")
    assert set(shown) == LIST_FIELDS
    assert shown["fingerprint"] == printed.group(1).replace(" ", "")
    assert shown["address"] == "news@example.org"
    assert shown["urgent_address"] == "news+urgent@example.org"
    assert shown["members"] == 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", shown["created"])
    assert set(shown["options"]) == OPTION_NAMES
    assert shown["options"] == {
        "name": "News", "subject_prefix": "[News]", "require_encryption": True,
        "alert_senders": "members", "digest_schedule": "daily 18:00", "max_message_size_kb": 7000,
        "max_signature_age": "7d", "footer": "", "missed_notice": True,
        "key_change_approval": "admin", "announce_key_changes": True, "join_approval": "admin",
        "bounce_pause": True, "new_member_probation": False, "max_days_to_hold": 7,
        "emergency": False, "post_senders": "members", "hold_refused_posts": False,
        "statement_signers": "admins", "statement_quorum": 1, "resend_unencrypted": False,
    }


def test_list_show_text(cli, news):
    out = cli.ok("list", "show", news).stdout
    assert "urgent       news+urgent@example.org" in out
    assert "requests     news-request@example.org" in out and "admins       news-owner@example.org" in out
    assert "key          news-sendkey@example.org" in out
    assert "require_encryption   True" in out


def test_list_create_twice_is_refused_and_makes_no_second_key(cli, news):
    before = state(cli)
    assert_refused(cli("list", "create", news, "--name", "Other"), 4, "exists already")
    assert state(cli) == before
    assert len(fingerprints_in(cli.home / "keys")) == 1


@pytest.mark.parametrize("address, fragment", [
    ("news+urgent@example.org", "reserved"),
    ("news-bounces@example.org", "reserved"),
    ("news", "not a valid email list address"),
    ("news@example", "not a valid email list address"),
])
def test_list_create_refuses_reserved_and_malformed_addresses(cli, address, fragment):
    before = state(cli)
    assert_refused(cli("list", "create", address, "--name", "News"), 2, fragment)
    assert state(cli) == before


def test_list_create_refuses_an_empty_or_multiline_name(cli):
    before = state(cli)
    assert_refused(cli("list", "create", "news@example.org", "--name", "  "), 2, "cannot be empty")
    assert_refused(cli("list", "create", "news@example.org", "--name", "a\nb"), 2, "single line")
    assert state(cli) == before


def test_a_list_whose_key_cannot_be_completed_is_not_made_and_leaves_no_key(cli, monkeypatch):
    def refuse(self, wanted):
        raise CryptoError("GnuPG could not add the user id News <news-request@example.org> to the key.")
    monkeypatch.setattr(Keyring, "add_user_ids", refuse)
    before = state(cli)
    assert_refused(cli("list", "create", "news@example.org", "--name", "News"), 1, "could not add the user id")
    assert state(cli) == before
    assert fingerprints_in(cli.home / "keys") == set()


def test_list_name_in_utf8_reaches_the_key(cli):
    cli.ok("list", "create", "union@example.org", "--name", "Ünïon Сеть")
    fingerprint = cli.json("list", "show", "union@example.org")["fingerprint"]
    listing = run(["gpg", "--homedir", str(cli.home / "keys"), "--with-colons", "--list-keys",
                   fingerprint]).stdout.decode("utf-8")
    assert [uid for _, uid in user_ids(listing)] == [
        "Ünïon Сеть <union@example.org>", "Ünïon Сеть <union-request@example.org>",
        "Ünïon Сеть <union-owner@example.org>", "Ünïon Сеть <union-sendkey@example.org>"]


NEWS_UIDS = ["News <news@example.org>", "News <news-request@example.org>", "News <news-owner@example.org>",
             "News <news-sendkey@example.org>"]


def test_serve_gives_an_older_lists_key_its_request_and_owner_user_ids_once(cli):
    """A list made before its key had user ids for news-request@ and news-owner@: the first
    start of `listserv serve` adds them (news@ stays primary), the next one changes nothing."""
    add_old_list(cli)
    keys = cli.home / "keys"
    with ServeProcess(cli.home) as proc:
        line = proc.wait_log(r"list-key list=\S+ added-uids=\S+").group(0)
    assert line == ("list-key list=news@example.org added-uids=news-request@example.org,news-owner@example.org,"
                    "news-sendkey@example.org")
    exported = cli.ok("list", "key", "news@example.org").stdout.encode()
    assert [uid for _, uid in user_ids(run(["gpg", "--show-keys", "--with-colons"], input=exported).stdout)] == NEWS_UIDS
    assert primary_user_ids(exported) == ["News <news@example.org>"]
    sealed = encrypt_to_address("rnp", "news-request@example.org", exported, b"x-status\n")
    assert Keyring(keys).unseal(sealed) == b"x-status\n"
    pubring = (keys / "pubring.kbx").read_bytes()
    with ServeProcess(cli.home) as proc:
        pass  # started: the listening line comes after the keys were looked at
    assert "list-key" not in proc.log
    assert (keys / "pubring.kbx").read_bytes() == pubring


def test_serve_starts_all_the_same_when_an_older_key_cannot_be_given_its_user_ids(cli):
    """Its secret key gone, the list cannot certify a user id: the start says so and serves."""
    fingerprint = add_old_list(cli)
    keys = cli.home / "keys"
    run(["gpg", "--homedir", str(keys), "--batch", "--yes", "--delete-secret-keys", fingerprint])
    with ServeProcess(cli.home) as proc:
        proc.wait_log(r"error stage=list-key CryptoError")
    assert "listserv listening on" in proc.log and "added-uids" not in proc.log
    listed = run(["gpg", "--homedir", str(keys), "--with-colons", "--list-keys", fingerprint]).stdout
    assert [uid for _, uid in user_ids(listed)] == ["News <news@example.org>"]


def test_lists_shows_every_list(cli):
    assert cli.json("lists") == []
    assert "No lists yet" in cli.ok("lists").stdout
    cli.ok("list", "create", "news@example.org", "--name", "News")
    cli.ok("list", "create", "alerts@example.org", "--name", "Alerts")
    shown = cli.json("lists")
    assert [entry["address"] for entry in shown] == ["alerts@example.org", "news@example.org"]
    assert all(set(entry) == LIST_FIELDS for entry in shown)
    assert shown[1] == cli.json("list", "show", "news@example.org")
    table = cli.ok("lists").stdout.splitlines()
    assert table[0].split() == ["alerts@example.org", "0", "members", "Alerts"]


def test_unknown_list_is_exit_3(cli):
    for args in (["list", "show", "nope@example.org"], ["list", "key", "nope@example.org"],
                 ["list", "set", "nope@example.org", "footer", "x"],
                 ["list", "delete", "nope@example.org", "--yes"],
                 ["member", "list", "nope@example.org"]):
        assert_refused(cli(*args), 3, "There is no list nope@example.org")


# -- list key ---------------------------------------------------------------------------------

def test_list_key_is_the_armored_public_key_gpg_imports(cli, news, tmp_path):
    armored = cli.ok("list", "key", news).stdout
    assert armored.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert "PRIVATE KEY" not in armored
    member_home = tmp_path / "member"
    member_home.mkdir(mode=0o700)
    run(["gpg", "--batch", "--homedir", str(member_home), "--import"], input=armored.encode())
    listing = run(["gpg", "--homedir", str(member_home), "--with-colons", "--list-keys"]).stdout.decode()
    assert fingerprints(listing)[0] == cli.json("list", "show", news)["fingerprint"]
    assert "News <news@example.org>" in listing
    assert not run(["gpg", "--homedir", str(member_home), "--list-secret-keys"]).stdout


# -- list set ---------------------------------------------------------------------------------

@pytest.mark.parametrize("option, value, stored", [
    ("require_encryption", "false", False),
    ("require_encryption", "Yes", True),
    ("alert_senders", "admins", "admins"),
    ("digest_schedule", "weekly  mon 09:00", "weekly mon 09:00"),
    ("digest_schedule", "30 6 * * 1-5", "30 6 * * 1-5"),
    ("max_message_size_kb", "2048", 2048),
    ("max_signature_age", "12h", "12h"),
    ("subject_prefix", "[n]", "[n]"),
    ("footer", "line one\nline two", "line one\nline two"),
])
def test_list_set_stores_typed_values(cli, news, option, value, stored):
    result = cli.ok("list", "set", news, option, value)
    assert result.stdout == f"{news}: {option} = {stored!r}\n"
    assert cli.json("list", "show", news)["options"][option] == stored


def test_list_set_name_renames_the_list(cli, news):
    cli.ok("list", "set", news, "name", "Newsroom")
    shown = cli.json("list", "show", news)
    assert shown["name"] == shown["options"]["name"] == "Newsroom"


@pytest.mark.parametrize("option, value, fragment", [
    ("require_encryption", "maybe", "not true or false"),
    ("alert_senders", "everyone", "not one of: members, admins"),
    ("digest_schedule", "hourly", "not a schedule"),
    ("digest_schedule", "daily 25:00", "not a time"),
    ("digest_schedule", "weekly monkey 09:00", "not a day of the week"),
    ("digest_schedule", "61 * * * *", "out of range"),
    ("digest_schedule", "0 0 30 2 *", "never fires"),
    ("max_message_size_kb", "0", "greater than zero"),
    ("max_message_size_kb", "ten", "not a whole number"),
    ("max_signature_age", "7 days", "not a duration"),
    ("subject_prefix", "a\nb", "single line"),
    ("name", " ", "cannot be empty"),
    ("colour", "red", "not a list option"),
])
def test_list_set_refuses_bad_values_and_changes_nothing(cli, news, option, value, fragment):
    before = state(cli)
    assert_refused(cli("list", "set", news, option, value), 2, fragment)
    assert state(cli) == before


# -- list delete ------------------------------------------------------------------------------

def test_list_delete_needs_yes(cli, news):
    before = state(cli)
    assert_refused(cli("list", "delete", news), 2, "repeat with --yes")
    assert state(cli) == before


def test_list_delete_removes_the_list_its_key_and_unused_member_keys(cli, news, people, tmp_path):
    alice, bob = people["alice"], people["bob"]
    cli.ok("list", "create", "ops@example.org", "--name", "Ops")
    for user in (alice, bob):
        cli.ok("member", "add", news, user.email, "--key", write_key(tmp_path, user))
    cli.ok("member", "add", "ops@example.org", bob.email, "--key", write_key(tmp_path, bob))
    news_key = cli.json("list", "show", news)["fingerprint"]
    ops_key = cli.json("list", "show", "ops@example.org")["fingerprint"]

    assert cli.ok("list", "delete", news, "--yes").stdout == f"deleted {news}\n"
    assert [entry["address"] for entry in cli.json("lists")] == ["ops@example.org"]
    assert fingerprints_in(cli.home / "keys") == {ops_key, bob.fingerprint}  # bob is still on ops
    secrets = run(["gpg", "--homedir", str(cli.home / "keys"), "--with-colons",
                   "--list-secret-keys"]).stdout.decode()
    assert news_key not in secrets and ops_key in secrets
    assert_refused(cli("list", "show", news), 3, "There is no list")
    # The address is free again, with a new key.
    cli.ok("list", "create", news, "--name", "News")
    assert cli.json("list", "show", news)["fingerprint"] != news_key
    assert cli.json("member", "list", news) == []


def test_init_refuses_a_git_checkout_as_the_home(tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / ".git").mkdir(parents=True)
    assert_refused(Cli(checkout)("init"), 2, "is a git checkout", "git clean -xdf", "--home")
    assert sorted(p.name for p in checkout.iterdir()) == [".git"]


@pytest.mark.parametrize("worktree", [False, True])
def test_init_refuses_a_home_anywhere_inside_a_git_checkout(tmp_path, worktree):
    """A real `git init` (or a `git worktree`, whose .git is a file); the home a folder or two
    down, existing or not: `git add .` at the top would take the lists' secret keys along."""
    top = tmp_path / "project"
    subprocess.run(["git", "init", "-q", str(top)], check=True)
    if worktree:
        subprocess.run(["git", "-C", str(top), "-c", "user.name=t", "-c", "user.email=t@example.org",
                        "commit", "-q", "--allow-empty", "-m", "first"], check=True)
        subprocess.run(["git", "-C", str(top), "worktree", "add", "-q", str(tmp_path / "wt")], check=True)
        top = tmp_path / "wt"
        assert (top / ".git").is_file()
    (top / "deploy").mkdir()
    for home in (top / "deploy", top / "deploy" / "lists" / "home"):
        result = Cli(home)("init")
        assert_refused(result, 2, f"{home} is inside the git checkout {top}", "git clean -xdf", "--home")
        assert not (home / "keys").exists() and not (home / "listserv.toml").exists()
    # Beside the checkout is fine.
    Cli(tmp_path / "home").ok("init")


# -- the gpg-agent a command needed is gone when it ends -----------------------------------------

def agents(keys) -> set[int]:
    """The gpg-agent processes serving the keyring `keys` (what `ps` shows an operator)."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or gone meanwhile
            continue
        if argv and argv[0].endswith(b"gpg-agent") and str(keys).encode() in argv:
            found.add(int(entry.name))
    return found


def no_agents(keys, wait: float = 10.0) -> bool:
    # An agent told to stop answers first and exits a moment later.
    deadline = time.monotonic() + wait
    while agents(keys) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not agents(keys)


def test_no_gpg_agent_is_left_running_after_a_command(cli, people, tmp_path):
    keys = cli.home / "keys"
    cli.ok("list", "create", "news@example.org", "--name", "News")  # generates a key: needs the agent
    assert no_agents(keys)
    cli.ok("member", "add", "news@example.org", people["alice"].email,
           "--key", write_key(tmp_path, people["alice"]), "--welcome")  # signs the welcome
    assert no_agents(keys)


def test_the_agent_of_a_running_server_is_left_alone(tmp_path, people):
    cli, list_key, _ = make_site(tmp_path, people, {"alice": "immediate"})
    keys = cli.home / "keys"
    with ServeProcess(cli.home) as proc:
        assert submit(proc.port, "news@example.org", mf.post(people["alice"], list_key))[0] == 250
        proc.wait_log(r"delivered qid=\S+ sent=1")  # the server decrypted and signed: its agent runs
        serving = agents(keys)
        assert serving
        cli.ok("list", "create", "team@example.org", "--name", "Team")
        assert agents(keys) == serving
    assert no_agents(keys)  # the server stopped its own when it ended
