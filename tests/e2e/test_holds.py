"""Held messages end to end (docs/moderation.md): a probation member's post waits, the admin
gets it encrypted with the post attached, and decides by signed mail to news-request@ --
approved, it reaches the members exactly once, also when serve is killed (-9) right after the
approval was accepted; rejected, its poster hears why; discarded, nobody hears of it."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from listserv.config import Home
from listserv.context import Context
from listserv.server import watch_keys
from tests.helpers import mail as mf
from tests.helpers.cli import make_site, write_key
from tests.helpers.members_clients import read_reply, text_of
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
REQUEST = "news-request@example.org"


@pytest.fixture
def site(tmp_path, people):
    cli, list_key, fingerprint = make_site(tmp_path, people, {"alice": "immediate", "bob": "immediate"})
    cli.ok("member", "set", LIST, people["bob"].email, "--role", "admin")
    cli.ok("list", "set", LIST, "new_member_probation", "true")
    sally = people["sally"]  # added while probation is on: a newcomer
    cli.ok("member", "add", LIST, sally.email, "--key", write_key(tmp_path, sally), "--name", sally.name)
    return cli, list_key, fingerprint


def request(user, list_key, *lines: str) -> bytes:
    return mf.post(user, list_key, body="\n".join([f"x-list-name: {LIST}", *lines, ""]), subject="r", to=REQUEST)


def held_id(notice, bob, list_key, fingerprint) -> tuple[str, str]:
    """The id in the admin's notice, and the held post attached to it."""
    _, inner = read_reply(notice, bob, list_key, fingerprint)
    [attached] = [p for p in inner.walk() if p.get_content_type() == "message/rfc822"]
    return re.search(r"\(held ([0-9a-f]{12})\)", inner["Subject"]).group(1), attached.as_string()


def to(messages, user) -> list:
    return [m for m in messages if user.email in m.rcpt_tos]


def held_folder(cli) -> Path:
    return cli.home / "data" / "held" / LIST


def test_an_approved_post_reaches_the_members_once_also_after_kill_9(site, people):
    cli, list_key, fingerprint = site
    alice, bob, sally = people["alice"], people["bob"], people["sally"]
    with Sink() as sink:
        with ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
            assert submit(proc.port, LIST, mf.post(sally, list_key, body="the office moves on Monday"))[0] == 250
            [notice] = sink.wait_for(1)
            assert notice.rcpt_tos == (bob.email,)  # the admin only: nobody else has it
            qid, attached = held_id(notice, bob, list_key, fingerprint)
            assert "the office moves on Monday" in attached
            assert [p.name for p in held_folder(cli).iterdir()] == [qid]
            assert submit(proc.port, REQUEST, request(bob, list_key, f"x-approve: {qid}"))[0] == 250
            proc.wait_log(rf"request qid=\S+ list={LIST} signer=\S+ commands=approve outcome=done")
            proc.kill()  # the approval is done and acknowledged; nothing after it may be lost or doubled
        with ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
            proc.wait_log(rf"fanned-out qid={qid} ")
            proc.wait_log(r"delivered|sent", timeout=30)
            got = sink.wait_for(5)  # the notice, the reply and its notice to the admins, alice's, sally's, bob's copy
    assert len(to(got, alice)) == 1 and len(to(got, sally)) == 1
    assert "the office moves on Monday" in text_of(read_reply(to(got, alice)[0], alice, list_key, fingerprint)[1])
    assert not list(held_folder(cli).iterdir())


