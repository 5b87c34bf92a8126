"""Issue 9, revocations: a revocation of a pinned key is taken in at once, whichever command
brings it; every member pinned to that key stops posting and receiving, and admins are told."""

from __future__ import annotations

import email
import json
import re
from dataclasses import replace
from email import policy
from pathlib import Path

import pytest

from listserv.config import Home
from listserv.errors import Unauthorized
from listserv.model import MailingList, Member
from listserv.notices import to_admins
from listserv.context import Context
from listserv.pipeline import distribute, receive
from listserv.spool import Outgoing
from listserv.stages.authorize import authorize
from listserv.stages.open import Opened
from listserv.stages.route import route

from tests.helpers import mail as mf
from tests.helpers.cli import Cli, assert_refused, make_site, write_key
from tests.helpers.keys import User, keyring_listing, keys_in, make_gpg_user, revoked
from tests.helpers.members_clients import decrypt, encrypted_part
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
OPS = "ops@example.org"
NOT_ACCEPTED = "550 5.7.1 Not accepted: this list takes only posts signed by a current member's key."


def revocation_certificate(user: User) -> bytes:
    """The certificate gpg wrote at key generation, made importable (its leading ':' removed)."""
    certificate = (user.home / "openpgp-revocs.d" / f"{user.fingerprint}.rev").read_bytes()
    return certificate.replace(b":-----BEGIN", b"-----BEGIN")


