"""The relay client against a real SMTP server on loopback."""

from __future__ import annotations

import asyncio

import pytest

from listserv.smtpclient import SMTPClient, SMTPConnectionError, SMTPReplyError, dot_safe

from tests.helpers.sink import Sink
from tests.helpers.tls import relay_certificate


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
        return refused.value.code, refused.value.stage

    with Sink(refuse_rcpt={"gone@example.net": "550 5.1.1 No such user"}) as sink:
        assert run(go(sink.port)) == (550, "rcpt")
        [received] = sink.wait_for(1)
    assert received.rcpt_tos == ("here@example.net",)


def test_the_relays_size_is_read_and_a_copy_declares_its_own():
    """RFC 1870: the relay announces its limit in EHLO; the client declares each message's
    size in MAIL FROM, so the relay refuses one that is too large before it is sent."""
    async def go(port):
        client = await SMTPClient.connect("127.0.0.1", port, "listserv.test", starttls=False)
        try:
            await client.send("s@example.org", "r@example.net", b"x" * 900 + b"\r\n")
            with pytest.raises(SMTPReplyError) as refused:
                await client.send("s@example.org", "r@example.net", b"x" * 1100 + b"\r\n")
            return client.size, refused.value.code, refused.value.stage
        finally:
            await client.quit()

    with Sink(size=1000) as sink:
        assert run(go(sink.port)) == (1000, 552, "mail")
        [received] = sink.wait_for(1)
    assert len(received.data) == 902
    assert sink.oversize == []  # refused at MAIL FROM: the 1,102 bytes never went over the wire


def test_a_relay_without_a_size_limit_says_so():
    async def go(port):
        client = await SMTPClient.connect("127.0.0.1", port, "listserv.test", starttls=False)
        await client.quit()
        return client.size

    with Sink() as sink:
        assert run(go(sink.port)) is None  # aiosmtpd with no data_size_limit names no SIZE


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


def test_starttls_with_a_trusted_certificate_delivers(tmp_path):
    cert_file, context = relay_certificate(tmp_path)

    async def go(port):
        client = await SMTPClient.connect("127.0.0.1", port, "listserv.test", starttls=True,
                                          ca_file=str(cert_file))
        await client.send("s@example.org", "r@example.net", b"Subject: over TLS\r\n\r\nx\r\n")
        await client.quit()

    with Sink(tls_context=context) as sink:
        run(go(sink.port))
        [received] = sink.wait_for(1)
    assert received.data.startswith(b"Subject: over TLS")


def test_starttls_refuses_an_untrusted_certificate(tmp_path):
    _, context = relay_certificate(tmp_path)
    with Sink(tls_context=context) as sink:
        with pytest.raises(SMTPConnectionError):
            run(SMTPClient.connect("127.0.0.1", sink.port, "listserv.test", starttls=True, timeout=10))
        assert sink.messages == []


def test_a_relay_that_requires_tls_refuses_plain_mail():
    """Why starttls=never towards a TLS-only relay defers instead of sending in clear."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # never used: no STARTTLS

    async def go(port):
        client = await SMTPClient.connect("127.0.0.1", port, "listserv.test", starttls=False)
        try:
            with pytest.raises(SMTPReplyError):
                await client.send("s@example.org", "r@example.net", b"x\r\n")
        finally:
            await client.quit()

    with Sink(tls_context=context) as sink:
        run(go(sink.port))
        assert sink.messages == []