def test_reject_tells_the_poster_why_discard_tells_nobody_and_neither_goes_out(site, people):
    cli, list_key, fingerprint = site
    alice, bob, sally = people["alice"], people["bob"], people["sally"]
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(sally, list_key, body="first"))[0] == 250
        assert submit(proc.port, LIST, mf.post(sally, list_key, body="second"))[0] == 250
        notices = sink.wait_for(2)
        ids = dict(reversed(held_id(n, bob, list_key, fingerprint)) for n in notices)
        first = next(i for body, i in ids.items() if "first" in body)
        second = next(i for body, i in ids.items() if "second" in body)
        shown = json.loads(cli.ok("held", LIST, "--json").stdout)
        assert sorted(h["id"] for h in shown) == sorted(ids.values()) and {h["pseudonym"] for h in shown} == {"Sally"}
        wrong = cli("held", "discard", LIST, "000000000000")
        assert wrong.exit_code != 0 and "No held message has the id 000000000000" in wrong.stderr
        assert submit(proc.port, REQUEST, request(bob, list_key, "x-approve: 000000000000"))[0] == 250
        [refused] = sink.wait_for(3)[2:]
        assert "No held message has the id 000000000000" in text_of(read_reply(refused, bob, list_key, fingerprint)[1])
        assert submit(proc.port, REQUEST, request(bob, list_key, f"x-reject: {first} off topic",
                                                  f"x-discard: {second}", "x-held"))[0] == 250
        got = sink.wait_for(6)
    told = to(got, sally)
    assert len(told) == 1 and "Their reason: off topic" in text_of(read_reply(told[0], sally, list_key, fingerprint)[1])
    assert not to(got, alice) and not list(held_folder(cli).iterdir())
    reply = next(m for m in got[3:] if m.rcpt_tos == (bob.email,) and "Your request" in
                 read_reply(m, bob, list_key, fingerprint)[1]["Subject"])
    assert f"{first} is rejected" in text_of(read_reply(reply, bob, list_key, fingerprint)[1])


def test_a_post_held_past_max_days_to_hold_is_discarded_and_the_admins_told(site, people):
    cli, list_key, fingerprint = site
    alice, bob, sally = people["alice"], people["bob"], people["sally"]
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(sally, list_key, body="old news"))[0] == 250
        qid, _ = held_id(sink.wait_for(1)[0], bob, list_key, fingerprint)
    ctx = Context.open(Home(cli.home))
    watch_keys(ctx, time.time() + 6 * 86400)  # within the 7 days: it still waits, the admins are reminded
    assert [p.name for p in held_folder(cli).iterdir()] == [qid]
    watch_keys(ctx, time.time() + 8 * 86400)  # past them: discarded
    assert not list(held_folder(cli).iterdir())
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}"):
        got = sink.wait_for(2)
    texts = sorted(text_of(read_reply(m, bob, list_key, fingerprint)[1]) for m in got)
    assert all(m.rcpt_tos == (bob.email,) for m in got) and not to(got, alice)
    assert "Discarded, held longer than 7 days" in texts[0] and qid in texts[0]
    assert "Waiting for your decision" in texts[1] and qid in texts[1]


def test_member_list_shows_probation_and_member_set_ends_it(site, people):
    cli, _, _ = site
    shown = {m["email"]: m["probation"] for m in json.loads(cli.ok("member", "list", LIST, "--json").stdout)}
    assert shown == {people["alice"].email: False, people["bob"].email: False, people["sally"].email: True}
    assert f"{people['sally'].email}" in cli.ok("member", "list", LIST).stdout
    cli.ok("member", "set", LIST, people["sally"].email, "--probation", "off")
    assert not any(m["probation"] for m in json.loads(cli.ok("member", "list", LIST, "--json").stdout))


def test_a_held_post_whose_sender_was_removed_since_cannot_be_approved(site, people):
    """Removed (or suspended) after the hold: approving it is refused and says why; the post
    stays held for a reject or discard, and nobody gets it."""
    cli, list_key, fingerprint = site
    alice, bob, sally = people["alice"], people["bob"], people["sally"]
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        assert submit(proc.port, LIST, mf.post(sally, list_key, body="held, then gone"))[0] == 250
        [notice] = sink.wait_for(1)
        held, _ = held_id(notice, bob, list_key, fingerprint)
        cli.ok("member", "remove", LIST, sally.email)
        assert submit(proc.port, REQUEST, request(bob, list_key, f"x-approve: {held}"))[0] == 250
        [reply] = sink.wait_for(2)[1:]
        text = " ".join(text_of(read_reply(reply, bob, list_key, fingerprint)[1]).split())
    assert "is no longer a member in good standing; it cannot go out." in text and "Nothing was done." in text
    assert [h["id"] for h in json.loads(cli.ok("held", LIST, "--json").stdout)] == [held]
    assert not to(sink.messages, alice)
