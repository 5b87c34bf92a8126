"""The SMTP front door (listserv.smtpd) in-process, over real loopback SMTP on port 0: what a
sending MTA hears at each command, and what is kept of a message it was told was accepted."""

from __future__ import annotations

import asyncio
import json
import smtplib
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from listserv.config import Home
from listserv.context import Context
from listserv.smtpd import Handler, make_server

from tests.helpers import mail as mf
from tests.helpers.cli import make_site
from tests.helpers.smtp import submit

LIST, TINY = "news@example.org", "tiny@example.org"
DATA_LIMIT = 256 * 1024  # the server's max_data_kb, before any list is known
REFUSED = "550 5.7.1 Not accepted: this list takes only posts signed by a current member's key."


class FrontDoor:
    """listserv.smtpd's handler and protocol on 127.0.0.1:0, with the home's real services."""

    def __init__(self, root: Path, budget: float = 60.0):
        home = Home(root)
        self.services = Context.open(home)
        self.accepted: list = []
        self.checks = ThreadPoolExecutor(2)
        self.lookups = ThreadPoolExecutor(2)
        self.handler = Handler(self.services, checks=self.checks,
                               lookups=self.lookups, budget=budget, on_accepted=self.accepted.append)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "FrontDoor":
        self.thread.start()

        async def start():
            return await self.loop.create_server(make_server(self.handler, "listserv.test", DATA_LIMIT),
                                                 "127.0.0.1", 0)

        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        async def stop():
            self.server.close()
            await self.server.wait_closed()
            await asyncio.sleep(0.05)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.checks.shutdown(wait=True)
        self.lookups.shutdown(wait=True)

    def client(self) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=60)
        client.ehlo("client.test")
        return client

    def spooled(self) -> list[str]:
        return [job.qid for job in self.services.spool.submissions()]


@pytest.fixture(scope="module")
def site(tmp_path_factory, people):
    cli, list_key, _ = make_site(tmp_path_factory.mktemp("smtpd"), people, {"alice": "immediate"})
    cli.ok("list", "create", TINY, "--name", "Tiny")
    cli.ok("list", "set", TINY, "max_message_size_kb", "1")
    cli.ok("list", "set", LIST, "max_message_size_kb", "100")  # below the server's DATA limit
    return cli, list_key


@pytest.fixture
def door(site):
    with FrontDoor(site[0].home) as front:
        yield front


def reply(response: tuple[int, bytes]) -> str:
    return f"{response[0]} {response[1].decode()}"


def test_ehlo_announces_the_size_limit_and_no_starttls_which_is_a_permanent_502(door):
    with door.client() as client:
        assert client.esmtp_features["size"] == str(DATA_LIMIT)
        assert "starttls" not in client.esmtp_features
        assert reply(client.docmd("STARTTLS")) == "502 5.5.1 STARTTLS is not offered here."
        assert client.noop()[0] == 250  # the session goes on


def test_mail_and_rcpt_to_a_list_are_accepted_with_enhanced_codes(door):
    with door.client() as client:
        assert reply(client.mail("alice@example.org")) == "250 2.1.0 Sender ok"
        assert reply(client.rcpt("<News@Example.org>")) == "250 2.1.5 Recipient ok"


@pytest.mark.parametrize("recipient", ["nobody@example.org", "news@example.net", "postmaster"])
def test_a_recipient_that_is_no_list_here_is_refused_at_rcpt(door, recipient):
    with door.client() as client:
        client.mail("alice@example.org")
        assert reply(client.rcpt(recipient)) == "550 5.1.1 No such list here."
        assert reply(client.rcpt(LIST)) == "250 2.1.5 Recipient ok"  # the transaction goes on


def test_one_list_per_message(door):
    with door.client() as client:
        client.mail("alice@example.org")
        assert client.rcpt(LIST)[0] == 250
        assert reply(client.rcpt(TINY)) == \
            "452 4.5.3 One list per message; send it again for the other recipients."
        assert reply(client.rcpt(LIST)).startswith("452 4.5.3")


def test_a_declared_size_above_every_list_is_refused_at_mail_and_a_bounce_never_is(door):
    with door.client() as client:
        assert reply(client.mail("alice@example.org", ["SIZE=999999999"])) == \
            "552 5.3.4 The message is larger than this server accepts."
        assert reply(client.mail("alice@example.org", ["SIZE=200000"])) == \
            "552 5.3.4 The message is larger than this list accepts (at most 100 KB)."
        assert reply(client.mail("", ["SIZE=200000"])) == "250 2.1.0 Sender ok"


def test_a_declared_size_above_the_lists_own_is_refused_at_rcpt(door):
    with door.client() as client:
        assert client.mail("alice@example.org", ["SIZE=4096"])[0] == 250
        assert reply(client.rcpt(TINY)) == "552 5.3.4 The message is larger than this list accepts (at most 1 KB)."
        assert reply(client.rcpt(LIST)) == "250 2.1.5 Recipient ok"


