"""Running gpg: its status on a channel of its own, its log thrown away.

GnuPG writes two streams beside its output: the status protocol ([GNUPG:] lines, meant for
programs) and a human log that echoes text from the input -- armor headers, file names,
user ids, notations, the Signer's UID. Reading both from one stream lets a message forge
status lines (python-gnupg does that: `--status-fd 2`, then `str.splitlines()` over stderr
decoded as Latin-1, so an echoed U+0085 starts a new "status line"). Here the status goes to
a pipe that carries nothing else and is handed back as bytes, unsplit; the log (stderr) is
read and dropped. Inputs go in through pipes, never through files.

Every run has a deadline: gpg is killed when it passes (GpgTimeout), and output beyond
`max_output` bytes ends the run as well (OutputTooLarge).
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import CryptoError, EnvironmentProblem, ListservError

DEFAULT_TIMEOUT = 120.0  # seconds; a key listing of 10,000 members takes a few
MAX_STATUS = 16 * 1024 * 1024  # status bytes kept from one run (a listing of huge keyrings)
_CHUNK = 65536


class GpgTimeout(ListservError):
    """gpg did not finish within its deadline and was killed: a passing problem (the
    machine is overloaded, or the input is hostile), retried later, never a verdict."""


class OutputTooLarge(CryptoError):
    """gpg wrote more than the caller allowed."""


@dataclass(frozen=True)
class Run:
    output: bytes  # stdout, exactly
    status: bytes  # the status channel, exactly (parse it with keyring.status)
    returncode: int


def binary() -> str:
    found = shutil.which("gpg")
    if found is None:
        raise EnvironmentProblem("GnuPG is not installed; install it (Debian: apt-get install gnupg).")
    return found


def run(home: Path | str, args: list[str], stdin: bytes = b"", *, side: bytes | None = None,
        max_output: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> Run:
    """Run `gpg --homedir home ... args`, writing `stdin` to it.

    `side`, when given, is a second input: the argument "-&SIDE" in `args` is replaced by
    the file descriptor it arrives on (gpg's --enable-special-filenames), e.g. a detached
    signature beside the signed data on stdin, and the argument "SIDE_FD" by its number (an
    option such as --override-session-key-fd: a secret never goes on the command line, which
    every local user can read).
    """
    status_read, status_write = os.pipe()
    pipes = [os.fdopen(status_read, "rb", buffering=0)]  # closed exactly once, whatever happens
    child_ends = [status_write]
    side_pipe = None
    if side is not None:
        side_read, side_write = os.pipe()
        side_pipe = os.fdopen(side_write, "wb", buffering=0)
        pipes.append(side_pipe)
        child_ends.append(side_read)
        args = [f"-&{side_read}" if arg == "-&SIDE" else str(side_read) if arg == "SIDE_FD" else arg
                for arg in args]
    command = [binary(), "--homedir", str(home), "--batch", "--no-tty", "--status-fd", str(status_write),
               *(["--enable-special-filenames"] if side is not None else []), *args]
    try:
        try:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, pass_fds=child_ends)
        except OSError as exc:
            raise EnvironmentProblem(f"GnuPG cannot be started ({type(exc).__name__}).") from None
        finally:
            for fd in child_ends:
                os.close(fd)
        try:
            return _communicate(process, stdin, pipes[0], side_pipe, side or b"", max_output,
                                time.monotonic() + timeout)
        finally:
            if process.poll() is None:
                _kill(process)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
    finally:
        for pipe in pipes:
            pipe.close()


def _kill(process: subprocess.Popen) -> None:
    try:
        process.send_signal(signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _communicate(process: subprocess.Popen, stdin: bytes, status, side_pipe, side: bytes,
                 max_output: int | None, deadline: float) -> Run:
    assert process.stdin and process.stdout and process.stderr
    writers = {process.stdin: memoryview(stdin)}
    if side_pipe is not None:
        writers[side_pipe] = memoryview(side)
    output, status_bytes = bytearray(), bytearray()
    readers = {process.stdout: (output, max_output), status: (status_bytes, MAX_STATUS),
               process.stderr: (None, None)}
    with selectors.DefaultSelector() as selector:
        for stream in (*writers, *readers):
            os.set_blocking(stream.fileno(), False)
        for stream, data in writers.items():
            if data:
                selector.register(stream, selectors.EVENT_WRITE)
            else:
                stream.close()
        for stream in readers:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                _kill(process)
                raise GpgTimeout("GnuPG did not finish in time and was stopped.")
            for key, _ in selector.select(left):
                stream = key.fileobj
                if stream in writers:
                    try:
                        sent = os.write(stream.fileno(), writers[stream][:_CHUNK])
                    except BrokenPipeError:  # gpg stopped reading: what it made of it counts
                        sent = len(writers[stream])
                    except BlockingIOError:
                        continue
                    writers[stream] = writers[stream][sent:]
                    if not writers[stream]:
                        selector.unregister(stream)
                        stream.close()
                    continue
                try:
                    chunk = os.read(stream.fileno(), _CHUNK)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(stream)
                    continue
                buffer, limit = readers[stream]
                if buffer is None:
                    continue  # the human log: never read by anyone
                buffer += chunk
                if limit is not None and len(buffer) > limit:
                    _kill(process)
                    raise OutputTooLarge(f"GnuPG wrote more than {limit} bytes.")
    try:
        returncode = process.wait(max(deadline - time.monotonic(), 0.001))
    except subprocess.TimeoutExpired:
        _kill(process)
        raise GpgTimeout("GnuPG did not finish in time and was stopped.") from None
    return Run(bytes(output), bytes(status_bytes), returncode)
