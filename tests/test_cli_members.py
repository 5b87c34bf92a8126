"""`listserv member ...`: what an operator sees when pinning, changing and removing members."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from listserv.cli.members import EXPIRY_WARNING_DAYS

from tests.helpers import forge
from tests.helpers.cli import Cli, assert_refused, state, write_key
from tests.helpers.keys import GPG_BATCH, fingerprints, fingerprints_in, make_gpg_key, make_gpg_user, run

MEMBER_FIELDS = {"email", "name", "fingerprint", "mode", "role", "state", "paused", "bounce_paused", "key_expires", "bounces", "added",
                 "previous_fingerprints", "probation"}


def member_list(cli: Cli, address: str = "news@example.org") -> list[dict]:
    return cli.json("member", "list", address)


def add(cli: Cli, tmp_path: Path, user, *extra: str, email: str | None = None, list_address="news@example.org"):
    return cli("member", "add", list_address, email or user.email, "--key", write_key(tmp_path, user), *extra)


# -- adding keys made by different OpenPGP implementations ------------------------------

@pytest.mark.parametrize("who", ["alice", "bob", "sally", "rita"])
def test_member_add_accepts_keys_from_gnupg_sequoia_and_rnp(cli, news, people, tmp_path, who):
    user = people[who]
    result = add(cli, tmp_path, user, "--name", user.name)
    assert result.exit_code == 0, result.output
    assert f"added {user.email} to {news} as '{user.name}'" in result.stdout
    [member] = member_list(cli)
    assert member["fingerprint"] == user.fingerprint
    assert member["email"] == user.email
    assert user.fingerprint in fingerprints_in(cli.home / "keys")


def test_member_add_reads_binary_keys_and_stdin(cli, news, people, tmp_path):
    alice, bob = people["alice"], people["bob"]
    binary = tmp_path / "alice.gpg"
    binary.write_bytes(alice.gpg("--export", alice.fingerprint).stdout)
    cli.ok("member", "add", news, alice.email, "--key", str(binary))
    cli.ok("member", "add", news, bob.email, "--key", "-", input=bob.public_key)
    assert {m["fingerprint"] for m in member_list(cli)} == {alice.fingerprint, bob.fingerprint}


def test_member_add_defaults_and_choices(cli, news, people, tmp_path):
    add(cli, tmp_path, people["alice"])
    add(cli, tmp_path, people["bob"], "--mode", "digest", "--role", "admin", "--name", "Bobby")
    alice, bob = member_list(cli)
    assert re.fullmatch(r"Member \d{4}", alice["name"])  # neutral, says nothing about the person
    assert (alice["mode"], alice["role"], alice["state"], alice["key_expires"], alice["bounces"]) == (
        "immediate", "member", "active", None, 0)
    assert (bob["name"], bob["mode"], bob["role"]) == ("Bobby", "digest", "admin")
    assert set(alice) == MEMBER_FIELDS and alice["previous_fingerprints"] == []  # no key changed yet
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", alice["added"])


def test_member_list_table_and_empty(cli, news, people, tmp_path):
    assert cli.ok("member", "list", news).stdout == "No members.\n"
    assert member_list(cli) == []
    add(cli, tmp_path, people["alice"], "--name", "Alice")
    table = cli.ok("member", "list", news).stdout.splitlines()
    assert table[0].split()[:3] == ["EMAIL", "PSEUDONYM", "MODE"]
    assert "alice@example.org" in table[1] and people["alice"].fingerprint in table[1] and "never" in table[1]


def test_self_signatures_only_reach_the_keyring(cli, news, people, tmp_path):
    """A key arrives with another person's certification on it; only self-signatures are kept."""
    alice, bob = people["alice"], people["bob"]
    signer_home = tmp_path / "signer"
    signer_home.mkdir(mode=0o700)
    signer = [*GPG_BATCH, "--homedir", str(signer_home)]
    run([*signer, "--import"], input=alice.gpg("--export-secret-keys", alice.fingerprint).stdout)
    run([*signer, "--import"], input=bob.public_key)
    run([*signer, "--default-key", alice.fingerprint, "--quick-sign-key", bob.fingerprint])
    certified = run([*signer, "--armor", "--export", bob.fingerprint]).stdout
    sigs = run(["gpg", "--show-keys", "--with-colons", "--with-sig-list"], input=certified).stdout.decode()
    assert alice.fingerprint[-16:] in sigs  # the offered key does carry Alice's certification

    cli.ok("member", "add", news, bob.email, "--key", "-", input=certified)
    pinned = run(["gpg", "--homedir", str(cli.home / "keys"), "--with-colons", "--list-sigs",
                  bob.fingerprint]).stdout.decode()
    issuers = {line.split(":")[4] for line in pinned.splitlines() if line.startswith("sig:")}
    assert issuers == {bob.fingerprint[-16:]}


