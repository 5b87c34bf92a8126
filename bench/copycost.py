"""What one delivered copy costs on listserv's delivery path, piece by piece.

    python bench/copycost.py            # ~1 minute; needs the cache of bench/fanout.py (made if missing)

For a 10 KB and a 1 MB post (copies for a Curve25519 and an RSA-3072 member) it times, in
ms per copy (median):

  armor      openpgp.SharedArmor.armor(pkesk): the armored ciphertext of one copy
  message    the copy as listserv/deliver.py builds it (Deliverer._message): armor, LF->CRLF,
             then envelope prefix + armor + suffix (in a worker thread)
  smtp-prep  what aiosmtplib's sendmail does to every message on the event loop before writing
             it: line-ending normalisation and dot-stuffing (two regex passes)
  journal    spool.Outgoing.record: one journal line + fdatasync (every copy, before the next)
  smtp       one whole SMTP transaction through aiosmtplib to bench/sink.py on loopback
  smtp-raw   the same transaction written with plain asyncio streams and the bytes as they are
             (what a sender that skips the per-copy regex passes would cost)
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import aiosmtplib  # noqa: E402
from aiosmtplib import protocol as smtp_protocol  # noqa: E402

import keypool  # noqa: E402
from fanout import POSTS, list_home, make_post  # noqa: E402

from listserv import openpgp  # noqa: E402
from listserv.model import Recipient  # noqa: E402
from listserv.spool import Outgoing, Progress, Spool  # noqa: E402
from listserv.stages.fanout import Fanned  # noqa: E402
from listserv.stages.fanout import encrypt_for  # noqa: E402

PREFIX = (b"From: News <news@example.org>\r\nTo: News <news@example.org>\r\nSubject: [...]\r\n"
          b"MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; "
          b"boundary=\"b\"\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
          b"--b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n")
SUFFIX = b"\r\n--b--\r\n"


def per_call(function, repeat: int) -> float:
    """Median ms per call over `repeat` calls (in 5 rounds)."""
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            function()
        rounds.append((time.perf_counter() - started) * 1000 / repeat)
    return statistics.median(rounds)


async def smtp_costs(port: int, message: bytes, count: int) -> tuple[float, float]:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await client.connect()
    started = time.perf_counter()
    for _ in range(count):
        await client.sendmail("news-bounces+x@example.org", ["m@members.example.net"], message)
    via_library = (time.perf_counter() - started) * 1000 / count
    await client.quit()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    writer.write(b"EHLO bench\r\n")
    while not (await reader.readline())[3:4] == b" ":
        pass
    started = time.perf_counter()
    for _ in range(count):
        writer.write(b"MAIL FROM:<news-bounces+x@example.org>\r\n")
        await reader.readline()
        writer.write(b"RCPT TO:<m@members.example.net>\r\n")
        await reader.readline()
        writer.write(b"DATA\r\n")
        await reader.readline()
        writer.writelines([message, b".\r\n"])  # CRLF already, and no line starts with "."
        await reader.readline()
    raw = (time.perf_counter() - started) * 1000 / count
    writer.write(b"QUIT\r\n")
    writer.close()
    return via_library, raw


def main() -> None:
    root = keypool.cache_dir()
    ring = list_home(100, root)
    members = [m for m in ring.members[:4] if m.index in (0, 3)]
    sink = subprocess.Popen([sys.executable, str(BENCH / "sink.py")], stdout=subprocess.PIPE, text=True)
    port = int(sink.stdout.readline().rsplit(":", 1)[1])
    scratch = Path(tempfile.mkdtemp(prefix="lsb-copy-", dir=Path.home()))  # the disk a spool would be on
    try:
        spool = Spool(scratch / "spool")
        spool.prepare()
        outgoing = Outgoing(spool)
        print(f"{'post':>5} {'member':>8} {'copy KiB':>9} | {'armor':>7} {'message':>8} {'smtp-prep':>9} "
              f"{'journal':>8} {'smtp':>7} {'smtp-raw':>8}   (ms per copy)")
        for post in POSTS:
            plaintext = make_post(POSTS[post])
            fan = encrypt_for(ring.keyring, ring.fingerprint, [m.fingerprint for m in members], plaintext)
            records = tuple(Recipient(m.email, "t", fan.pkesks[m.fingerprint].packet) for m in members)
            job = outgoing.write(f"bench{post}", "news@example.org", "post",
                                 Fanned(fan.shared, PREFIX, SUFFIX, "news-bounces+{token}@example.org", records, ()))
            repeat = 200 if post == "10k" else 20
            for member in members:
                pkesk = fan.pkesks[member.fingerprint].packet
                armorer = openpgp.SharedArmor(fan.shared[0])
                armorer.armor(pkesk)  # the tail of this alignment is cached from the first copy on

                def build() -> bytes:  # what Deliverer._message does for every copy
                    return PREFIX + armorer.armor(pkesk).replace(b"\n", b"\r\n") + SUFFIX

                message = build()

                def prepare() -> None:
                    smtp_protocol.PERIOD_REGEX.sub(b"..", smtp_protocol.normalize_message_line_endings(message))

                armor = per_call(lambda: armorer.armor(pkesk), repeat)
                build_ms = per_call(build, repeat)
                prep = per_call(prepare, repeat)
                journal = per_call(lambda: outgoing.record(job, 0, Progress("sent", 1, 0.0)), 20)
                smtp, raw = asyncio.run(smtp_costs(port, message, repeat))
                print(f"{post:>5} {member.kind:>8} {len(message) / 1024:>9.1f} | {armor:>7.3f} {build_ms:>8.3f} "
                      f"{prep:>9.3f} {journal:>8.3f} {smtp:>7.3f} {raw:>8.3f}")
    finally:
        sink.terminate()
        sink.wait()
        keypool.kill_agent(ring.home)
        subprocess.run(["rm", "-rf", str(scratch)])


if __name__ == "__main__":
    main()
