"""The relay client against a real SMTP server on loopback."""

from __future__ import annotations

import asyncio

import pytest

from listserv.smtpclient import SMTPClient, SMTPConnectionError, SMTPReplyError, dot_safe

from .sink import Sink


def run(coro):
    return asyncio.run(coro)


def test_sends_one_transaction_per_copy_and_reuses_the_connection():
    async def go(port):
        client = await SMTPClient.connect("127.0.0.1", port, "listserv.test", starttls=False)
        await client.send("list-bounces+a@example.org", "a@example.net", b"Subject: one\r\n\r\nbody\r\n")
        await client.send("list-bounces+b@example.org", "b@example.net", b"Subject: two\r\n\r\nno newline")
        await client.quit()

    with Sink() as sink:
        run(go(sink.port))
        assert sink.connections == 1
        one, two = sink.wait_for(2)
    assert (one.mail_from, one.rcpt_tos) == ("list-bounces+a@example.org", ("a@example.net",))
    assert one.data == b"Subject: one\r\n\r\nbody\r\n"
    assert two.data.startswith(b"Subject: two\r\n\r\nno newline")


def test_a_refused_recipient_leaves_the_session_usable():
    async def go(port):
        client = await SMTPClient.connect("127.0.0.1", port, "listserv.test", starttls=False)
        with pytest.raises(SMTPReplyError) as refused:
            await client.send("s@example.org", "gone@example.net", b"x\r\n")
        await client.send("s@example.org", "here@example.net", b"y\r\n")
        await client.quit()
        return refused.value.code

    with Sink(refuse_rcpt={"gone@example.net": "550 5.1.1 No such user"}) as sink:
        assert run(go(sink.port)) == 550
        [received] = sink.wait_for(1)
    assert received.rcpt_tos == ("here@example.net",)


def test_a_temporary_data_refusal_carries_its_code():
    async def go(port):
        client = await SMTPClient.connect("127.0.0.1", port, "listserv.test", starttls=False)
        try:
            with pytest.raises(SMTPReplyError) as refused:
                await client.send("s@example.org", "r@example.net", b"x\r\n")
            return refused.value.code
        finally:
            await client.quit()

    with Sink(replies=["451 4.3.0 Later"]) as sink:
        assert run(go(sink.port)) == 451


def test_nobody_listening_is_a_connection_error():
    with Sink() as sink:
        port = sink.port
    with pytest.raises(SMTPConnectionError):
        run(SMTPClient.connect("127.0.0.1", port, "listserv.test", starttls=False, timeout=5))


def test_dot_safe_stuffs_only_leading_dots():
    assert dot_safe(b".x\r\n.y\r\nz.\r\n") == b"..x\r\n..y\r\nz.\r\n"
    assert dot_safe(b"From: a\r\n\r\n") == b"From: a\r\n\r\n"