# -- refusals: exit code, one sentence, nothing stored -------------------------------------

@pytest.mark.parametrize("kind, exit_code, fragment", [
    ("sign-only", 5, "no usable encryption subkey"),
    ("expired", 5, "has expired"),
    ("expired-subkey", 5, "no usable encryption subkey"),
    ("revoked", 5, "revoked"),
    ("secret", 5, "secret key"),
    ("two-keys", 5, "holds 2 keys"),
    ("garbage", 5, "no OpenPGP public key"),
    ("empty", 5, "empty"),
    ("oversized", 5, "larger than 512 KiB"),
])
def test_member_add_refuses_unusable_keys(cli, news, people, unusable_keys, tmp_path, kind, exit_code, fragment):
    add(cli, tmp_path, people["bob"])  # a member already there, so "unchanged" means something
    before = state(cli)
    key = tmp_path / f"{kind}.key"
    key.write_bytes(unusable_keys[kind])
    result = cli("member", "add", news, "new@example.org", "--key", str(key))
    assert_refused(result, exit_code, fragment)
    assert state(cli) == before
    assert [m["email"] for m in member_list(cli)] == [people["bob"].email]


def test_member_add_refuses_a_fingerprint_pinned_to_another_member(cli, news, people, tmp_path):
    add(cli, tmp_path, people["alice"])
    before = state(cli)
    result = add(cli, tmp_path, people["alice"], email="alice.other@example.org")
    assert_refused(result, 4, people["alice"].fingerprint, "already pinned to another member")
    assert state(cli) == before


def test_member_add_refuses_an_address_already_a_member(cli, news, people, tmp_path):
    add(cli, tmp_path, people["alice"])
    before = state(cli)
    result = add(cli, tmp_path, people["bob"], email="ALICE@example.org")  # addresses compare case-blind
    assert_refused(result, 4, "alice@example.org is already a member")
    assert state(cli) == before


@pytest.mark.parametrize("address", ["alice", "alice@", "@example.org", "alice@@example.org",
                                     "al ice@example.org", "alice@localhost", "alice..x@example.org",
                                     "Alice <alice@example.org>"])
def test_member_add_refuses_a_malformed_address(cli, news, people, tmp_path, address):
    before = state(cli)
    result = add(cli, tmp_path, people["alice"], email=address)
    assert_refused(result, 2, "is not a valid email member address")
    assert state(cli) == before


def test_member_add_refuses_a_taken_or_bad_pseudonym(cli, news, people, tmp_path):
    add(cli, tmp_path, people["alice"], "--name", "Alice")
    before = state(cli)
    assert_refused(add(cli, tmp_path, people["bob"], "--name", "alice"), 4, "already called 'alice'")
    assert_refused(add(cli, tmp_path, people["bob"], "--name", "Bob <b@x.org>"), 2, "pseudonym")
    assert state(cli) == before


def test_member_add_to_an_unknown_list(cli, news, people, tmp_path):
    before = state(cli)
    result = add(cli, tmp_path, people["alice"], list_address="nope@example.org")
    assert_refused(result, 3, "There is no list nope@example.org")
    assert state(cli) == before


def test_member_add_bad_choices_are_usage_errors(cli, news, people, tmp_path):
    before = state(cli)
    for extra in (["--mode", "weekly"], ["--role", "owner"]):
        result = add(cli, tmp_path, people["alice"], *extra)
        assert result.exit_code == 2 and "Traceback" not in result.output
    result = cli("member", "add", news, "alice@example.org", "--key", str(tmp_path / "missing.asc"))
    assert result.exit_code == 2 and "does not exist" in result.stderr, result.stderr
    assert state(cli) == before


