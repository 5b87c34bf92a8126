"""Hostile messages against `listserv serve` (a real process), and what they cost honest posts.

One command, from a fresh install (`pip install -e .` in the repository), GnuPG on the path:

    python bench/hostile.py                  # ~2 minutes
    python bench/hostile.py --repeat 5 --load 4,16,64

Run by hand, never in CI. It makes a member key with gpg, a listserv home with one list in a
temporary folder, starts the SMTP sink (bench/sink.py) and `listserv serve` relaying to it,
and prints:

  1. for each hostile message of issue 9 -- a 5 MB folded header, 8,000 Content-Type
     parameters (outside, and inside a member's signed and encrypted post), 20,000 MIME parts
     -- and for the costliest message the scan's limits let through, the reply and the time
     from the end of DATA to the reply, beside the same for an honest post of the same size
     from the member, and their ratio;
  2. the same time for a 10 KB honest post sent while N hostile messages (of each kind, and
     of the costliest kind) are being checked, beside the same post on an idle server, and
     its reply: 250, or 451 when it waited past [server] data_timeout behind the others.

Times are the median of --repeat runs, taken by the client with time.perf_counter() from
the moment the last byte of DATA is handed to the socket until the reply is read.
"""

from __future__ import annotations

import argparse
import base64
import random
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]

from common import LISTSERV, cli, log, serve_port, start_sink  # noqa: E402
from listserv import mimescan  # noqa: E402
from tests.helpers import mail as mf  # noqa: E402
from tests.helpers.keys import User, make_gpg_user  # noqa: E402

LIST = "news@example.org"


# -- the messages ----------------------------------------------------------------------------------

def outsider_headers() -> bytes:
    return (b"Message-ID: <bench@example.com>\r\nMIME-Version: 1.0\r\n"
            b"From: Mallory <mallory@example.com>\r\nTo: news@example.org\r\nSubject: Hello\r\n")


