"""A real SMTP server on loopback (port 0) standing in for the relay, for tests.

`replies` scripts what it answers to DATA: e.g. ["451 4.3.0 Try later", None] answers 451 once,
then accepts. `refuse_rcpt` maps addresses to the reply RCPT TO gets. `size` makes it a relay
with a message size limit, as Postfix's message_size_limit: it announces `SIZE n` in EHLO,
refuses MAIL FROM ... SIZE= above it and any message above it at DATA with 552 5.3.4 (set
`sink.size` to change it for the next connections); with `announce=False` it keeps its limit
to itself, as a relay that does not speak RFC 1870, and refuses only at DATA. A thread runs its own asyncio loop, so
tests can use it from synchronous code.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


class _Handler:
    def __init__(self, sink: "Sink"):
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.sink.rcpt_reply(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        if self.sink.size is not None and len(data) > self.sink.size:
            with self.sink.lock:
                self.sink.oversize.append(len(data))
            return "552 5.3.4 Message size exceeds fixed limit"
        if self.sink.delay:
            await asyncio.sleep(self.sink.delay)  # a slow relay
        if self.sink.on_data is not None and self.sink.on_data(len(self.sink.messages)):
            # The hook (e.g. killing the sender) ran instead of taking the message.
            return "451 4.3.0 Not taken"
        with self.sink.lock:
            reply = self.sink.replies.pop(0) if self.sink.replies else None
            if reply:
                self.sink.refused += 1
                return reply
            self.sink.messages.append(
                Received(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.original_content or envelope.content)
            )
        return "250 2.0.0 OK"


class Sink:
    def __init__(self, replies: list[str | None] | None = None, refuse_rcpt: dict[str, str] | None = None,
                 on_data=None, delay: float = 0.0, tls_context=None, size: int | None = None,
                 announce: bool = True):
        self.size = size
        self.announce = announce
        self.oversize: list[int] = []  # sizes of the messages refused at DATA as too large
        self.delay = delay
        self.tls_context = tls_context  # offer STARTTLS, and require it, with this context
        self.on_data = on_data  # called with the count taken so far; True means "don't take it"
        self.replies = list(replies or [])
        self.refuse_rcpt = dict(refuse_rcpt or {})
        self.messages: list[Received] = []
        self.refused = 0
        self.connections = 0
        self.sessions: list[SMTP] = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = None
        self.port = 0

    def rcpt_reply(self, address: str) -> str | None:
        return self.refuse_rcpt.get(address)

    def __enter__(self) -> "Sink":
        self.thread.start()

        def factory():
            self.connections += 1
            # aiosmtpd announces data_size_limit as SIZE and refuses MAIL FROM SIZE= above it.
            protocol = SMTP(_Handler(self), hostname="sink.test", decode_data=False, data_size_limit=self.size if self.announce else None,
                        tls_context=self.tls_context, require_starttls=self.tls_context is not None)
            self.sessions.append(protocol)
            return protocol

        async def start():
            return await self.loop.create_server(factory, "127.0.0.1", 0)

        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        async def stop():
            self.server.close()
            await self.server.wait_closed()
            # Close the sessions too (wait_closed does not, before Python 3.12), and let the
            # loop run their close callbacks: otherwise their sockets outlive the loop.
            for session in self.sessions:
                if session.transport is not None:
                    session.transport.close()
            await asyncio.sleep(0.05)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"the sink got {len(self.messages)} messages, expected {count}")
