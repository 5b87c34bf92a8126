"""The request address end to end: members' signed commands to news-request@ over SMTP, run
by `listserv serve`, answered by one encrypted reply to the signer -- read with the member's
own tool (GnuPG, Sequoia, RNP)."""

from __future__ import annotations

import base64
import email
import json
import os
import subprocess
import sys
import time
from email import policy

import pytest

from tests.helpers import mail as mf
from tests.helpers.cli import make_site
from tests.helpers.keys import make_gpg_user, make_rnp_user, make_sq_user
from tests.helpers.members_clients import decrypt, encrypted_part, read_reply, text_of
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
REQUEST = "news-request@example.org"
NOT_ACCEPTED = "5.7.1 Not accepted: this list takes only posts signed by a current member's key."


@pytest.fixture
def site(tmp_path, people):
    cli, list_key, fingerprint = make_site(tmp_path, people, {"alice": "immediate", "sally": "immediate",
                                                              "rita": "digest", "bob": "immediate"})
    cli.ok("member", "set", LIST, people["bob"].email, "--role", "admin")
    return cli, list_key, fingerprint


def request(user, list_key, *lines: str, name: str = LIST, style: str = "pgpmime") -> bytes:
    body = "\n".join([f"x-list-name: {name}", *lines, "", "-- ", "sent from my phone"])
    return mf.post(user, list_key, body=body, subject="request", to=REQUEST, style=style)


def members(cli) -> dict[str, dict]:
    return {m["email"]: m for m in json.loads(cli.ok("member", "list", LIST, "--json").stdout)}


@pytest.mark.parametrize("key", ["alice", "sally", "rita"])
def test_a_member_changes_their_mode_and_the_reply_reaches_only_them_signed_by_the_list(site, people, key):
    cli, list_key, fingerprint = site
    user = people[key]
    mode = "digest" if members(cli)[user.email]["mode"] == "immediate" else "immediate"
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        code, text = submit(proc.port, REQUEST, request(user, list_key, f"x-mode: {mode}", "x-status"))
        assert code == 250 and "Queued as" in text
        [reply] = sink.wait_for(1)
        proc.wait_log(r"request qid=\S+ list=news@example.org signer=\S+ commands=mode,status outcome=done")
    assert reply.rcpt_tos == (user.email,)  # the pinned address, nobody else
    assert members(cli)[user.email]["mode"] == mode
    [shown] = json.loads(cli.ok("requests", LIST, "--json").stdout)
    assert (shown["pseudonym"], shown["commands"], shown["outcome"]) == (user.name, ["mode", "status"], "done")
    table = cli.ok("requests", LIST).stdout
    assert "x-mode x-status" in table and user.email not in table and mode not in table.split("\n", 1)[1]
    outer, inner = read_reply(reply, user, list_key, fingerprint)
    assert outer["Auto-Submitted"] == "auto-replied" and outer["From"].addresses[0].addr_spec == REQUEST
    assert inner["Subject"] == "[News] Your request to News" and inner["Auto-Submitted"] == "auto-replied"
    body = text_of(inner)
    assert f"> x-mode: {mode}\nYour mode is {mode}." in body.replace("\r\n", "\n")
    assert f"You are {user.name}, mode {mode}, role member" in body


@pytest.mark.parametrize("style", ["inline", "mutt"])
def test_a_request_as_gpg_on_the_command_line_or_mutt_writes_it_runs(site, people, style):
    cli, list_key, fingerprint = site
    alice = people["alice"]
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, REQUEST, request(alice, list_key, "x-mode digest", style=style))[0] == 250
        [reply] = sink.wait_for(1)
    assert members(cli)[alice.email]["mode"] == "digest"
    assert "Your mode is digest." in text_of(read_reply(reply, alice, list_key, fingerprint)[1])


def test_help_lists_the_commands_and_get_listkey_attaches_the_lists_key(site, people):
    cli, list_key, fingerprint = site
    alice = people["alice"]
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, REQUEST, request(alice, list_key, "X-HELP", "x-get-listkey"))[0] == 250
        [reply] = sink.wait_for(1)
    _, inner = read_reply(reply, alice, list_key, fingerprint)
    body = text_of(inner)
    for keyword in ("x-help", "x-status", "x-get-listkey", "x-mode: immediate|digest", "x-leave"):
        assert keyword in body
    [key] = [p for p in inner.walk() if p.get_content_type() == "application/pgp-keys"]
    assert key.get_filename() == "list-key.asc"
    assert key.get_content().strip() == list_key.strip()