def folded_header() -> bytes:
    return outsider_headers() + b"X-Fill: x" + b"\r\n x" * (5 * 1024 * 1024 // 4) + b"\r\n\r\nHi\r\n"


def params_entity(count: int = 8000) -> bytes:
    return b"Content-Type: text/plain; charset=us-ascii" \
        + b"".join(b";\r\n p%d=%d" % (n, n) for n in range(count)) + b"\r\n\r\nHello.\r\n"


def many_parts(count: int = 20_000) -> bytes:
    return outsider_headers() + mf.multipart("multipart/mixed", [b"Content-Type: text/plain\r\n\r\nx"] * count)


def costliest() -> bytes:
    """A message just inside every limit, of the field shapes the email package is slowest on
    (found by a search over shapes and sizes): bare "a@b," lists in Resent-To up to
    MAX_ADDRESS_TOKENS, one-letter parameters in 98 parts' Content-Type up to MAX_TOKENS, and
    folded one-letter words in unstructured fields up to MAX_HEADER_TOTAL."""
    def fold(value: bytes) -> bytes:  # lines SMTP accepts (a fold is one more token)
        return b"\r\n ".join(value[i:i + 900] for i in range(0, len(value), 900))

    def words(name: bytes, budget: int) -> list[bytes]:
        out = []
        while budget > 64:
            value = b"a\r\n " * (min(budget, 60_000) // 4)
            out.append(name + b": " + value.rstrip())
            budget -= len(out[-1]) + 2
        return out
    addresses = b"Resent-To: " + fold(b"a@b," * (mimescan.MAX_ADDRESS_TOKENS // 2 - 40))
    per_part = (mimescan.MAX_TOKENS - mimescan.MAX_ADDRESS_TOKENS) // 98 - 6
    part = b"Content-Type: text/plain" + fold(b";a=b" * per_part)
    top = [b"Content-Type: multipart/mixed; boundary=b", addresses, *words(b"X-A", 100_000)]
    parts = [part + b"\r\n\r\nx"] * 97 + [b"\r\n".join([part, *words(b"X-B", 120_000)]) + b"\r\n\r\nx"]
    return b"\r\n".join(top) + b"\r\n\r\n" + b"".join(b"--b\r\n" + p + b"\r\n" for p in parts) + b"--b--\r\n"


class Member:
    def __init__(self, user: User, list_key: bytes):
        self.user, self.list_key = user, list_key

    def post(self, size: int, seed: int) -> bytes:
        """An honest signed and encrypted post whose whole message is about `size` bytes."""
        def body(n: int) -> str:  # base64 lines: incompressible, like an attachment
            return base64.encodebytes(random.Random(seed).randbytes(max(1, n * 3 // 4))).decode()
        raw = mf.post(self.user, self.list_key, body(size), f"Bench {seed}")
        return mf.post(self.user, self.list_key, body(size * size // len(raw)), f"Bench {seed}")

    def signed_params(self) -> bytes:
        armored = mf.sign_and_encrypt(self.user, self.list_key, params_entity())
        return mf.message(mf.headers(self.user), mf.encrypted_entity(armored))


# -- the processes ---------------------------------------------------------------------------------

class Processes:
    """The sink and `listserv serve` relaying to it."""

    def __init__(self, home: Path):
        self.sink, relay_port = start_sink()
        self.serve = subprocess.Popen([*LISTSERV, "--home", str(home), "serve", "--listen", "127.0.0.1:0",
                                       "--relay", f"127.0.0.1:{relay_port}"], stderr=subprocess.PIPE, text=True,
                                      cwd=REPO)
        self.ready = threading.Event()
        self.port = 0
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(60):
            raise SystemExit("listserv serve did not start")

    def _read(self) -> None:
        for line in self.serve.stderr:
            port = serve_port(line)
            if port:
                self.port = port
                self.ready.set()

    def stop(self) -> None:
        for process in (self.serve, self.sink):
            process.terminate()
            process.wait(timeout=60)


def timed(port: int, raw: bytes, sent: threading.Barrier | None = None) -> tuple[int, float]:
    """(reply code, seconds from the end of DATA to the reply)."""
    body = raw if raw.endswith(b"\r\n") else raw + b"\r\n"
    body = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in body.split(b"\r\n"))
    with smtplib.SMTP("127.0.0.1", port, timeout=600) as client:
        client.ehlo("bench.test")
        client.mail("bench@example.net")
        if client.rcpt(LIST)[0] != 250:
            raise SystemExit("RCPT refused")
        if client.docmd("DATA")[0] != 354:
            raise SystemExit("DATA refused")
        client.send(body + b".\r\n")
        started = time.perf_counter()
        if sent is not None:
            sent.wait(600)
        code, _ = client.getreply()
        return code, time.perf_counter() - started


# -- the measurements ------------------------------------------------------------------------------

def side_by_side(port: int, member: Member, repeat: int, seeds: Iterator[int]) -> None:
    print("\n1. end of DATA -> reply, hostile beside honest of the same size (median of "
          f"{repeat}; the honest post is accepted, 250)")
    print(f"   {'message':38s} {'bytes':>9s} {'reply':>5s} {'hostile':>9s} {'honest':>9s} {'ratio':>7s}")
    hostile = {
        "5 MB folded header (outsider)": lambda: folded_header(),
        "8,000 parameters (outsider)": lambda: outsider_headers() + params_entity(),
        "8,000 parameters (member, signed+enc)": member.signed_params,
        "20,000 parts (outsider)": lambda: many_parts(),
        "costliest within the limits": lambda: costliest(),
    }
    for name, make in hostile.items():
        raw = make()
        codes, bad = zip(*(timed(port, raw) for _ in range(repeat)))
        honest = [member.post(len(raw), next(seeds)) for _ in range(repeat)]
        good = [timed(port, post) for post in honest]
        assert all(code == 250 for code, _ in good), good
        hostile_s, honest_s = statistics.median(bad), statistics.median(t for _, t in good)
        print(f"   {name:38s} {len(raw):9,d} {codes[0]:5d} {hostile_s * 1000:7.1f}ms "
              f"{honest_s * 1000:7.1f}ms {hostile_s / honest_s:7.2f}")


def under_load(port: int, member: Member, repeat: int, loads: list[int], seeds: Iterator[int]) -> None:
    print("\n2. end of DATA -> reply of a 10 KB honest post sent while N hostile messages are "
          f"being checked (median of {repeat})")
    kinds = {
        "issue 9 mix": [folded_header(), outsider_headers() + params_entity(), many_parts()],
        "costliest": [costliest()],
    }
    idle = [timed(port, member.post(10_000, next(seeds)))[1] for _ in range(repeat)]
    print(f"   idle server: {statistics.median(idle) * 1000:.1f}ms")
    for label, messages in kinds.items():
        for load in loads:
            times, codes, worst = [], [], 0.0
            for _ in range(repeat):
                post = member.post(10_000, next(seeds))
                sent = threading.Barrier(load + 1)
                with ThreadPoolExecutor(max_workers=load) as pool:
                    attacks = [pool.submit(timed, port, messages[n % len(messages)], sent) for n in range(load)]
                    sent.wait(600)  # every hostile DATA is on the wire
                    code, seconds = timed(port, post)
                    times.append(seconds)
                    codes.append(code)
                    worst = max(worst, *(future.result()[1] for future in attacks))
            median = statistics.median(times)
            replies = ",".join(str(code) for code in sorted(set(codes)))
            print(f"   {label:12s} N={load:3d}: honest {median * 1000:8.1f}ms "
                  f"(x{median / statistics.median(idle):.1f} idle, reply {replies}); "
                  f"slowest hostile reply {worst * 1000:.0f}ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--load", default="4,16,64", help="numbers of hostile messages at once")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="lsb-hostile-"))
    home = base / "home"
    try:
        log("making a member key and a listserv home ...")
        user = make_gpg_user(base, "Alice", "alice@example.org")
        cli(home, "init")
        cli(home, "list", "create", LIST, "--name", "News")
        (base / "alice.asc").write_bytes(user.public_key)
        cli(home, "member", "add", LIST, user.email, "--key", str(base / "alice.asc"), "--name", "Alice")
        cli(home, "list", "set", LIST, "max_message_size_kb", "20480")
        member = Member(user, cli(home, "list", "key", LIST).encode())
        processes = Processes(home)
        seeds = iter(range(10**9))
        try:
            print(f"listserv serve on 127.0.0.1:{processes.port}, [server] data_threads and "
                  "data_timeout at their defaults")
            side_by_side(processes.port, member, args.repeat, seeds)
            under_load(processes.port, member, args.repeat, [int(n) for n in args.load.split(",")], seeds)
        finally:
            processes.stop()
    finally:
        for keys in (home / "keys", base / "gpg-alice@example.org"):
            subprocess.run(["gpgconf", "--homedir", str(keys), "--kill", "all"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)

if __name__ == "__main__":
    main()
