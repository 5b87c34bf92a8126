"""Delivery: each member's copy in its own SMTP transaction, durably recorded, retried with backoff.

Workers take copies from the fan-out jobs in priority order (alerts first, then oldest), send
them through a relay (listserv.smtpclient, one reused connection per worker) or into an outbox maildir,
and append each result to the job's journal with an fsync *before* taking the next copy.
The one window of at-least-once: the relay has said 250 but the journal line is not yet on
disk when the process dies; that copy is sent again after restart.

4xx replies and connection errors defer a copy (backoff from `retry_min` doubling to
`retry_max`, given up after `lifetime`); 5xx replies fail it permanently.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


from .config import Settings
from .openpgp import SharedArmor
from .smtpclient import SMTPClient, SMTPConnectionError, SMTPReplyError, dot_safe
from .spool import DEFERRED, FAILED, FINAL, KINDS, SENT, Outgoing, OutJob, Progress, Recipient, make_directories
from .store import fsync_directory

log = logging.getLogger("listserv.deliver")


@dataclass(frozen=True)
class RetryPolicy:
    # The defaults are the settings' (listserv/config.py), written there once.
    minimum: float = Settings.retry_min
    maximum: float = Settings.retry_max
    lifetime: float = Settings.lifetime

    def delay(self, attempts: int) -> float:
        return min(self.maximum, self.minimum * (2 ** max(0, attempts - 1)))


class Temporary(Exception):
    """The copy may succeed later (4xx, connection trouble)."""


class Permanent(Exception):
    """The relay refused the copy for good (5xx)."""


class Transport:
    """Sends one copy over an open connection; `usable` says whether to keep the connection."""

    async def open(self) -> object:
        return None

    def prepare(self, part: bytes) -> bytes:
        """The job's own small parts (outer headers, closing delimiter) as this transport
        needs them; the armored ciphertext between them never needs changing."""
        return part

    async def send(self, connection: object, sender: str, recipient: str, message: bytes) -> None:
        raise NotImplementedError

    def usable(self, connection: object) -> bool:
        return True

    async def close(self, connection: object) -> None:
        return None


class RelayTransport(Transport):
    def __init__(self, host: str, port: int, helo: str = "localhost", starttls: str = "auto",
                 ca_file: str | None = None):
        self.host, self.port, self.helo = host, port, helo
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        # "auto": on loopback a self-signed certificate must not stop delivery; elsewhere
        # STARTTLS is used when offered and the certificate is checked.
        self.start_tls: bool | None = {"always": True, "never": False}.get(
            starttls, False if loopback else None)
        self.ca_file = ca_file

    def prepare(self, part: bytes) -> bytes:
        return dot_safe(part)

    async def open(self) -> SMTPClient:
        try:
            return await SMTPClient.connect(self.host, self.port, self.helo, self.start_tls,
                                            ca_file=self.ca_file)
        except (SMTPConnectionError, SMTPReplyError, ssl.SSLError) as exc:
            raise Temporary(str(exc) if isinstance(exc, SMTPConnectionError) else f"connect: {exc}") from None

    async def send(self, connection: object, sender: str, recipient: str, message: bytes) -> None:
        assert isinstance(connection, SMTPClient)
        try:
            await connection.send(sender, recipient, message)
        except SMTPReplyError as exc:
            raise (Permanent if 500 <= exc.code < 600 else Temporary)(f"reply {exc.code}") from None
        except SMTPConnectionError as exc:
            connection.abort()
            raise Temporary(f"connection: {exc}") from None

    def usable(self, connection: object) -> bool:
        return isinstance(connection, SMTPClient) and connection.open

    async def close(self, connection: object) -> None:
        if isinstance(connection, SMTPClient):
            await connection.quit()


class MaildirTransport(Transport):
    """Writes each copy into a maildir (tmp/ -> new/), for a trial run with no relay."""

    def __init__(self, path: Path):
        self.path = path
        for sub in ("tmp", "new", "cur"):
            make_directories(path / sub)

    def _write(self, sender: str, recipient: str, message: bytes) -> None:
        name = f"{time.time():.6f}.{os.getpid()}_{secrets.token_hex(6)}.{socket.gethostname()}"
        head = f"Return-Path: <{sender}>\r\nDelivered-To: {recipient}\r\n".encode()
        tmp = self.path / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, head + message)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.path / "new" / name)
        fsync_directory(self.path / "new")  # before the journal calls the copy sent

    async def send(self, connection: object, sender: str, recipient: str, message: bytes) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._write, sender, recipient, message)
        except OSError as exc:
            raise Temporary(f"outbox: {exc.strerror}") from None


@dataclass
class _Active:
    job: OutJob
    recipients: list[Recipient]
    progress: list[Progress]
    prefix: bytes
    shared: list[bytes]  # one packet per gpg batch
    suffix: bytes
    armorers: dict[int, SharedArmor] = field(default_factory=dict)  # by batch, made on first use
    ready: deque[int] = field(default_factory=deque)
    busy: set[int] = field(default_factory=set)  # copies a worker is sending right now

    def done(self) -> bool:
        return all(p.state in FINAL for p in self.progress)


class Deliverer:
    """Owns the outgoing jobs in memory and the delivery workers."""

    def __init__(self, outgoing: Outgoing, transport: Transport, concurrency: int,
                 retry: RetryPolicy = RetryPolicy(), on_final: Callable[[OutJob, list[Progress]], None] | None = None):
        self.outgoing = outgoing
        self.transport = transport
        self.concurrency = concurrency
        self.retry = retry
        self.on_final = on_final
        self.active: dict[str, _Active] = {}
        self._wake = asyncio.Event()

    # -- jobs ------------------------------------------------------------------
    def load(self, job: OutJob) -> None:
        """Take up a delivery job from disk. One taken up already, or gone because it was
        delivered meanwhile, is left alone; one that cannot be read is moved to bad/."""
        if job.qid in self.active:
            return
        try:
            recipients = self.outgoing.recipients(job)
            prefix, suffix = self.outgoing.envelope(job)
            shared = self.outgoing.shared(job)
            progress = self.outgoing.progress(job, len(recipients))
        except (OSError, ValueError) as exc:
            if not job.path.is_dir():
                return  # finished (by this deliverer) since the caller found it
            log.error("unreadable qid=%s %s; moved to bad/", job.qid, type(exc).__name__)
            self.outgoing.quarantine(job)
            return
        prepare = self.transport.prepare
        active = _Active(job, recipients, progress, prepare(prefix), shared, prepare(suffix))
        now = time.time()
        for index, state in enumerate(progress):
            if state.state in FINAL:
                continue
            if state.state == DEFERRED and state.next_try > now:
                asyncio.get_running_loop().call_later(state.next_try - now, self._requeue, job.qid, index)
            else:
                active.ready.append(index)
        self.active[job.qid] = active
        self._finish_if_done(active)
        self._wake.set()

    def _requeue(self, qid: str, index: int) -> None:
        active = self.active.get(qid)
        if active and active.progress[index].state not in FINAL and index not in active.ready \
                and index not in active.busy:
            active.ready.append(index)
            self._wake.set()

    def retry_now(self) -> int:
        count = 0
        for active in self.active.values():
            for index, state in enumerate(active.progress):
                if state.state == DEFERRED and index not in active.ready and index not in active.busy:
                    active.ready.append(index)
                    count += 1
        self._wake.set()
        return count

    def _next(self) -> tuple[_Active, int] | None:
        order = sorted(self.active.values(), key=lambda a: (KINDS.index(a.job.kind), a.job.created))
        for active in order:
            while active.ready:
                index = active.ready.popleft()
                # A copy being sent keeps its old state until its result is recorded: taking
                # it again (a second `queue retry`, an old timer) would send it twice.
                if index not in active.busy and active.progress[index].state not in FINAL:
                    return active, index
        return None

    def _finish_if_done(self, active: _Active) -> None:
        if not active.busy and active.done() and active.job.qid in self.active:
            del self.active[active.job.qid]
            self.outgoing.finish(active.job)
            counts = {state: sum(p.state == state for p in active.progress) for state in (SENT, FAILED)}
            log.info("delivered qid=%s sent=%d failed=%d", active.job.qid, counts[SENT], counts[FAILED])
            if self.on_final:
                self.on_final(active.job, active.progress)

    # -- one copy --------------------------------------------------------------
    def _message(self, active: _Active, recipient: Recipient) -> bytes:
        armorer = active.armorers.get(recipient.batch)
        if armorer is None:  # made here, in a worker thread: its checksum is slow for a large post
            armorer = active.armorers[recipient.batch] = SharedArmor(active.shared[recipient.batch],
                                                                     newline=b"\r\n")
        return active.prefix + armorer.armor(recipient.pkesk) + active.suffix

    async def _deliver(self, connection: object, active: _Active, index: int) -> object:
        recipient = active.recipients[index]
        sender = active.job.return_path.format(token=recipient.token)
        loop = asyncio.get_running_loop()
        message = await loop.run_in_executor(None, self._message, active, recipient)
        previous = active.progress[index]
        attempts = previous.attempts + 1
        try:
            if connection is None:
                connection = await self.transport.open()
            await self.transport.send(connection, sender, recipient.email, message)
            outcome = Progress(SENT, attempts, 0.0)
        except Permanent as exc:
            outcome = Progress(FAILED, attempts, 0.0)
            log.info("failed qid=%s copy=%d reason=%s", active.job.qid, index, exc)
        except Temporary as exc:
            now = time.time()
            if now - active.job.created > self.retry.lifetime:
                outcome = Progress(FAILED, attempts, 0.0)
                log.info("expired qid=%s copy=%d reason=%s", active.job.qid, index, exc)
            else:
                outcome = Progress(DEFERRED, attempts, now + self.retry.delay(attempts))
                log.info("deferred qid=%s copy=%d attempts=%d reason=%s", active.job.qid, index, attempts, exc)
        if connection is not None and not self.transport.usable(connection):
            connection = None
        await loop.run_in_executor(None, self.outgoing.record, active.job, index, outcome)
        active.progress[index] = outcome
        if outcome.state == DEFERRED:
            loop.call_later(outcome.next_try - time.time(), self._requeue, active.job.qid, index)
        return connection

    async def _worker(self, stop: asyncio.Event) -> None:
        connection: object = None
        try:
            while not stop.is_set():
                picked = self._next()
                if picked is None:
                    self._wake.clear()
                    if connection is not None:
                        await self.transport.close(connection)
                        connection = None
                    await _wait_any(self._wake, stop)
                    continue
                active, index = picked
                active.busy.add(index)
                try:
                    try:
                        connection = await self._deliver(connection, active, index)
                    finally:
                        active.busy.discard(index)
                    self._finish_if_done(active)
                except Exception as exc:  # a bug or a disk error: this worker must carry on
                    log.error("error qid=%s copy=%d %s; trying again in %ds", active.job.qid, index,
                              type(exc).__name__, self.retry.minimum)
                    connection = await self._drop(connection)
                    asyncio.get_running_loop().call_later(self.retry.minimum, self._requeue,
                                                          active.job.qid, index)
        finally:
            if connection is not None:
                await self.transport.close(connection)

    async def _drop(self, connection: object) -> None:
        """Give up a connection in an unknown state."""
        if connection is not None:
            with contextlib.suppress(Exception):
                await self.transport.close(connection)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._worker(stop) for _ in range(self.concurrency)))


async def _wait_any(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()

