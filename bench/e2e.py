"""End to end: `listserv serve` (a real process) delivering to an SMTP sink (another process).

One command, from a fresh install (`pip install -e .` in the repository):

    python bench/e2e.py                  # 1,000-member tests, then the 10,000-member 1 MB post
    python bench/e2e.py --big 0          # only the 1,000-member tests (a few minutes)

The first run generates member keys (bench/keypool.py; ~25 minutes for 10,000 on 2 cores)
and prepares a listserv home per list size with the CLI (`init`, `list create`, `member
import`), cached in ~/.cache/listserv-bench ($LISTSERV_BENCH_CACHE); each run works on a
fresh copy. `member import` is quadratic in the list size today (see docs/performance.md),
so lists larger than --cli-import-max members get their member records written straight
into the database through listserv's Store (keys still imported with gpg). Run by hand,
never in CI.

It prints:
  1. the time from the 250 of one 10 KB post to a 1,000-member list until the sink holds all
     1,000 copies (target <= 3 s);
  2. the same for an urgent alert (news+urgent@) sent while a 1 MB post to the same 1,000
     members is being delivered -- the alert must not wait behind it;
  3. copies delivered per second over 20 posts of 10 KB (target >= 500/s);
  4. posts accepted per second from 20 parallel SMTP clients (durable spool on; to a second,
     20-member list in the same home, so that fan-out does not crowd out the listener);
  5a. the same with 10,000 members stored (every submission reads the database);
  5b. peak RSS of the serve process (VmHWM in /proc/PID/status) and bytes on disk in
     HOME/data/spool while a 1 MB post to 10,000 members is fanned out and delivered
     (targets <= 250 MB, and <= post size + 1 KB per member), the time to fan it out, and
     the copies delivered in the --big-deliver seconds after (all of them take minutes).

`--profile DIR` records the serve process with py-spy during each test (pip install py-spy)
and prints a summary of each profile (bench/collapsed.py).

Posts are real PGP/MIME submissions (tests/helpers/mail.py): signed by member 0's key and
encrypted to the list's key with gpg. Times come from time.monotonic(), which on Linux is
the same clock (CLOCK_MONOTONIC) in the sink's process and this one.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]

import keypool  # noqa: E402
from collapsed import summarize  # noqa: E402
from common import LISTSERV, cli, log, machine, revision, serve_port, start_sink  # noqa: E402

from listserv.model import Member  # noqa: E402
from listserv.store import Store  # noqa: E402
from tests.helpers.mail import post  # noqa: E402
from tests.helpers.smtp import submit  # noqa: E402
from tests.helpers.keys import User  # noqa: E402

LIST, TINY = "news@example.org", "tiny@example.org"
URGENT = "news+urgent@example.org"
POST_10K = 8 * 1024  # body text of a "10 KB" post: the armored copy a member gets is ~10 KiB


# -- a listserv home per list size, prepared once --------------------------------------------------

def template(members: int, root: Path, cli_import_max: int) -> tuple[Path, dict]:
    """HOME with news@ (`members` pool members) and tiny@ (20 members), cached."""
    home = root / "homes" / f"e2e-{members}"
    marker = home / "ready.json"
    if marker.exists():
        return home, json.loads(marker.read_text())
    shutil.rmtree(home, ignore_errors=True)
    keypool.ensure(members, root, log)
    keyring_file = root / "homes" / f"keyring-{members}.pgp"
    keyring_file.parent.mkdir(parents=True, exist_ok=True)
    keyring_file.write_bytes(keypool.public_keyring(members, root))
    small = root / "homes" / "keyring-20.pgp"
    small.write_bytes(keypool.public_keyring(20, root))
    log(f"preparing a listserv home with {members:,} members in {home} ...")
    cli(home, "init")
    cli(home, "list", "create", LIST, "--name", "News")
    started = time.perf_counter()
    if members <= cli_import_max:
        how = "listserv member import"
        cli(home, "member", "import", LIST, str(keyring_file))
    else:
        how = "gpg --import + member records written through listserv.store (bench shortcut)"
        bulk_import(home, LIST, keyring_file, keypool.ensure(members, root))
    seconds = time.perf_counter() - started
    log(f"  {how}: {seconds:.1f} s")
    cli(home, "list", "create", TINY, "--name", "Tiny")
    cli(home, "member", "import", TINY, str(small))
    keypool.kill_agent(home / "keys")
    info = {"members": members, "import": how, "import_seconds": round(seconds, 1)}
    marker.write_text(json.dumps(info))
    return home, info


def bulk_import(home: Path, address: str, keyring_file: Path, keys: list[keypool.PoolKey]) -> None:
    subprocess.run(["gpg", "--homedir", str(home / "keys"), "--batch", "--quiet",
                    "--import-options", "import-clean,self-sigs-only", "--import", str(keyring_file)],
                   check=True, capture_output=True)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    members = [Member(address, key.email, key.fingerprint, f"Member {key.index}", added=now) for key in keys]
    with Store(home / "data" / "listserv.json").transaction() as tx:
        table = getattr(getattr(tx, "_db", None), "table", None)
        if table:  # one insert of all records; add_member checks each against all the others
            table("members").insert_multiple([member.as_dict() for member in members])
        else:
            for member in members:
                tx.add_member(member)


def fresh_copy(template_home: Path, concurrency: int | None) -> Path:
    home = Path(tempfile.mkdtemp(prefix="lsb-e2e-")) / "home"
    shutil.copytree(template_home, home, ignore=shutil.ignore_patterns("S.*", "*.lock", "ready.json"))
    if concurrency:
        config = home / "listserv.toml"
        text = config.read_text().replace("concurrency = 4", f"concurrency = {concurrency}")
        config.write_text(text)
    return home


# -- posts from member 0 --------------------------------------------------------------------------

class Poster:
    """Member 0 (Curve25519) with their secret key in a gpg home, as their client has it."""

    def __init__(self, root: Path):
        self.dir = Path(tempfile.mkdtemp(prefix="lsb-poster-"))
        self.dir.chmod(0o700)
        secret = self.dir / "secret.pgp"
        secret.write_bytes(keypool.secret_keyring(root))
        subprocess.run(["gpg", "--homedir", str(self.dir), "--batch", "--quiet", "--import", str(secret)],
                       check=True, capture_output=True)
        member = keypool.ensure(1, root)[0]
        self.user = User("gpg", "Member 0", member.email, self.dir, member.fingerprint, b"")

    def make(self, home: Path, size: int, to: str = LIST, seed: int = 0) -> bytes:
        """A post of `size` bytes of text to `to`, encrypted to that list's key in `home`."""
        key = cli(home, "list", "key", TINY if to == TINY else LIST).encode()
        return post(self.user, key, text_of(size, seed), f"Bench {seed}", style="pgpmime", to=to)

    def many(self, home: Path, count: int, size: int, to: str = LIST, start: int = 0) -> list[bytes]:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            return list(pool.map(lambda n: self.make(home, size, to, start + n), range(count)))

    def close(self) -> None:
        keypool.kill_agent(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


def text_of(size: int, seed: int) -> str:
    """`size` bytes of base64 lines: compresses like an attachment does, so copies stay ~size."""
    raw = random.Random(seed).randbytes(size * 3 // 4)
    return base64.encodebytes(raw).decode()[:size]


# -- the sink and the server -------------------------------------------------------------------------

class Sink:
    def __init__(self) -> None:
        self.process, self.port = start_sink()
        self.control = smtplib.SMTP("127.0.0.1", self.port, timeout=30)

    def stats(self) -> dict:
        code, text = self.control.docmd("XSTAT")
        return json.loads(text)

    def reset(self) -> None:
        self.control.docmd("XRESET")

    def groups(self, kind: str) -> list[dict]:
        return [g for g in self.stats()["groups"].values() if g["kind"] == kind]

    def close(self) -> None:
        try:
            self.control.close()
        finally:
            self.process.terminate()
            self.process.wait(timeout=10)


class Server:
    """`listserv serve` relaying to the sink; its log lines are kept with their arrival times."""

    def __init__(self, home: Path, relay_port: int, profile: Path | None = None):
        """`profile`: a folder; each test between profile_start() and profile_stop() is recorded
        by py-spy (sampled from outside, --nonblocking: the server is never paused)."""
        self.home = home
        self.process = subprocess.Popen(
            [*LISTSERV, "--home", str(home), "serve", "--listen", "127.0.0.1:0",
             "--relay", f"127.0.0.1:{relay_port}"], stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self.ready = threading.Event()
        self.port = 0
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(120):
            raise SystemExit("listserv serve did not start:\n" + "\n".join(l for _, l in self.lines[-20:]))
        self.profile, self.profiler, self.profile_file = profile, None, None

    def profile_start(self, name: str) -> None:
        if not self.profile:
            return
        self.profile_file = self.profile / f"serve-{name}.txt"
        self.profiler = subprocess.Popen(
            ["py-spy", "record", "--pid", str(self.process.pid), "--format", "raw", "--rate", "200",
             "--nonblocking", "--output", str(self.profile_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def profile_stop(self) -> None:
        if self.profiler:
            self.profiler.send_signal(signal.SIGINT)  # py-spy writes its file and exits
            self.profiler.wait(timeout=60)
            self.profiler = None
            log(summarize(self.profile_file, top=20))

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))
            port = serve_port(line)
            if port:
                self.port = port
                self.ready.set()

    def first(self, needle: str, after: float = 0.0) -> float | None:
        return next((t for t, line in list(self.lines) if t >= after and needle in line), None)

    def status(self) -> dict[str, int]:
        """VmRSS and VmHWM in KiB."""
        found = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                found[line.split(":")[0]] = int(line.split()[1])
        return found

    def stop(self) -> None:
        self.profile_stop()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        keypool.kill_agent(self.home / "keys")


def wait_for(check, timeout: float, every: float = 0.05):
    """Poll `check()` until it returns something true; None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    return None


def send(port: int, rcpt: str, raw: bytes) -> tuple[float, str]:
    """Submit; (when the 250 arrived, the queue id it names)."""
    code, text = submit(port, rcpt, raw)
    if code != 250:
        raise SystemExit(f"the server refused a post: {code} {text}")
    if not text.startswith("2.0.0 Queued as "):  # listserv's 250 names its queue id
        raise SystemExit(f"the post was not taken by listserv: {code} {text}")
    return time.monotonic(), text.split()[-1]


def complete(sink: Sink, kind: str, count: int) -> dict | None:
    groups = sink.groups(kind)
    return groups[0] if groups and groups[0]["count"] >= count else None


# -- the measurements ---------------------------------------------------------------------------------

@dataclass
class Results:
    lines: list[str] = field(default_factory=list)
    targets: list[tuple[str, bool, str]] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.lines.append(text)
        log(text)

    def target(self, name: str, ok: bool, detail: str) -> None:
        self.targets.append((name, ok, detail))


def one_post(server: Server, sink: Sink, raw: bytes, members: int, out: Results, timeout: float) -> None:
    sink.reset()
    started = time.monotonic()
    accepted, qid = send(server.port, LIST, raw)
    done = wait_for(lambda: complete(sink, "post", members), timeout)
    fanned = server.first(f"fanned-out qid={qid}")
    if not done:
        out.say(f"1. one 10 KB post: NOT complete within {timeout:.0f} s "
                f"({sink.stats()['messages']} of {members} copies)")
        out.target(f"one post to {members:,} members <= 3 s", False, "not complete")
        return
    latency = done["last"] - accepted
    out.say(f"1. one 10 KB post to {members:,} members: 250 after {accepted - started:.2f} s; "
            f"fanned out {fanned - accepted if fanned else float('nan'):.2f} s after the 250; first copy at the "
            f"sink {done['first'] - accepted:.2f} s, all {members:,} copies {latency:.2f} s after the 250 "
            f"({done['bytes'] / done['count'] / 1024:.1f} KiB a copy)")
    out.target(f"one post to {members:,} members <= 3 s", latency <= 3.0, f"{latency:.2f} s")


def alert_during_big(server: Server, sink: Sink, big: bytes, alert: bytes, members: int, out: Results,
                     timeout: float) -> None:
    sink.reset()
    big_accepted, _ = send(server.port, LIST, big)
    started = wait_for(lambda: (g := sink.groups("post")) and g[0]["count"] >= 20 and g[0], timeout)
    if not started:
        out.say("2. the 1 MB post did not start delivering in time")
        out.target("alert not behind a 1 MB post", False, "1 MB post never started")
        return
    alert_accepted, alert_qid = send(server.port, URGENT, alert)
    done = wait_for(lambda: complete(sink, "alert", members), timeout)
    posts = sink.groups("post")
    big_count = posts[0]["count"] if posts else 0
    if not done:
        out.say(f"2. alert: NOT complete within {timeout:.0f} s")
        out.target("alert not behind a 1 MB post", False, "not complete")
        return
    latency = done["last"] - alert_accepted
    fanned = server.first(f"fanned-out qid={alert_qid}")
    out.say(f"2. urgent alert to {members:,} members sent while a 1 MB post was being delivered "
            f"({big_count:,} of its {members:,} copies at the sink when the alert was complete): "
            f"all alert copies {latency:.2f} s after its 250 (fanned out after "
            f"{fanned - alert_accepted if fanned else float('nan'):.2f} s, first copy after "
            f"{done['first'] - alert_accepted:.2f} s)")
    out.target("alert during a 1 MB post <= 3 s, not behind it", latency <= 3.0 and big_count < members,
               f"{latency:.2f} s; 1 MB post {big_count}/{members} delivered by then")
    finished = wait_for(lambda: complete(sink, "post", members), timeout)
    if finished:
        seconds = finished["last"] - big_accepted
        out.say(f"   the 1 MB post: all {members:,} copies {seconds:.1f} s after its 250 "
                f"({members / seconds:.0f} copies/s, {finished['bytes'] / seconds / 2**20:.0f} MiB/s, "
                f"{finished['bytes'] / finished['count'] / 2**20:.2f} MiB a copy)")
    else:
        out.say(f"   the 1 MB post: not complete within {timeout:.0f} s")


def throughput(server: Server, sink: Sink, raws: list[bytes], members: int, out: Results, timeout: float) -> None:
    sink.reset()
    first = None
    for raw in raws:
        accepted, _ = send(server.port, LIST, raw)
        first = first or accepted
    submitted = time.monotonic()
    want = members * len(raws)
    done = wait_for(lambda: sink.stats()["messages"] >= want and sink.stats(), timeout, every=0.2)
    if not done:
        got = sink.stats()["messages"]
        out.say(f"3. {len(raws)} posts: NOT complete within {timeout:.0f} s ({got:,} of {want:,} copies)")
        out.target("copies delivered >= 500/s", False, f"{got / timeout:.0f}/s lower bound")
        return
    last = max(g["last"] for g in done["groups"].values())
    rate = want / (last - first)
    out.say(f"3. {len(raws)} posts of 10 KB to {members:,} members: {want:,} copies in {last - first:.1f} s "
            f"after the first 250 = {rate:.0f} copies/s (submitting took {submitted - first:.1f} s)")
    out.target("copies delivered >= 500/s (10 KB)", rate >= 500, f"{rate:.0f}/s")


def accept_rate(server: Server, raws: list[bytes], clients: int, out: Results, label: str = "4. ") -> None:
    chunks = [raws[i::clients] for i in range(clients)]
    barrier = threading.Barrier(clients + 1)
    codes: list[int] = []

    def client(chunk: list[bytes]) -> None:
        barrier.wait()
        for raw in chunk:
            codes.append(submit(server.port, TINY, raw)[0])

    threads = [threading.Thread(target=client, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    ok = codes.count(250)
    out.say(f"{label}{len(raws)} posts from {clients} parallel SMTP clients: {ok} accepted (250) in "
            f"{seconds:.1f} s = {ok / seconds:.1f} posts/s ({len(raws) - ok} refused)")
    if label.startswith("4"):
        out.target("posts accepted/s from 20 clients (no target)", ok == len(raws), f"{ok / seconds:.1f}/s")


class Sampler(threading.Thread):
    """Samples the server's RSS and the spool's bytes on disk every `every` seconds."""

    def __init__(self, server: Server, every: float = 0.02):
        super().__init__(daemon=True)
        self.server, self.every = server, every
        self.spool = server.home / "data" / "spool"
        self.peak_spool = self.peak_in = self.peak_out = self.peak_rss = 0
        self.qid = ""  # the job to describe, once known
        self.parts: dict[str, int] = {}  # its files in outgoing/ by kind, when first seen
        self.incoming_parts: dict[str, int] = {}  # its files in incoming/ at their largest
        self.stop = threading.Event()

    @staticmethod
    def sizes(path: Path) -> dict[str, int]:
        """Bytes per folder/job/kind of file under the spool."""
        found: dict[str, int] = {}
        for folder, _, files in os.walk(path):
            where = "/".join(Path(folder).relative_to(path).parts[:2])
            for name in files:
                try:
                    size = os.stat(os.path.join(folder, name)).st_size
                except FileNotFoundError:
                    continue
                key = f"{where}/{name.split('.')[0]}"
                found[key] = found.get(key, 0) + size
        return found

    def run(self) -> None:
        while not self.stop.is_set():
            sizes = self.sizes(self.spool)
            incoming = sum(v for k, v in sizes.items() if k.startswith("incoming/"))
            outgoing = sum(v for k, v in sizes.items() if k.startswith("outgoing/"))
            mine = {k.rsplit("/", 1)[1]: v for k, v in sizes.items() if self.qid and k.startswith(f"outgoing/{self.qid}/")}
            if mine and not self.parts:
                self.parts = mine
            waiting = {k.rsplit("/", 1)[1]: v for k, v in sizes.items()
                       if self.qid and k.startswith(f"incoming/{self.qid}/")}
            if sum(waiting.values()) > sum(self.incoming_parts.values()):
                self.incoming_parts = waiting
            self.peak_in, self.peak_out = max(self.peak_in, incoming), max(self.peak_out, outgoing)
            self.peak_spool = max(self.peak_spool, sum(sizes.values()))
            try:
                self.peak_rss = max(self.peak_rss, self.server.status()["VmRSS"])
            except (OSError, KeyError):
                pass
            time.sleep(self.every)


def big_list(home: Path, sink: Sink, raw: bytes, parallel: list[bytes], clients: int, members: int,
             out: Results, deliver_seconds: float, timeout: float, profile: Path | None) -> None:
    server = Server(home, sink.port, profile)
    sampler = Sampler(server)
    try:
        if parallel:  # every submission reads the whole database: a big one slows accepting down
            server.profile_start("5a-accept-big-db")
            sink.reset()
            accept_rate(server, parallel, min(clients, len(parallel)), out, f"5a. with {members:,} members stored: ")
            wait_for(lambda: sink.stats()["messages"] >= 20 * len(parallel), timeout, every=0.5)
            time.sleep(1)  # the last job leaves outgoing/ just after its last copy
            server.profile_stop()
        sink.reset()
        idle = server.status()
        server.profile_start("5-big-1mb")
        sampler.start()
        accepted, qid = send(server.port, LIST, raw)
        sampler.qid = qid
        fanned = wait_for(lambda: server.first(f"fanned-out qid={qid}"), timeout)
        if not fanned:
            out.say(f"5b. {members:,} members: no fan-out within {timeout:.0f} s")
            out.target("fan-out of 1 MB to 10,000", False, "timeout")
            return
        delivered = wait_for(lambda: complete(sink, "post", members), deliver_seconds, every=0.5)
        stats = sink.stats()
        copies = stats["messages"]
        last = max((g["last"] for g in stats["groups"].values()), default=accepted)
        status = server.status()
        server.profile_stop()
    finally:
        sampler.stop.set()
        sampler.join()
        server.stop()
    limit = len(raw) + 1024 * members
    peak_mib = status["VmHWM"] / 1024
    out.say(f"5b. one 1 MB post ({len(raw) / 2**20:.2f} MiB as submitted) to {members:,} members: fanned out "
            f"{fanned - accepted:.1f} s after the 250; "
            + (f"all copies delivered {last - accepted:.1f} s after the 250"
               if delivered else f"{copies:,} copies delivered within {deliver_seconds:.0f} s of the fan-out "
                                 f"({copies / max(0.001, last - fanned):.0f} copies/s), then stopped"))
    out.say(f"   serve process: VmHWM {peak_mib:.0f} MiB (before the post: VmRSS {idle['VmRSS'] / 1024:.0f} MiB, "
            f"VmHWM {idle['VmHWM'] / 1024:.0f} MiB; peak VmRSS sampled during it {sampler.peak_rss / 1024:.0f} MiB)")
    written = sum(sampler.parts.values())
    parts = ", ".join(f"{k} {v / 2**20:.2f}" for k, v in sorted(sampler.parts.items()))
    inside = ", ".join(f"{k} {v / 2**20:.2f}" for k, v in sorted(sampler.incoming_parts.items()))
    sealed = sum(sampler.incoming_parts.values())
    out.say(f"   spool: peak {sampler.peak_spool / 2**20:.2f} MiB sampled every 20 ms; the accepted submission "
            f"{sealed / 2**20:.2f} MiB ({inside} MiB) stays until the fan-out job is on disk: "
            f"{written / 2**20:.2f} MiB ({parts} MiB), so both together "
            f"{(sealed + written) / 2**20:.2f} MiB; target: post + 1 KiB x members = {limit / 2**20:.2f} MiB")
    out.target("peak RSS <= 250 MB (10,000 x 1 MB)", peak_mib * 2**20 <= 250e6, f"{peak_mib:.0f} MiB")
    worst = max(sampler.peak_spool, sealed + written)
    out.target("spool <= post + 1 KB/member (10,000 x 1 MB)", worst <= limit,
               f"{worst / 2**20:.1f} MiB vs {limit / 2**20:.1f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description="listserv serve end to end against an SMTP sink")
    parser.add_argument("--members", type=int, default=1000, help="list size for tests 1-4")
    parser.add_argument("--big", type=int, default=10000, help="list size for test 5 (0: skip)")
    parser.add_argument("--posts", type=int, default=20, help="posts for the throughput test")
    parser.add_argument("--clients", type=int, default=20, help="parallel SMTP clients")
    parser.add_argument("--per-client", type=int, default=5, help="posts each client submits")
    parser.add_argument("--concurrency", type=int, help="[delivery] concurrency (default: listserv's)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for any one result")
    parser.add_argument("--big-deliver", type=float, default=90,
                        help="seconds of delivery to watch after the 10,000-member fan-out")
    parser.add_argument("--cli-import-max", type=int, default=2000,
                        help="largest list built with `listserv member import`")
    parser.add_argument("--big-accept", type=int, default=40,
                        help="posts from 20 parallel clients also timed against the big home (0: skip)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record the serve process with py-spy during each test (raw format, into DIR)")
    args = parser.parse_args()
    root = keypool.cache_dir()
    out = Results()
    print(f"machine: {machine()}", flush=True)
    print(revision(), flush=True)
    keypool.ensure(max(args.members, args.big), root, log)
    home_template, info = template(args.members, root, args.cli_import_max)
    big_template = template(args.big, root, args.cli_import_max) if args.big else None
    out.say(f"homes: {args.members:,} members ({info['import']}, {info['import_seconds']} s when prepared)"
            + (f"; {args.big:,} members ({big_template[1]['import']}, {big_template[1]['import_seconds']} s)"
               if big_template else ""))
    home = fresh_copy(home_template, args.concurrency)
    config = (home / "listserv.toml").read_text()
    concurrency = next(line for line in config.splitlines() if line.startswith("concurrency"))
    out.say(f"[delivery] {concurrency}")
    big_home = fresh_copy(big_template[0], args.concurrency) if big_template else None
    poster = Poster(root)
    sink = Sink()
    try:
        log("building posts with gpg (member 0 signs, encrypted to the list key) ...")
        first = poster.make(home, POST_10K, seed=1)
        big = poster.make(home, 1024 * 1024, seed=2)
        alert = poster.make(home, POST_10K, to=URGENT, seed=3)
        batch = poster.many(home, args.posts, POST_10K, start=100)
        parallel = poster.many(home, args.clients * args.per_client, POST_10K, to=TINY, start=1000)
        big_raw = poster.make(big_home, 1024 * 1024, seed=4) if big_home else None
        big_parallel = (poster.many(big_home, args.big_accept, POST_10K, to=TINY, start=5000)
                        if big_home and args.big_accept else [])
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        server = Server(home, sink.port, args.profile)
        try:
            server.profile_start("1-one-post")
            one_post(server, sink, first, args.members, out, args.timeout)
            wait_for(lambda: server.first("delivered qid"), args.timeout)
            server.profile_stop()
            server.profile_start("2-alert-during-1mb")
            alert_during_big(server, sink, big, alert, args.members, out, args.timeout)
            server.profile_stop()
            server.profile_start("3-throughput")
            throughput(server, sink, batch, args.members, out, args.timeout)
            server.profile_stop()
            server.profile_start("4-accept")
            accept_rate(server, parallel, args.clients, out)
            server.profile_stop()
            out.say(f"   serve process after tests 1-4: VmHWM {server.status()['VmHWM'] / 1024:.0f} MiB")
        finally:
            server.stop()
        if big_home:
            big_list(big_home, sink, big_raw, big_parallel, args.clients, args.big, out, args.big_deliver,
                     args.timeout, args.profile)
    finally:
        sink.close()
        poster.close()
        for used in (home, big_home):
            if used:
                keypool.kill_agent(used / "keys")
                shutil.rmtree(used.parent, ignore_errors=True)
    print()
    for line in out.lines:
        print(line)
    print("\ntargets")
    for name, ok, detail in out.targets:
        print(f"  {name:<52} {detail:<40} {'met' if ok else 'MISSED'}")
    return 0 if all(ok for _, ok, _ in out.targets) else 1


if __name__ == "__main__":
    sys.exit(main())