# -- member import ------------------------------------------------------------------------

FRESH = [f"Member{n:02d} <member{n:02d}@example.org>" for n in range(8)] + [
    "Carol (work phone) <carol@example.org>",  # pseudonym 'Carol': the comment is not the name
    "José Ñandú <jose@example.org>",  # UTF-8 survives
    "Doe, John <john@example.org>",  # ',' is not allowed in a pseudonym: refused
    "Alice <alice.two@example.org>",  # pseudonym taken by the member alice@example.org
]


@pytest.fixture(scope="module")
def keyring_file(tmp_path_factory, people, unusable_keys) -> tuple[Path, dict]:
    """A binary keyring of 20 keys: 12 made here, gpg/sq/rnp people, and 4 unusable keys."""
    base = tmp_path_factory.mktemp("keyring20")
    home = base / "gnupg"
    home.mkdir(mode=0o700)
    gpg = [*GPG_BATCH, "--homedir", str(home)]
    for uid in FRESH:
        name, email = uid.split(" <")
        run([*gpg, "--import"], input=make_gpg_user(base, name, email.rstrip(">")).public_key)
    for who in ("alice", "bob", "sally", "rita"):
        run([*gpg, "--import"], input=people[who].public_key)
    for kind in ("sign-only", "expired", "expired-subkey", "revoked"):
        run([*gpg, "--import"], input=unusable_keys[kind])
    keyring = base / "keyring.gpg"
    keyring.write_bytes(run([*gpg, "--export"]).stdout)
    listing = run(["gpg", "--show-keys", "--with-colons"], input=keyring.read_bytes()).stdout.decode()
    assert listing.count("\npub:") + listing.startswith("pub:") == 20
    return keyring, set(fingerprints(listing))


def test_member_import_adds_usable_keys_and_explains_each_refusal(cli, news, people, tmp_path, keyring_file):
    keyring, _ = keyring_file
    add(cli, tmp_path, people["alice"], "--name", "Alice")
    result = cli("member", "import", news, str(keyring), "--mode", "digest")
    assert result.exit_code == 0, result.output
    assert "checking keys" in result.stderr  # the progress bar
    out = result.stdout.splitlines()
    assert out[-1] == "13 added, 7 refused"
    refused = {line.split(":")[0].removeprefix("refused "): line for line in out if line.startswith("refused ")}
    assert len(refused) == 7
    assert "already a member" in refused["Alice <alice@example.org>"]
    assert "already called 'Alice'" in refused["Alice <alice.two@example.org>"]
    assert "pseudonym" in refused["Doe, John <john@example.org>"]
    assert "no usable encryption subkey" in refused["Sig <sig@example.org>"]
    assert "no usable encryption subkey" in refused["Stale <stale@example.org>"]
    assert "has expired" in refused["Old <old@example.org>"]
    assert "revoked" in refused["Rev <rev@example.org>"]

    members = {m["email"]: m for m in member_list(cli)}
    assert len(members) == 14
    assert members["carol@example.org"]["name"] == "Carol"
    assert members["jose@example.org"]["name"] == "José Ñandú"
    assert members["member03@example.org"]["name"] == "Member03"
    for who in ("bob", "sally", "rita"):
        assert members[people[who].email]["fingerprint"] == people[who].fingerprint
        assert members[people[who].email]["name"] == people[who].name
    assert members["alice@example.org"]["mode"] == "immediate"  # untouched by the import
    assert {m["mode"] for e, m in members.items() if e != "alice@example.org"} == {"digest"}
    # Exactly the list key and the 14 members' keys are in the keyring: nothing refused stayed.
    list_key = cli.json("list", "show", news)["fingerprint"]
    assert fingerprints_in(cli.home / "keys") == {list_key} | {m["fingerprint"] for m in members.values()}


def test_member_import_refuses_a_file_with_a_secret_key_whole(cli, news, unusable_keys, tmp_path):
    before = state(cli)
    path = tmp_path / "mixed.asc"
    path.write_bytes(unusable_keys["two-keys"] + unusable_keys["secret"])
    assert_refused(cli("member", "import", news, str(path)), 5, "secret key")
    assert state(cli) == before


