"""A small SMTP client for the relay: one connection, one transaction at a time, and DATA sent
as given.

listserv's copies are its own output -- CRLF line endings, no line starting with a dot
(headers, armor and MIME delimiters never do) -- so DATA needs no line-ending repair and no
dot-stuffing, which a general client (aiosmtplib) does with regular expressions over every
message on the event loop's thread -- most of the server's time at scale (docs/performance.md
has the measurement). `dot_safe` checks the small per-job parts once.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from .errors import SMTPConnectionError, SMTPReplyError


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]


def dot_safe(data: bytes) -> bytes:
    """Dot-stuff a message part (RFC 5321 §4.5.2); cheap for the small prefix and suffix."""
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


class SMTPClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float):
        self._reader = reader
        self._writer = writer
        self._timeout = timeout
        self.extensions: dict[str, str] = {}  # EHLO keyword -> its parameters, from the last EHLO

    @classmethod
    async def connect(cls, host: str, port: int, helo: str, starttls: bool | None,
                      timeout: float = 60.0, ca_file: str | None = None) -> "SMTPClient":
        """Connect and greet. starttls: True required, None if offered (certificate checked),
        False never (a relay on loopback)."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise SMTPConnectionError(f"connect: {type(exc).__name__}") from None
        client = cls(reader, writer, timeout)
        try:
            await client._expect(await client._reply(), 220)
            extensions = await client._ehlo(helo)
            if starttls or (starttls is None and "STARTTLS" in extensions):
                await client._expect(await client.command(b"STARTTLS"), 220)
                plain = writer.transport
                try:
                    context = ssl.create_default_context(cafile=ca_file)
                    await asyncio.wait_for(writer.start_tls(context, server_hostname=host), timeout)
                except (OSError, asyncio.TimeoutError) as exc:  # ssl.SSLError is an OSError
                    plain.close()  # a failed handshake leaves the plain socket open
                    raise SMTPConnectionError(f"starttls: {type(exc).__name__}") from None
                await client._ehlo(helo)
        except BaseException:
            client.abort()
            raise
        return client

    async def _ehlo(self, helo: str) -> dict[str, str]:
        reply = await self.command(f"EHLO {helo}".encode())
        if reply.code != 250:
            await self._expect(await self.command(f"HELO {helo}".encode()), 250)
            self.extensions = {}
            return self.extensions
        self.extensions = {}
        for line in reply.lines[1:]:
            keyword, _, params = line.partition(" ")
            self.extensions[keyword.upper()] = params.strip()
        return self.extensions

    @property
    def size(self) -> int | None:
        """The relay's SIZE (RFC 1870): the largest message it takes, in bytes; 0 when it
        declares no limit ("SIZE" alone or "SIZE 0"); None when it does not speak of SIZE."""
        if "SIZE" not in self.extensions:
            return None
        value = self.extensions["SIZE"].split(" ", 1)[0]
        return int(value) if value.isdigit() else 0

    async def _reply(self) -> Reply:
        lines = []
        try:
            while True:
                line = await asyncio.wait_for(self._reader.readline(), self._timeout)
                if not line:
                    raise SMTPConnectionError("the relay closed the connection")
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                if len(text) < 3 or not text[:3].isdigit():
                    raise SMTPConnectionError("the relay sent a malformed reply")
                lines.append(text[4:])
                if text[3:4] != "-":
                    return Reply(int(text[:3]), tuple(lines))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            raise SMTPConnectionError(f"read: {type(exc).__name__}") from None

    async def command(self, line: bytes) -> Reply:
        await self._write(line + b"\r\n")
        return await self._reply()

    async def _write(self, *chunks: bytes) -> None:
        try:
            for chunk in chunks:
                self._writer.write(chunk)
            await asyncio.wait_for(self._writer.drain(), self._timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise SMTPConnectionError(f"write: {type(exc).__name__}") from None

    @staticmethod
    async def _expect(reply: Reply, *codes: int, stage: str = "connect") -> Reply:
        if reply.code not in codes:
            raise SMTPReplyError(reply.code, " ".join(reply.lines), stage)
        return reply

    async def send(self, sender: str, recipient: str, *message: bytes) -> Reply:
        """One transaction. `message` is CRLF text whose lines never start with a dot; its
        chunks are written as they are. A refusal leaves the session ready (RSET).
        To a relay that announces SIZE the message's size is declared in MAIL FROM, so one
        that is too large is refused there, before its bytes are sent (RFC 1870)."""
        declared = ""
        if "SIZE" in self.extensions:
            declared = f" SIZE={sum(len(chunk) for chunk in message)}"
        try:
            await self._expect(await self.command(f"MAIL FROM:<{sender}>{declared}".encode()), 250,
                               stage="mail")
            await self._expect(await self.command(f"RCPT TO:<{recipient}>".encode()), 250, 251,
                               stage="rcpt")
            await self._expect(await self.command(b"DATA"), 354, stage="data")
        except SMTPReplyError:
            try:  # start the next transaction clean; any reply will do
                await self.command(b"RSET")
            except SMTPConnectionError:
                self.abort()
            raise
        ending = b".\r\n" if message and message[-1].endswith(b"\r\n") else b"\r\n.\r\n"
        await self._write(*message, ending)
        return await self._expect(await self._reply(), 250, stage="data")

    async def quit(self) -> None:
        try:
            await self.command(b"QUIT")
        except SMTPConnectionError:
            pass
        self.abort()
        try:  # let the socket really close before the caller's loop may end
            await asyncio.wait_for(self._writer.wait_closed(), self._timeout)
        except (OSError, asyncio.TimeoutError):
            pass

    def abort(self) -> None:
        self._writer.close()

    @property
    def open(self) -> bool:
        return not self._writer.is_closing()