def key_file(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def revoked_in_keyring(cli: Cli, fingerprint: str) -> bool:
    """gpg's own word on the home's keyring: the key's validity field says 'r'."""
    listing = keyring_listing(cli.home / "keys")
    return any(fields[:2] == ["pub", "r"] and key == fingerprint for fields, key in keys_in("\n".join(listing)))


def members(cli: Cli, address: str = LIST) -> dict[str, dict]:
    return {m["email"]: m for m in cli.json("member", "list", address)}


def applied_line(user: User, address: str = LIST) -> str:
    return (f"The key {user.fingerprint} is revoked: the revocation was applied; "
            f"member {user.email} of {address} can no longer post or receive.")


def queued_notices(cli: Cli) -> list[dict]:
    return [row for row in json.loads(cli.ok("queue", "--json").stdout) if row["kind"] == "notice"]


def fresh(tmp_path_factory, name: str) -> User:
    # A short base path: gpg-agent's socket path must fit in 108 bytes.
    return make_gpg_user(tmp_path_factory.mktemp(name[0].lower()), name, f"{name.lower()}@example.org")


def site_with_carol(tmp_path: Path, tmp_path_factory, people, carol_mode: str = "immediate"):
    """news@ with Alice, Bob (an admin) and a fresh Carol, whose key this test may revoke."""
    cli, list_key, list_fpr = make_site(tmp_path, people, {"alice": "immediate", "bob": "immediate"})
    cli.ok("member", "set", LIST, people["bob"].email, "--role", "admin")
    carol = fresh(tmp_path_factory, "Carol")
    cli.ok("member", "add", LIST, carol.email, "--key", write_key(tmp_path, carol), "--name", "Carol",
           "--mode", carol_mode)
    return cli, list_key, list_fpr, carol


def plain_text(user: User, copy, list_key: bytes, list_fpr: str) -> str:
    plain = decrypt(user, encrypted_part(copy.data), list_key, list_fpr)
    return email.message_from_bytes(plain, policy=policy.default).get_body(("plain",)).get_content()


@pytest.mark.parametrize("form", ["revoked-key", "certificate"])
def test_member_set_key_with_a_revocation_of_the_pinned_key_stops_posting_and_delivery_until_a_new_key(
        tmp_path, tmp_path_factory, people, form):
    cli, list_key, list_fpr, carol = site_with_carol(tmp_path, tmp_path_factory, people)
    alice, bob = people["alice"], people["bob"]
    before = mf.post(carol, list_key, body="signed while the key was good")  # her client cannot sign later
    data = revoked(carol) if form == "revoked-key" else revocation_certificate(carol)

    result = cli("member", "set", LIST, carol.email, "--key", key_file(tmp_path, "carol.rev", data))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == applied_line(carol)
    assert lines[1].startswith(f"notice to the admins of {LIST} queued as ")
    assert len(lines) == 2 and result.stderr == ""
    assert members(cli)[carol.email]["state"] == "suspended"
    assert members(cli)[carol.email]["fingerprint"] == carol.fingerprint
    assert "suspended" in next(row for row in cli.ok("member", "list", LIST).stdout.splitlines()
                                 if carol.email in row)
    assert revoked_in_keyring(cli, carol.fingerprint)

    new_carol = fresh(tmp_path_factory, "Caroline")
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        code, text = submit(proc.port, LIST, before)
        assert (code, text) == (550, NOT_ACCEPTED.removeprefix("550 "))
        rejection = json.loads(cli.ok("rejections", LIST, "--json").stdout)[-1]
        assert rejection["reason"] == "key-revoked"

        assert submit(proc.port, LIST, mf.post(alice, list_key, body="after the revocation"))[0] == 250, proc.log
        proc.wait_log(r"delivered qid=\S+ sent=2 failed=0")  # Alice and Bob: no copy for Carol
        copies = sink.wait_for(3)  # the post to Alice and Bob, the notice to Bob
        assert carol.email not in {c.rcpt_tos[0] for c in copies}
        [notice] = [c for c in copies if "after the revocation" not in plain_text(
            people[c.rcpt_tos[0].split("@")[0]], c, list_key, list_fpr)]
        assert notice.rcpt_tos == (bob.email,)
        text = plain_text(bob, notice, list_key, list_fpr)
        assert carol.fingerprint in text and "Carol" in text and "revoked" in text
        assert "can no longer post" in text and f"member set {LIST} {carol.email} --key" in text

        # The admin pins Carol's new key: she is a member in good standing again.
        result = cli.ok("member", "set", LIST, carol.email, "--key", write_key(tmp_path, new_carol))
        assert result.stdout == (f"updated {carol.email} on {LIST}: the new key replaces the revoked one; "
                                 "the member can post and receive again\n")
        assert (members(cli)[carol.email]["state"], members(cli)[carol.email]["fingerprint"]) == (
            "active", new_carol.fingerprint)
        # The revoked key stays in the keyring, revoked: an old copy of it sent again cannot be pinned.
        [row] = [line for line in keyring_listing(cli.home / "keys") if line.startswith("pub:")
                 and carol.fingerprint.endswith(line.split(":")[4])]
        assert row.split(":")[1] == "r"
        assert submit(proc.port, LIST, mf.post(alice, list_key, body="welcome back"))[0] == 250
        copies = sink.wait_for(6)
        [back] = [c for c in copies[3:] if c.rcpt_tos == (carol.email,)]
        assert "welcome back" in plain_text(new_carol, back, list_key, list_fpr)
    # A key-revoked member is no "unusable key" to report on every post.
    assert re.findall(r"unusable=(\S+)", proc.log) == ["-", "-"]


def test_member_import_applies_the_revocation_of_a_pinned_key(tmp_path, tmp_path_factory, people):
    cli, _, _, carol = site_with_carol(tmp_path, tmp_path_factory, people)
    dave = fresh(tmp_path_factory, "Dave")
    keyring = key_file(tmp_path, "keyring.asc", revoked(carol) + dave.public_key)
    cli.ok("list", "create", OPS, "--name", "Ops")

    result = cli("member", "import", OPS, keyring)
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out[0] == applied_line(carol)
    assert out[1].startswith(f"notice to the admins of {LIST} queued as ")
    assert f"refused Carol <{carol.email}>: the key is revoked" in out
    assert out[-1] == "1 added, 1 refused"
    assert members(cli)[carol.email]["state"] == "suspended"
    assert set(members(cli, OPS)) == {dave.email}
    assert revoked_in_keyring(cli, carol.fingerprint)
    assert len(queued_notices(cli)) == 1


def test_member_add_to_another_list_applies_the_revocation_and_still_refuses_the_key(
        tmp_path, tmp_path_factory, people):
    cli, _, _, carol = site_with_carol(tmp_path, tmp_path_factory, people)
    cli.ok("list", "create", OPS, "--name", "Ops")

    result = cli("member", "add", OPS, carol.email, "--key", key_file(tmp_path, "carol.asc", revoked(carol)))
    assert result.exit_code == 5, result.output
    assert result.stderr == f"listserv: Refused: the key is revoked ({carol.fingerprint}).\n"
    assert result.stdout.splitlines()[0] == applied_line(carol)
    assert members(cli)[carol.email]["state"] == "suspended"
    assert members(cli, OPS) == {}
    assert revoked_in_keyring(cli, carol.fingerprint)
    [notice] = queued_notices(cli)
    assert notice["list"] == LIST


def test_a_revoked_key_sent_again_without_its_revocation_stays_revoked(tmp_path, tmp_path_factory, people):
    cli, _, _, carol = site_with_carol(tmp_path, tmp_path_factory, people)
    unrevoked = write_key(tmp_path, carol)  # the copy the admin had before
    cli.ok("member", "set", LIST, carol.email, "--key", key_file(tmp_path, "carol.rev", revoked(carol)))
    cli.ok("list", "create", OPS, "--name", "Ops")
    again = cli.ok("member", "set", LIST, carol.email, "--key", unrevoked)
    assert again.stdout == (f"The key {carol.fingerprint} is revoked: the revocation had been applied "
                            f"already; member {carol.email} of {LIST} cannot post or receive.\n")
    assert members(cli)[carol.email]["state"] == "suspended"
    refused = cli("member", "add", OPS, carol.email, "--key", unrevoked)
    assert refused.exit_code == 5, refused.output
    assert refused.stderr == f"listserv: Refused: the key is revoked ({carol.fingerprint}).\n"
    assert members(cli, OPS) == {}
    assert len(queued_notices(cli)) == 1  # admins heard once, not on every repeat


def test_a_revocation_of_a_key_no_member_pins_is_refused_and_changes_nothing(cli, news, people, tmp_path,
                                                                             tmp_path_factory):
    cli.ok("member", "add", news, people["alice"].email, "--key", write_key(tmp_path, people["alice"]))
    stranger = fresh(tmp_path_factory, "Eve")
    database = cli.home / "data" / "listserv.json"
    before = database.read_bytes(), keyring_listing(cli.home / "keys")
    certificate = key_file(tmp_path, "eve.rev", revocation_certificate(stranger))
    # A bare certificate for a key the list does not hold applies to nothing.
    assert_refused(cli("member", "set", news, people["alice"].email, "--key", certificate), 5,
                   "no OpenPGP public key")
    assert_refused(cli("member", "set", news, people["alice"].email, "--key",
                       key_file(tmp_path, "eve.asc", revoked(stranger))), 5, "the key is revoked")
    assert (database.read_bytes(), keyring_listing(cli.home / "keys")) == before


def test_the_key_revoked_state_alone_stops_posts_copies_digests_and_notices(tmp_path, tmp_path_factory, people):
    """The member's state is the record: it holds even where the keyring's copy looks fine."""
    cli, list_key, _, carol = site_with_carol(tmp_path, tmp_path_factory, people)
    dave = fresh(tmp_path_factory, "Dave")
    cli.ok("member", "add", LIST, dave.email, "--key", write_key(tmp_path, dave), "--mode", "digest")
    cli.ok("member", "set", LIST, carol.email, "--role", "admin")
    home = Home(cli.home)
    ctx = Context.open(home)
    with ctx.store.transaction() as tx:  # what a revocation leaves, minus the keyring
        for user in (carol, dave):
            tx.update_member(replace(tx.require_member(LIST, user.email), state="suspended"))
    with pytest.raises(Unauthorized) as refused:
        receive(mf.post(carol, list_key), route(LIST, [LIST]), ctx)
    assert refused.value.reason == "key-revoked"

    digests = ctx.digests
    receive(mf.post(people["alice"], list_key, body="For everyone."), route(LIST, [LIST]), ctx)
    [job] = ctx.spool.submissions()
    result = distribute(job, ctx)
    outgoing = Outgoing(ctx.spool)
    assert {r.email for r in outgoing.recipients(result.job)} == {people["alice"].email, people["bob"].email}
    assert result.unusable == () and result.notices == ()
    assert digests.send(LIST) is None  # Dave was its only reader
    snapshot = ctx.store.read()
    [notice] = ctx.outbox.notices([to_admins(ctx.templates, snapshot.roster(LIST), "notice-bounces.txt.j2",
                                             member=snapshot.require_member(LIST, dave.email))])
    assert {r.email for r in outgoing.recipients(notice)} == {people["bob"].email}


def test_authorize_refuses_a_key_revoked_member_whatever_gpg_said():
    """The member's state is the record: it holds even if the keyring never showed the revocation."""
    news = MailingList(LIST, "News", "A" * 40, {}, "2026-01-05T10:00:00Z")
    carol = Member(LIST, "carol@example.org", "C" * 40, "Carol", state="suspended")
    opened = Opened(b"Content-Type: text/plain\r\n\r\nHi\r\n", carol.fingerprint, 1_800_000_000, "d" * 64, True,
                    None, None, decrypted_with=news.fingerprint)
    with pytest.raises(Unauthorized) as refused:
        authorize(opened, route(LIST, [LIST]), news, {carol.fingerprint: carol}, 1_800_000_000)
    assert refused.value.reason == "key-revoked"
    active = Member(LIST, "carol@example.org", "C" * 40, "Carol")
    assert authorize(opened, route(LIST, [LIST]), news, {carol.fingerprint: active}, 1_800_000_000).member == active