def test_member_import_of_garbage(cli, news, unusable_keys, tmp_path):
    before = state(cli)
    path = tmp_path / "garbage"
    path.write_bytes(unusable_keys["garbage"])
    assert_refused(cli("member", "import", news, str(path)), 5, "no OpenPGP public key")
    assert state(cli) == before


# -- member set -----------------------------------------------------------------------------

def test_member_set_changes_mode_role_and_name(cli, news, people, tmp_path):
    add(cli, tmp_path, people["alice"], "--name", "Alice")
    cli.ok("member", "set", news, "alice@example.org", "--mode", "digest", "--role", "admin", "--name", "Al")
    [alice] = member_list(cli)
    assert (alice["mode"], alice["role"], alice["name"]) == ("digest", "admin", "Al")
    assert alice["fingerprint"] == people["alice"].fingerprint
    cli.ok("member", "set", news, "alice@example.org", "--name", "AL")  # her own name, new case
    assert member_list(cli)[0]["name"] == "AL"


def test_member_set_key_swaps_the_pin_and_drops_the_old_key(cli, news, people, tmp_path):
    alice, sally = people["alice"], people["sally"]
    add(cli, tmp_path, alice)
    cli.ok("member", "set", news, alice.email, "--key", write_key(tmp_path, sally))
    [member] = member_list(cli)
    assert member["fingerprint"] == sally.fingerprint
    keys = fingerprints_in(cli.home / "keys")
    assert sally.fingerprint in keys and alice.fingerprint not in keys


def test_member_set_key_keeps_an_old_key_another_list_pins(cli, news, people, tmp_path):
    alice, rita = people["alice"], people["rita"]
    cli.ok("list", "create", "ops@example.org", "--name", "Ops")
    add(cli, tmp_path, alice)
    add(cli, tmp_path, alice, list_address="ops@example.org")
    cli.ok("member", "set", news, alice.email, "--key", write_key(tmp_path, rita))
    assert alice.fingerprint in fingerprints_in(cli.home / "keys")


def test_member_set_refusals_change_nothing(cli, news, people, unusable_keys, tmp_path):
    add(cli, tmp_path, people["alice"], "--name", "Alice")
    add(cli, tmp_path, people["bob"], "--name", "Bob")
    before = state(cli)
    revoked = tmp_path / "revoked.asc"
    revoked.write_bytes(unusable_keys["revoked"])
    cases = [
        (["--key", str(revoked)], 5, "revoked"),
        (["--key", write_key(tmp_path, people["bob"])], 4, "already pinned to another member"),
        (["--name", "bob"], 4, "already called 'bob'"),
        (["--mode", "digest", "--key", str(revoked)], 5, "revoked"),  # all or nothing
        ([], 2, "Nothing to change"),
    ]
    for extra, exit_code, fragment in cases:
        assert_refused(cli("member", "set", news, "alice@example.org", *extra), exit_code, fragment)
    assert_refused(cli("member", "set", news, "carol@example.org", "--mode", "digest"), 3,
                   "carol@example.org is not a member of news@example.org")
    assert state(cli) == before


# -- member remove --------------------------------------------------------------------------

def test_member_remove_drops_the_member_and_the_key(cli, news, people, tmp_path):
    alice, bob = people["alice"], people["bob"]
    add(cli, tmp_path, alice)
    add(cli, tmp_path, bob)
    result = cli.ok("member", "remove", news, "Alice@Example.org")
    assert result.stdout == f"removed alice@example.org from {news}\n"
    assert [m["email"] for m in member_list(cli)] == [bob.email]
    keys = fingerprints_in(cli.home / "keys")
    assert alice.fingerprint not in keys and bob.fingerprint in keys
    before = state(cli)
    assert_refused(cli("member", "remove", news, "alice@example.org"), 3, "is not a member")
    assert state(cli) == before