def test_data_before_rcpt_is_a_sequence_error(door):
    with door.client() as client:
        client.mail("alice@example.org")
        assert client.docmd("DATA")[0] == 503


def test_a_members_post_is_queued_exactly_as_sent_with_nothing_added(door, site, people):
    _, list_key = site
    raw = mf.post(people["alice"], list_key, body="through the front door")
    # Lines that begin with a dot arrive dot-stuffed (submit() stuffs them) and must be unstuffed.
    raw = raw.replace(b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)",
                      b".a line that begins with a dot\r\n..and two", 1)
    assert b"\r\n.a line" in raw
    code, text = submit(door.port, LIST, raw, mail_from="alice@example.org")
    assert (code, text.split(" Queued as ")[0]) == (250, "2.0.0")
    qid = text.split(" Queued as ")[1]
    assert qid in door.spooled()
    [accepted] = door.accepted
    assert (accepted.job.qid, accepted.signer) == (qid, people["alice"].fingerprint)
    [job] = [job for job in door.services.spool.submissions() if job.qid == qid]
    assert door.services.keyring.unseal(door.services.spool.read_submission(job)) == raw  # no X-Peer


def test_a_post_not_signed_by_a_member_is_refused_and_nothing_is_kept(door, site, people):
    _, list_key = site
    before = door.spooled()
    raw = mf.post(people["mallory"], list_key, body="let me in")
    assert submit(door.port, LIST, raw, mail_from="mallory@example.com") == (550, REFUSED[4:])
    assert door.spooled() == before and door.accepted == []


def test_a_refusal_is_kept_for_admins_and_a_bug_keeping_it_never_reaches_the_client(door, site, people,
                                                                                     monkeypatch):
    cli, list_key = site
    raw = mf.post(people["mallory"], list_key, body="let me in")
    assert submit(door.port, LIST, raw, mail_from="mallory@example.com") == (550, REFUSED[4:])
    assert json.loads(cli.ok("rejections", LIST, "--json").stdout)[-1]["reason"] == "unknown-key"

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the rejection record")
    monkeypatch.setattr("listserv.smtpd.refused", broken)
    code, text = submit(door.port, LIST, raw, mail_from="mallory@example.com")
    assert (code, "RuntimeError" in text) == (451, False)


def test_a_message_over_the_servers_limit_is_refused_after_data_and_the_session_goes_on(door):
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (DATA_LIMIT // 1000 + 10)
    before = door.spooled()
    assert submit(door.port, LIST, big) == (552, "5.3.4 The message is larger than this server accepts.")
    assert door.spooled() == before
    with door.client() as client:
        assert client.mail("alice@example.org")[0] == 250


def test_a_line_longer_than_smtp_allows_is_refused(door):
    long_line = b"Subject: long\r\n\r\n" + b"y" * 1001 + b"\r\n"
    assert submit(door.port, LIST, long_line) == \
        (500, "5.5.2 A line of the message is longer than SMTP allows (1000 characters).")


def test_a_bounce_to_a_verp_address_is_taken_whatever_its_token(door):
    assert submit(door.port, "news-bounces+aaaaaaaaaaaaaaaa@example.org", b"Subject: Undelivered\r\n\r\nGone.\r\n",
                  mail_from="") == (250, "2.0.0 Bounce noted")


def test_commands_pipelined_after_the_message_are_answered_in_order(door, site, people):
    with socket.create_connection(("127.0.0.1", door.port), timeout=30) as raw:
        stream = raw.makefile("rb")
        assert stream.readline().startswith(b"220 ")
        raw.sendall(b"HELO client.test\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<news@example.org>\r\nDATA\r\n")
        replies = [stream.readline() for _ in range(4)]
        assert [line[:3] for line in replies] == [b"250", b"250", b"250", b"354"]
        raw.sendall(b"Subject: not signed\r\n\r\nhello\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        assert stream.readline().decode().rstrip("\r\n") == REFUSED
        assert stream.readline().startswith(b"250")  # RSET
        assert stream.readline().startswith(b"250")  # NOOP
        assert stream.readline().startswith(b"221")  # QUIT


def test_a_check_past_its_time_budget_is_answered_451_and_keeps_nothing(site, people):
    cli, list_key = site
    raw = mf.post(people["alice"], list_key, body="too slow to check")
    with FrontDoor(cli.home, budget=0.0) as door:
        before = door.spooled()
        assert submit(door.port, LIST, raw, mail_from="alice@example.org") == \
            (451, "4.3.0 The message took too long to check; please try again later.")
    # The pools are shut down: the abandoned check has ended, and it wrote nothing.
    assert door.spooled() == before and door.accepted == []
    with FrontDoor(cli.home) as door:  # the client's retry is not taken for a replay
        assert submit(door.port, LIST, raw, mail_from="alice@example.org")[0] == 250