def test_a_bad_line_runs_nothing_and_the_reply_names_it(site, people):
    cli, list_key, fingerprint = site
    sally = people["sally"]
    before = members(cli)
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, REQUEST, request(sally, list_key, "x-mode: digest", "x-frobnicate"))[0] == 250
        [reply] = sink.wait_for(1)
        assert submit(proc.port, REQUEST, request(sally, list_key, "x-mode: digest", name="tips@example.org"))[0] == 250
        [_, wrong_list] = sink.wait_for(2)
    assert members(cli) == before  # the valid x-mode did not run either
    assert "Line 3 (x-frobnicate): there is no command x-frobnicate; nothing was done." in \
        text_of(read_reply(reply, sally, list_key, fingerprint)[1])
    assert "does not name this list (x-list-name: news@example.org); nothing was done." in \
        text_of(read_reply(wrong_list, sally, list_key, fingerprint)[1])


def test_leave_removes_the_member_and_their_key_confirms_to_them_tells_the_admins_and_stops_their_posts(site, people):
    cli, list_key, fingerprint = site
    rita, bob = people["rita"], people["bob"]
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, REQUEST, request(rita, list_key, "x-leave"))[0] == 250
        replies = sink.wait_for(2)
        code, text = submit(proc.port, LIST, mf.post(rita, list_key, body="am I still here?"))
    assert (code, text) == (550, NOT_ACCEPTED)
    assert rita.email not in members(cli)
    assert rita.fingerprint not in cli.ok("list", "show", LIST).stdout
    by = {r.rcpt_tos: r for r in replies}
    assert sorted(by) == [(bob.email,), (rita.email,)]  # the only admin, and the leaver
    confirmation = text_of(read_reply(by[(rita.email,)], rita, list_key, fingerprint)[1])
    assert "You have left news@example.org." in confirmation
    notice = read_reply(by[(bob.email,)], bob, list_key, fingerprint)[1]
    assert notice["Subject"] == "[News] Rita left News"
    assert rita.email not in text_of(notice) and rita.fingerprint not in text_of(notice)


def test_the_last_admin_cannot_leave(site, people):
    cli, list_key, fingerprint = site
    bob = people["bob"]
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, REQUEST, request(bob, list_key, "x-leave"))[0] == 250
        [reply] = sink.wait_for(1)
    assert bob.email in members(cli)
    assert "You are the list's last admin, who cannot leave" in text_of(read_reply(reply, bob, list_key, fingerprint)[1])


def test_an_outsider_an_unencrypted_request_and_a_replayed_one_are_refused_alike_and_nothing_runs(site, people):
    cli, list_key, _ = site
    alice = people["alice"]
    signed_only = request(alice, list_key, "x-mode: digest", style="signed")
    good = request(alice, list_key, "x-status")
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, REQUEST, request(people["mallory"], list_key, "x-help")) == (550, NOT_ACCEPTED)
        assert submit(proc.port, REQUEST, signed_only) == (550, NOT_ACCEPTED)
        assert submit(proc.port, REQUEST, good)[0] == 250
        sink.wait_for(1)
        assert submit(proc.port, REQUEST, good) == (550, NOT_ACCEPTED)  # the same signature again
        assert submit(proc.port, LIST, good) == (550, NOT_ACCEPTED)  # a request is not a post
    assert members(cli)[alice.email]["mode"] == "immediate"
    reasons = [r["reason"] for r in json.loads(cli.ok("rejections", LIST, "--json").stdout)]
    assert reasons == ["unknown-key", "not-encrypted", "replay", "wrong-list"]


def test_a_request_encrypted_only_to_another_lists_key_runs_nothing(site, people):
    """Both lists' secret keys are in the home's one keyring, so gpg can open it; but a request
    is honoured only when encrypted to its own list's key, whatever its x-list-name says."""
    cli, list_key, _ = site
    alice = people["alice"]
    cli.ok("list", "create", "tips@example.org", "--name", "Tips")
    tips_key = cli.ok("list", "key", "tips@example.org").stdout.encode()
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, REQUEST, request(alice, tips_key, "x-mode: digest")) == (550, NOT_ACCEPTED)
        assert submit(proc.port, REQUEST, request(alice, list_key, "x-status"))[0] == 250
        sink.wait_for(1)  # the reply to the request that was encrypted to news@'s key
    assert members(cli)[alice.email]["mode"] == "immediate" and len(sink.messages) == 1
    [rejection] = json.loads(cli.ok("rejections", LIST, "--json").stdout)
    assert (rejection["reason"], rejection["kind"], rejection["signer"]) == \
        ("not-encrypted-to-list", "request", alice.fingerprint)
    assert [r["commands"] for r in json.loads(cli.ok("requests", LIST, "--json").stdout)] == [["status"]]