def test_member_remove_keeps_a_key_another_list_pins(cli, news, people, tmp_path):
    alice = people["alice"]
    cli.ok("list", "create", "ops@example.org", "--name", "Ops")
    add(cli, tmp_path, alice)
    add(cli, tmp_path, alice, list_address="ops@example.org")
    cli.ok("member", "remove", news, alice.email)
    assert alice.fingerprint in fingerprints_in(cli.home / "keys")
    assert cli.json("member", "list", "ops@example.org")[0]["fingerprint"] == alice.fingerprint


def test_the_last_admin_can_be_neither_removed_nor_made_a_member(cli, news, people, tmp_path):
    """As by mail (x-remove-member, x-set-member, x-leave): a list with no admin could no longer
    be run by mail, nor tell anyone of its troubles."""
    add(cli, tmp_path, people["alice"], "--role", "admin", "--name", "Alice")
    add(cli, tmp_path, people["bob"], "--name", "Bob")
    before = state(cli)
    last = "Alice is the last admin of news@example.org; make another member an admin first."
    assert_refused(cli("member", "remove", news, "alice@example.org"), 4, last)
    assert_refused(cli("member", "set", news, "alice@example.org", "--role", "member"), 4, last)
    assert_refused(cli("member", "set", news, "alice@example.org", "--role", "member", "--mode", "digest"), 4, last)
    assert state(cli) == before
    cli.ok("member", "set", news, "bob@example.org", "--role", "admin")
    cli.ok("member", "set", news, "alice@example.org", "--role", "member")  # Bob is an admin now
    assert_refused(cli("member", "remove", news, "bob@example.org"), 4, "Bob is the last admin")
    cli.ok("member", "remove", news, "alice@example.org")
    assert [(m["email"], m["role"]) for m in member_list(cli)] == [("bob@example.org", "admin")]


def test_member_json_is_a_json_array(cli, news, people, tmp_path):
    add(cli, tmp_path, people["sally"])
    parsed = json.loads(cli.ok("member", "list", news, "--json").stdout)
    assert isinstance(parsed, list) and set(parsed[0]) == MEMBER_FIELDS


def test_member_set_key_with_the_same_key_renewed_updates_its_expiry(cli, news, tmp_path):
    """A member extends their key's expiry and sends it again: same fingerprint, new date."""
    from tests.helpers.keys import make_gpg_user

    carol = make_gpg_user(tmp_path, "Carol", "carol@example.org", expire="1y")
    add(cli, tmp_path, carol)
    first = member_list(cli)[0]["key_expires"]
    carol.gpg("--quick-set-expire", carol.fingerprint, "3y")
    carol.gpg("--quick-set-expire", carol.fingerprint, "3y", "*")
    renewed = tmp_path / "renewed.asc"
    renewed.write_bytes(carol.gpg("--armor", "--export", carol.fingerprint).stdout)
    cli.ok("member", "set", news, carol.email, "--key", str(renewed))
    [member] = member_list(cli)
    assert member["fingerprint"] == carol.fingerprint
    assert first is not None and member["key_expires"] > first
    assert carol.fingerprint in fingerprints_in(cli.home / "keys")


def test_a_list_key_cannot_be_pinned_to_a_member(cli, news, tmp_path):
    """The list's secret key is on the server: a member pinned to it would let the server
    (or whoever holds its disk) post as that member."""
    cli.ok("list", "create", "ops@example.org", "--name", "Ops")
    before = state(cli)
    for key_of in (news, "ops@example.org"):
        armored = cli.ok("list", "key", key_of).stdout
        result = cli("member", "add", news, "x@example.org", "--key", "-", input=armored)
        assert_refused(result, 4, "is a list's own key")
    assert state(cli) == before


# -- the list's own addresses are no member's, and a key about to expire is pointed out ------

@pytest.mark.parametrize("address", [
    "news@example.org", "NEWS@example.org", "news+urgent@example.org", "news+anything@example.org",
    "news-bounces+abc123@example.org", "news-bounces@example.org", "news-owner@example.org",
    "news-request@example.org", "news-sendkey@example.org",
    "team@lists.example.net", "team+urgent@lists.example.net",  # another list of this home
])
def test_member_add_refuses_an_address_of_a_list_in_this_home(cli, news, people, tmp_path, address):
    """Its copy would come back to the list: as a post refused over and over, or as a bounce."""
    cli.ok("list", "create", "team@lists.example.net", "--name", "Team")
    before = state(cli)
    result = add(cli, tmp_path, people["alice"], email=address)
    owner = "team@lists.example.net" if "team" in address else news
    assert_refused(result, 2, f"is an address of the list {owner}")
    assert state(cli) == before


