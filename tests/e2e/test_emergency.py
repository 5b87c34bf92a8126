"""The emergency switch and newsletter lists end to end (issue 14, points 3 and 6): an admin
switches the emergency on by signed mail, every admin hears who did; an ordinary post and a
member's alert then wait for the admins, an admin's alert still reaches everyone at once; off
again, posts flow. On a newsletter list (post_senders = admins) a member's post is refused with
the uniform 550, or held when hold_refused_posts is on, and an admin's goes out."""

from __future__ import annotations

import time

import pytest

from listserv.errors import Unauthorized
from tests.helpers import mail as mf
from tests.helpers.cli import make_site
from tests.helpers.members_clients import read_reply, text_of
from tests.helpers.server import ServeProcess
from tests.helpers.sink import Sink
from tests.helpers.smtp import submit

LIST = "news@example.org"
URGENT = "news+urgent@example.org"
REQUEST = "news-request@example.org"


@pytest.fixture(scope="module")
def site(tmp_path_factory, people):
    base = tmp_path_factory.mktemp("emergency")
    cli, list_key, fingerprint = make_site(base, people, {"alice": "immediate", "bob": "immediate",
                                                         "rita": "immediate", "sally": "immediate"})
    for admin in ("bob", "rita"):
        cli.ok("member", "set", LIST, people[admin].email, "--role", "admin")
    with Sink() as sink, ServeProcess(cli.home, "--relay", f"127.0.0.1:{sink.port}") as proc:
        yield cli, list_key, fingerprint, sink, proc


def ask(site, user, *lines: str) -> str:
    """`user`'s request; the text of the reply, read with their own tool."""
    cli, list_key, fingerprint, sink, proc = site
    before = len(sink.messages)
    raw = mf.post(user, list_key, body="\n".join([f"x-list-name: {LIST}", *lines, ""]), subject="r", to=REQUEST)
    assert submit(proc.port, REQUEST, raw)[0] == 250
    return text_of(read_reply(wait(sink, before, user, f"From: News <{REQUEST}>"), user, list_key, fingerprint)[1])


def wait(sink, before: int, user, marker: str):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for message in list(sink.messages)[before:]:
            if message.rcpt_tos == (user.email,) and marker.encode() in message.data:
                return message
        time.sleep(0.1)
    raise AssertionError(f"nothing with {marker!r} reached {user.email}")


def send(site, user, address: str, body: str) -> str:
    """Submit a post or alert; the log line saying what became of it: held, or fanned out."""
    _, list_key, _, _, proc = site
    code, text = submit(proc.port, address, mf.post(user, list_key, body=body, to=address))
    assert code == 250, text
    qid = text.split()[-1]
    return proc.wait_log(rf"(held|fanned-out) qid={qid}\b[^\n]*").group(0)


def admins_told(site, before: int, admin, words: str) -> str:
    _, list_key, fingerprint, sink, _ = site
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for message in list(sink.messages)[before:]:
            if message.rcpt_tos == (admin.email,) and b"BEGIN PGP MESSAGE" in message.data:
                text = " ".join(text_of(read_reply(message, admin, list_key, fingerprint)[1]).split())
                if words in text:
                    return text
        time.sleep(0.1)
    raise AssertionError(f"{admin.email} was not told {words!r}")


def test_in_an_emergency_posts_wait_and_only_an_admins_alert_goes_out_at_once(site, people):
    cli, _, _, sink, _ = site
    alice, bob, rita, sally = people["alice"], people["bob"], people["rita"], people["sally"]
    before = len(sink.messages)
    assert "The emergency is on" in ask(site, bob, "x-emergency: on")
    admins_told(site, before, rita, "switched the emergency on")  # the other admin hears who switched it
    assert cli.json("list", "show", LIST)["options"]["emergency"] is True
    twice = ask(site, bob, "x-emergency: on")
    assert "The emergency is already on." in twice and "Nothing was done." in twice
    assert "x-emergency" in ask(site, alice, "x-emergency: off")  # a member may not switch it
    assert cli.json("list", "show", LIST)["options"]["emergency"] is True

    before = len(sink.messages)
    assert "reason=emergency" in send(site, alice, LIST, "Is this real?")
    assert "because the list's emergency is on" in admins_told(site, before, rita, "was held")
    assert "reason=emergency" in send(site, sally, URGENT, "Panic!")  # a member's alert waits too
    assert send(site, bob, URGENT, "The list is compromised.").startswith("fanned-out")
    assert len(cli.json("held", LIST)) == 2

    assert "The emergency is off" in ask(site, rita, "x-emergency: off")
    assert send(site, alice, LIST, "All clear.").startswith("fanned-out")
    # Switched on the server: every admin hears of that too.
    before = len(sink.messages)
    assert "notice to the admins of news@example.org queued as" in cli.ok("list", "set", LIST, "emergency", "on").stdout
    admins_told(site, before, rita, "was switched on on the server")
    assert "queued" not in cli.ok("list", "set", LIST, "emergency", "on").stdout  # no change, no notice
    cli.ok("list", "set", LIST, "emergency", "off")


def test_a_newsletter_takes_posts_from_admins_only(site, people):
    cli, _, _, sink, proc = site
    alice, bob, _, rita = people["alice"], people["bob"], people["sally"], people["rita"]
    cli.ok("list", "set", LIST, "post_senders", "admins")
    _, list_key, _, _, _ = site
    assert submit(proc.port, LIST, mf.post(alice, list_key, body="a reply to the newsletter")) == \
        (550, f"5.7.1 {Unauthorized.text}")
    assert cli.json("rejections", LIST)[-1]["reason"] == "post-not-allowed"
    assert send(site, bob, LIST, "This week's newsletter.").startswith("fanned-out")
    cli.ok("list", "set", LIST, "hold_refused_posts", "true")
    before = len(sink.messages)
    assert "reason=not-a-poster" in send(site, alice, LIST, "a reply, held")
    assert "because only admins post to this list" in admins_told(site, before, rita, "was held")
    cli.ok("list", "set", LIST, "post_senders", "members")