def test_a_request_marked_auto_submitted_runs_nothing_and_gets_no_reply(site, people):
    cli, list_key, _ = site
    alice = people["alice"]
    raw = request(alice, list_key, "x-mode: digest")
    marked = raw.replace(b"\r\nSubject:", b"\r\nAuto-Submitted: auto-replied\r\nSubject:", 1)
    assert marked != raw
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, REQUEST, marked) == (550, NOT_ACCEPTED)
    assert members(cli)[alice.email]["mode"] == "immediate" and sink.messages == []
    assert json.loads(cli.ok("rejections", LIST, "--json").stdout)[-1]["reason"] == "auto-submitted"


def test_a_post_that_begins_with_commands_is_refused_with_the_request_address(site, people):
    cli, list_key, _ = site
    post = mf.post(people["alice"], list_key, body="x-leave\n\nplease take me off")
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        code, text = submit(proc.port, LIST, post)
    assert (code, text) == (550, "5.7.0 This post begins with list commands (x-...); send them to "
                                 "news-request@example.org instead.")
    assert sink.messages == []


def test_an_admin_runs_the_list_by_mail_and_every_admin_is_told(site, people):
    cli, list_key, fingerprint = site
    bob, alice, sally, rita = people["bob"], people["alice"], people["sally"], people["rita"]
    cli.ok("member", "set", LIST, alice.email, "--role", "admin")
    lines = ("x-list-members", f"x-set-member: {sally.email} name=Sal mode=digest",
             f"x-remove-member: {rita.email}", "x-set-option: subject_prefix [Tips]", "x-show-options")
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, REQUEST, request(bob, list_key, *lines))[0] == 250
        mail = sink.wait_for(3)  # the reply to bob, and the change notice to each admin
    now = members(cli)
    assert rita.email not in now and (now[sally.email]["name"], now[sally.email]["mode"]) == ("Sal", "digest")
    assert json.loads(cli.ok("list", "show", LIST, "--json").stdout)["options"]["subject_prefix"] == "[Tips]"
    assert rita.fingerprint not in cli.ok("list", "show", LIST).stdout
    by = {}
    for copy in mail:
        by.setdefault(copy.rcpt_tos, []).append(copy)
    assert sorted(by) == [(alice.email,), (bob.email,)]
    texts = [text_of(read_reply(c, bob, list_key, fingerprint)[1]) for c in by[(bob.email,)]]
    reply = next(t for t in texts if "line by line" in t)
    assert f"<{alice.email}>" in reply and f"<{rita.email}>" in reply  # the roster, as it stood
    assert "subject_prefix = '[Tips]'" in reply
    [notice] = [read_reply(c, alice, list_key, fingerprint)[1] for c in by[(alice.email,)]]
    assert notice["Subject"].endswith("Bob changed News by a signed request")
    assert f"removed Rita <{rita.email}>" in text_of(notice) and "set subject_prefix to '[Tips]'" in text_of(notice)


def test_admin_commands_are_for_admins_and_a_failing_one_undoes_the_request(site, people):
    cli, list_key, fingerprint = site
    alice, bob, sally = people["alice"], people["bob"], people["sally"]
    before = members(cli)
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, REQUEST, request(alice, list_key, "x-list-members"))[0] == 250
        [denied] = sink.wait_for(1)
        assert submit(proc.port, REQUEST, request(bob, list_key, f"x-set-member: {sally.email} mode=digest",
                                                  "x-set-option: max_signature_age soon"))[0] == 250
        [_, undone] = sink.wait_for(2)
        assert submit(proc.port, REQUEST, request(bob, list_key, f"x-remove-member: {bob.email}"))[0] == 250
        [_, _, last] = sink.wait_for(3)
    assert members(cli) == before
    assert "Line 2 (x-list-members): only the list's admins may use x-list-members; nothing was done." in \
        text_of(read_reply(denied, alice, list_key, fingerprint)[1])
    assert sally.email not in text_of(read_reply(denied, alice, list_key, fingerprint)[1])
    undone_text = text_of(read_reply(undone, bob, list_key, fingerprint)[1])
    assert "Line 3 (x-set-option: max_signature_age soon):" in undone_text and "Nothing was done." in undone_text
    assert "is the last admin of news@example.org" in text_of(read_reply(last, bob, list_key, fingerprint)[1])