@pytest.mark.parametrize("address", ["newsdesk@example.org", "news-desk@example.org", "news@example.net"])
def test_addresses_that_only_look_like_the_lists_are_members_like_any(cli, news, people, tmp_path, address):
    assert add(cli, tmp_path, people["alice"], email=address).exit_code == 0


def test_member_import_refuses_a_key_whose_address_is_the_lists(cli, news, people, tmp_path):
    loop = make_gpg_key(tmp_path, "Loop", "news-owner@example.org", home="g")  # short: gpg-agent's socket path
    gpg = [*GPG_BATCH, "--homedir", str(loop.home)]
    run([*gpg, "--import"], input=people["bob"].public_key)
    keyring = tmp_path / "two.gpg"
    keyring.write_bytes(run([*gpg, "--export"]).stdout)
    result = cli("member", "import", news, str(keyring))
    assert result.exit_code == 0, result.output
    assert "refused Loop <news-owner@example.org>: news-owner@example.org is an address of the list " \
           "news@example.org" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 added, 1 refused"
    assert [m["email"] for m in member_list(cli)] == [people["bob"].email]


def expiry_warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("listserv: warning:")]


def test_a_key_that_expires_soon_is_pinned_with_a_warning_saying_when(
        cli, news, people, tmp_path, tmp_path_factory):
    soon = make_gpg_user(tmp_path_factory.mktemp("x"), "Soon", "soon@example.org", expire="2d")
    result = add(cli, tmp_path, soon)
    assert result.exit_code == 0, result.output
    [member] = member_list(cli)
    [warning] = expiry_warnings(result)  # one line, on stderr; stdout says what was done
    assert f"the key pinned to soon@example.org stops working at {member['key_expires']}" in warning
    assert f"within {EXPIRY_WARNING_DAYS} days" in warning and warning.endswith(".")
    assert "warning" not in result.stdout
    # The same key pinned by `member set --key`, and met in `member import`.
    cli.ok("member", "remove", news, soon.email)
    add(cli, tmp_path, people["alice"])
    [warning] = expiry_warnings(cli.ok("member", "set", news, people["alice"].email, "--key", write_key(tmp_path, soon)))
    assert "stops working at" in warning and people["alice"].email in warning
    cli.ok("member", "remove", news, people["alice"].email)
    [warning] = expiry_warnings(cli.ok("member", "import", news, write_key(tmp_path, soon)))
    assert "soon@example.org stops working at" in warning


def test_a_key_with_a_long_life_left_gets_no_warning(cli, news, people, tmp_path, tmp_path_factory):
    later = make_gpg_user(tmp_path_factory.mktemp("y"), "Later", "later@example.org", expire="1y")
    result = add(cli, tmp_path, later)
    assert result.exit_code == 0 and expiry_warnings(result) == [] and result.stderr == ""
    assert add(cli, tmp_path, people["bob"]).stderr == ""  # no expiry at all


def test_member_import_prints_a_hostile_user_id_as_escapes(cli, news, tmp_path):
    """A key's user id is what its maker typed: terminal escape sequences, line separators and
    bidi overrides reach the admin's terminal only as visible escapes."""
    hostile = forge.ForgedKey("Eve\x1b]0;pwned\x07\x1b[2J\u2028\u202e <eve@example.com>".encode())
    keyfile = tmp_path / "eve.pgp"
    keyfile.write_bytes(hostile.certificate())  # sign-only: refused, and so named in the output
    result = cli("member", "import", news, str(keyfile))
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.stdout.splitlines() if line.startswith("refused ")]
    assert "\x1b" not in result.stdout and "\u2028" not in result.stdout and "\u202e" not in result.stdout
    assert line.startswith("refused Eve\\x1b]0;pwned\\x07\\x1b[2J\\u2028\\u202e <eve@example.com>: ")
