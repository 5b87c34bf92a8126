"""A fast SMTP sink for bench/e2e.py: takes every message, keeps only counts and times.

    python bench/sink.py [--port 0]      prints "sink listening on 127.0.0.1:PORT", runs until killed

Runs in its own process so that it does not share the benchmarked server's interpreter.
Unlike a line-by-line SMTP server it scans DATA for the end marker with bytes.find, so a
1 MB copy costs it well under a millisecond. Messages are grouped by their Message-ID
header (every copy of one post shares it) and marked "alert" when their header says
"Priority: urgent". Two extra commands serve the benchmark on the same port:

    XSTAT    250 {"messages": N, "bytes": B, "groups": {MSGID: {kind, count, first, last}}}
    XRESET   forget everything counted so far

Times are time.monotonic() (CLOCK_MONOTONIC: comparable between processes on one machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time

END = b"\r\n.\r\n"
HEAD_KEEP = 16 * 1024
_MESSAGE_ID = re.compile(rb"\r\nMessage-ID:\s*(<[^>\r\n]*>)", re.IGNORECASE)


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.messages = 0
        self.octets = 0
        self.groups: dict[str, dict] = {}

    def add(self, head: bytes, size: int) -> None:
        now = time.monotonic()
        header = b"\r\n" + head.split(b"\r\n\r\n", 1)[0] + b"\r\n"
        found = _MESSAGE_ID.search(header)
        key = found.group(1).decode("ascii", "replace") if found else "-"
        kind = "alert" if b"\r\nPriority: urgent\r\n" in header else "post"
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = {"kind": kind, "count": 0, "first": now, "last": now, "bytes": 0}
        group["count"] += 1
        group["last"] = now
        group["bytes"] += size
        self.messages += 1
        self.octets += size

    def as_json(self) -> str:
        return json.dumps({"messages": self.messages, "bytes": self.octets, "groups": self.groups,
                           "now": time.monotonic()})


class SinkProtocol(asyncio.Protocol):
    def __init__(self, stats: Stats):
        self.stats = stats
        self.buffer = b""
        self.in_data = False
        self.head = bytearray()
        self.size = 0
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        while data:
            if self.in_data:
                data = self._take_data(data)
            else:
                self.buffer += data
                data = b""
                while not self.in_data and b"\r\n" in self.buffer:
                    line, self.buffer = self.buffer.split(b"\r\n", 1)
                    self._command(line)
                if self.in_data and self.buffer:
                    data, self.buffer = self.buffer, b""

    def _take_data(self, data: bytes) -> bytes:
        joined = self.tail + data
        at = joined.find(END)
        if at < 0:
            self._keep(data)
            self.tail = joined[-4:]
            return b""
        consumed = at + len(END) - len(self.tail)  # octets of `data` up to the end marker
        self._keep(data[:max(0, consumed - 3)])
        self.stats.add(bytes(self.head), self.size)
        self.in_data = False
        self.transport.write(b"250 2.0.0 taken\r\n")
        return data[consumed:]

    def _keep(self, part: bytes) -> None:
        self.size += len(part)
        if len(self.head) < HEAD_KEEP:
            self.head += part[:HEAD_KEEP - len(self.head)]

    def _command(self, line: bytes) -> None:
        verb = line[:4].upper()
        write = self.transport.write
        if verb in (b"EHLO", b"LHLO"):
            write(b"250-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 209715200\r\n")
        elif verb == b"HELO":
            write(b"250 sink\r\n")
        elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            write(b"250 2.0.0 ok\r\n")
        elif verb == b"DATA":
            self.in_data, self.head, self.size, self.tail = True, bytearray(), 0, b"\r\n"
            write(b"354 go ahead\r\n")
        elif verb == b"QUIT":
            write(b"221 2.0.0 bye\r\n")
            self.transport.close()
        elif line.upper() == b"XSTAT":
            write(b"250 " + self.stats.as_json().encode() + b"\r\n")
        elif line.upper() == b"XRESET":
            self.stats.reset()
            write(b"250 reset\r\n")
        else:
            write(b"502 5.5.2 not here\r\n")


async def serve(host: str, port: int) -> None:
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(stats), host, port, backlog=512)
    bound = server.sockets[0].getsockname()
    print(f"sink listening on {bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="SMTP sink that counts messages")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