def key_part(user, binary: bool = False) -> bytes:
    head = 'Content-Type: application/pgp-keys; name="key.asc"\r\nContent-Disposition: attachment; filename="key.asc"\r\n'
    if binary:
        binary_key = subprocess.run(["gpg", "--dearmor"], input=user.public_key, capture_output=True, check=True).stdout
        data = base64.encodebytes(binary_key).replace(b"\n", b"\r\n")
        return (head + "Content-Transfer-Encoding: base64\r\n\r\n").encode() + data
    return (head + "\r\n").encode() + user.public_key.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def request_with_keys(user, list_key, lines: list[str], keys: list[bytes]) -> bytes:
    body = "\n".join([f"x-list-name: {LIST}", *lines, ""])
    inner = mf.protected(user, REQUEST, "request", {}, mf.text_part(body), *keys)
    outer = mf.outer_subject(mf.headers(user, to=REQUEST, subject="request"), "...")
    return mf.message(outer, mf.encrypted_entity(mf.sign_and_encrypt(user, list_key, inner, to_self=True)))


@pytest.mark.parametrize("maker, binary", [("gpg", False), ("sq", False), ("rnp", True)])
def test_an_admin_adds_a_member_whose_key_is_attached_and_the_new_member_can_post(site, people, tmp_path_factory,
                                                                                 maker, binary):
    cli, list_key, fingerprint = site
    bob = people["bob"]
    make = {"gpg": make_gpg_user, "sq": make_sq_user, "rnp": make_rnp_user}[maker]
    dave = make(tmp_path_factory.mktemp(f"dave-{maker}"), "Dave", f"dave-{maker}@example.net")
    raw = request_with_keys(bob, list_key, [f"x-add-member: {dave.email} name=Dave mode=digest"],
                            [key_part(dave, binary)])
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, REQUEST, raw)[0] == 250
        mail = sink.wait_for(2)  # the reply, and the change notice to the admin
        assert submit(proc.port, LIST, mf.post(dave, list_key, body="hello from Dave"))[0] == 250
    added = members(cli)[dave.email]
    assert (added["fingerprint"], added["name"], added["mode"]) == (dave.fingerprint, "Dave", "digest")
    texts = [text_of(read_reply(c, bob, list_key, fingerprint)[1]) for c in mail]
    assert any(f"Added Dave <{dave.email}>" in t for t in texts)
    assert any(f"added Dave <{dave.email}>" in t for t in texts)


def test_add_member_refuses_two_keys_without_key_and_a_failed_add_leaves_no_key_behind(site, people, tmp_path_factory):
    cli, list_key, fingerprint = site
    bob, alice = people["bob"], people["alice"]
    base = tmp_path_factory.mktemp("keys")
    erin, fred = make_gpg_user(base, "Erin", "erin@example.net"), make_gpg_user(base, "Fred", "fred@example.net")
    two = request_with_keys(bob, list_key, [f"x-add-member: {erin.email}"], [key_part(erin), key_part(fred)])
    taken = request_with_keys(bob, list_key, [f"x-add-member: fred@example.net key={fred.fingerprint}",
                                              f"x-add-member: {alice.email}"], [key_part(erin), key_part(fred)])
    keys_before = cli.ok("list", "show", LIST).stdout
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, REQUEST, two)[0] == 250
        [first] = sink.wait_for(1)
        assert submit(proc.port, REQUEST, taken)[0] == 250
        [_, second] = sink.wait_for(2)
    assert erin.email not in members(cli) and fred.email not in members(cli)
    assert "holds 2 matching keys" in text_of(read_reply(first, bob, list_key, fingerprint)[1])
    assert "Line 3 (x-add-member: alice@example.org):" in text_of(read_reply(second, bob, list_key, fingerprint)[1])
    listed = subprocess.run(["gpg", "--homedir", str(cli.home / "keys"), "--list-keys", fred.fingerprint],
                            capture_output=True)
    assert listed.returncode != 0  # Fred's key was not kept: his x-add-member was undone
    assert cli.ok("list", "show", LIST).stdout == keys_before


def test_a_captured_request_sent_again_as_a_post_hears_what_any_outsider_hears(site, people):
    cli, list_key, _ = site
    captured = request(people["alice"], list_key, "x-status", style="mutt")  # no protected To to check
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, REQUEST, captured)[0] == 250
        sink.wait_for(1)
        assert submit(proc.port, LIST, captured) == (550, NOT_ACCEPTED)  # not "begins with list commands"


