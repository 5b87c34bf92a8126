"""What the benchmark scripts share: their log, the machine and revision they print, the
listserv CLI, and the two processes e2e.py and hostile.py run (bench/sink.py and `listserv
serve`), found by the first line each prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LISTSERV = [sys.executable, "-m", "listserv"]

# `listserv serve`'s first line (listserv/cli/serve.py): "listserv listening on HOST:PORT; copies
# go to relay HOST:PORT" or "...; copies go to the outbox PATH". The port is the first one.
_SERVE_LISTENING = re.compile(r"^listserv listening on (\S+):(\d+)(;|$)")


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def cli(home: Path, *args: str) -> str:
    done = subprocess.run([*LISTSERV, "--home", str(home), *args], capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"listserv {' '.join(args)} failed: {done.stderr[-500:]}")
    return done.stdout


def serve_port(line: str) -> int | None:
    """The port `listserv serve` listens on, from its first line; None for any other line."""
    found = _SERVE_LISTENING.match(line.strip())
    return int(found.group(2)) if found else None


def start_sink() -> tuple[subprocess.Popen, int]:
    """bench/sink.py in its own process, and the port it listens on (127.0.0.1)."""
    process = subprocess.Popen([sys.executable, str(BENCH / "sink.py")], stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line.startswith("sink listening on"):
        process.kill()
        raise SystemExit(f"the sink did not start: {line!r}")
    return process, int(line.rsplit(":", 1)[1])


def revision() -> str:
    """The listserv code measured: commit, and whether listserv/ had uncommitted changes."""
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "listserv"],
                           capture_output=True, text=True).stdout.strip()
    return f"listserv at {head.stdout.strip() or 'unknown'}{' + uncommitted changes in listserv/' if dirty else ''}"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    gpg = subprocess.run(["gpg", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    load = Path("/proc/loadavg").read_text().split()[0]
    return f"{os.cpu_count()} cores, {cpu}, {gpg}, Python {sys.version.split()[0]}, load average {load} at start"
