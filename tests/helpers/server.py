"""`listserv serve` as a real process on loopback (port 0), as an operator would run it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

_LISTENING = re.compile(r"listserv listening on (\S+):(\d+)")


class ServeProcess:
    def __init__(self, home: Path, *args: str, listen: str = "127.0.0.1:0", wrapper: tuple[str, ...] = ()):
        """`wrapper` goes before the command (e.g. tests/helpers/sandbox.py); `listen` is HOST:PORT."""
        self.home = home
        self.args = args
        self.listen = listen
        self.wrapper = wrapper
        self.lines: list[str] = []
        self.port = 0
        self._ready = threading.Event()

    def start(self) -> "ServeProcess":
        self.proc = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", "listserv", "--home", str(self.home), "serve",
             "--listen", self.listen, *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(30):
            self.stop()
            raise AssertionError("listserv serve did not start:\n" + "\n".join(self.lines))
        return self

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            match = _LISTENING.search(line)
            if match:
                self.port = int(match.group(2))
                self._ready.set()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_log(self, pattern: str, timeout: float = 30.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}:\n{self.log}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        self.proc.wait(20)
        self._reader.join(10)
        self.proc.stderr.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
        if not self.proc.stderr.closed:
            self._reap()
        return self.proc.returncode

    def __enter__(self) -> "ServeProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