def test_commands_are_read_from_the_first_body_part_only_never_from_a_forwarded_message(site, people):
    cli, list_key, fingerprint = site
    alice = people["alice"]
    forwarded = (b"Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
                 b"From: someone <someone@example.net>\r\nSubject: hi\r\n"
                 b"Content-Type: text/plain\r\n\r\nx-list-name: news@example.org\r\nx-mode: digest\r\n")
    html = b"Content-Type: text/html\r\n\r\n<p>see the message below</p>\r\n"
    inner = mf.protected(alice, REQUEST, "fwd", {}, html, forwarded)
    raw = mf.message(mf.outer_subject(mf.headers(alice, to=REQUEST), "..."),
                     mf.encrypted_entity(mf.sign_and_encrypt(alice, list_key, inner, to_self=True)))
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, REQUEST, raw)[0] == 250
        [reply] = sink.wait_for(1)
    assert members(cli)[alice.email]["mode"] == "immediate"
    assert "does not name this list" in text_of(read_reply(reply, alice, list_key, fingerprint)[1])


def test_no_list_may_be_named_like_another_lists_request_address(site):
    cli, _, _ = site
    result = cli("list", "create", "news-request@example.org", "--name", "Shadow")
    assert result.exit_code == 2 and "'-request'" in result.output


HOOK = """
import asyncio, os, listserv.pipeline as pipeline, listserv.server as server
_forget = pipeline.forget_keys
def forget_keys(store, keyring, done):
    marker = os.environ.get("REQUEST_CRASH_MARKER")
    if marker and os.path.exists(marker):
        os.unlink(marker)
        os._exit(9)  # kill -9 after the reply was queued and the submission removed, keys not yet
    return _forget(store, keyring, done)
pipeline.forget_keys = forget_keys
_distributor = server.Server._distributor
async def slow(self):
    await asyncio.sleep(float(os.environ.get("REQUEST_SLOW_START", "0")))
    await _distributor(self)
server.Server._distributor = slow
"""


@pytest.fixture
def hooked(tmp_path, monkeypatch):
    folder = tmp_path / "hook"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(HOOK)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), *sys.path]))
    return monkeypatch


def test_a_crash_in_the_middle_of_a_leave_repeats_neither_the_reply_nor_the_notice(site, people, tmp_path, hooked):
    cli, list_key, _ = site
    rita, bob = people["rita"], people["bob"]
    marker = tmp_path / "crash-once"
    marker.write_text("")
    hooked.setenv("REQUEST_CRASH_MARKER", str(marker))
    with Sink() as sink:
        proc = ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}").start()
        assert submit(proc.port, REQUEST, request(rita, list_key, "x-leave"))[0] == 250
        proc.proc.wait(60)
        proc.stop()
        assert not marker.exists()
        with ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as again:
            sink.wait_for(2)
            again.wait_log(r"listening on")
            time.sleep(2)
            log = again.log
    assert "quarantined" not in log, log
    assert sorted(m.rcpt_tos for m in sink.messages) == [(bob.email,), (rita.email,)]  # one reply, one notice
    assert rita.email not in members(cli)


def test_a_post_accepted_before_the_members_leave_still_goes_out(site, people, hooked):
    cli, list_key, _ = site
    rita, alice = people["rita"], people["alice"]
    hooked.setenv("REQUEST_SLOW_START", "3")  # both wait in the spool before the first is taken
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(rita, list_key, body="goodbye, all"))[0] == 250
        assert submit(proc.port, REQUEST, request(rita, list_key, "x-leave"))[0] == 250
        proc.wait_log(r"request qid=.*outcome=done")
        proc.wait_log(r"fanned-out qid=")
        log = proc.log
        copies = sink.wait_for(3)
    assert "quarantined" not in log, log
    assert (alice.email,) in [c.rcpt_tos for c in copies]  # the post reached the members


def test_a_paused_member_gets_alerts_but_no_posts_until_resumed(site, people):
    cli, list_key, fingerprint = site
    alice, sally = people["alice"], people["sally"]
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, REQUEST, request(alice, list_key, "x-pause", "x-status"))[0] == 250
        [reply] = sink.wait_for(1)
        assert members(cli)[alice.email]["paused"] is True
        assert submit(proc.port, LIST, mf.post(sally, list_key, body="a post"))[0] == 250
        proc.wait_log(r"fanned-out qid=\S+ copies=2 ")  # sally and bob: not alice, not rita (digest)
        assert submit(proc.port, "news+urgent@example.org", mf.post(sally, list_key, body="danger",
                                                                  to="news+urgent@example.org"))[0] == 250
        proc.wait_log(r"fanned-out qid=\S+ copies=4 ")  # an alert reaches everyone, alice too
        cli.ok("member", "resume", LIST, alice.email)
    assert "mode immediate, paused" in text_of(read_reply(reply, alice, list_key, fingerprint)[1])
    assert members(cli)[alice.email]["paused"] is False
    assert cli.ok("member", "pause", LIST, alice.email).stdout == f"paused {alice.email} on {LIST}\n"
