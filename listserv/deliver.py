"""Delivery: each member's copy in its own SMTP transaction, durably recorded, retried with backoff.

Workers take copies from the fan-out jobs in priority order (alerts first, then oldest), send
them through a relay (listserv.smtpclient, one reused connection per worker) or into an outbox maildir,
and append each result to the job's journal with an fsync *before* taking the next copy.
The one window of at-least-once: the relay has said 250 but the journal line is not yet on
disk when the process dies; that copy is sent again after restart.

4xx replies and connection errors defer a copy (backoff from `retry_min` doubling to
`retry_max`, given up after `lifetime`); 5xx replies fail it permanently. Each result carries
a reason code, STAGE-CODE[-ENHANCED] (rcpt-550-5.1.1, data-552-5.3.4, expired-data-451):
a refusal at RCPT is about the member, one at MAIL or DATA about the copy.

When every copy of a job is final, the job's `Outcome` goes to `on_final` (listserv.settle:
bounces, notices, digest bookkeeping) before the job leaves the spool, so a crash in
between settles it again rather than never. The log says `delivered` only for a job that
delivered something; one that delivered nothing is `undelivered`.

Every connection to the relay reads its SIZE (`RelayTransport.on_size`), and a copy refused
as too large tells its size (`on_too_large`): listserv.relaylimit keeps what they teach.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import secrets
import socket
import ssl
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable


from .config import Settings
from .openpgp import SharedArmor
from .errors import DeliveryDeferred, DeliveryFailed, SMTPConnectionError, SMTPReplyError
from .smtpclient import SMTPClient, dot_safe
from .durable import fsync_directory, make_directories
from .model import PLAIN, PRIORITY, Recipient
from .spool import DEFERRED, FAILED, FINAL, SENT, Outgoing, OutJob, Progress

log = logging.getLogger("listserv.deliver")


@dataclass(frozen=True)
class RetryPolicy:
    # The defaults are the settings' (listserv/config.py), written there once.
    minimum: float = Settings.retry_min
    maximum: float = Settings.retry_max
    lifetime: float = Settings.lifetime

    def delay(self, attempts: int) -> float:
        return min(self.maximum, self.minimum * (2 ** max(0, attempts - 1)))


_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")
_NOT_CODE = re.compile(r"[^A-Za-z0-9.]+")


def code(text: str) -> str:
    """A reason as one word for the journal and the log: "connect: ConnectionRefusedError"
    becomes connect-ConnectionRefusedError."""
    return _NOT_CODE.sub("-", text).strip("-") or "unknown"


def reply_reason(exc: SMTPReplyError) -> str:
    """A reply as a reason code: its stage, code and enhanced status -- never its text, which
    may quote the member's address."""
    enhanced = _ENHANCED.match(exc.text)
    return f"{exc.stage or 'reply'}-{exc.code}" + (f"-{enhanced.group(1)}" if enhanced else "")


def too_large(reason: str) -> bool:
    """A refusal of the copy for its size: 552 at MAIL (SIZE=) or DATA, unless the enhanced
    status says the mailbox is full (5.2.2)."""
    stage, _, rest = reason.partition("-")
    return stage in ("mail", "data") and rest.startswith("552") and not rest.endswith("5.2.2")


@dataclass(frozen=True)
class Failure:
    """A copy that failed for good."""

    index: int
    email: str  # from the job's recipient record: who it was for (never logged)
    fingerprint: str  # the member's key, for logs and notices ("" in jobs written before it)
    reason: str  # a reason code, e.g. rcpt-550-5.1.1


@dataclass(frozen=True)
class Outcome:
    """How a delivery job ended: what listserv.settle decides from."""

    job: OutJob
    copies: int
    sent: int
    failures: tuple[Failure, ...]


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
    PROBE_TIMEOUT = 10.0  # a start must not wait a minute for a relay that drops packets

    def __init__(self, host: str, port: int, helo: str = "localhost", starttls: str = "auto",
                 ca_file: str | None = None, on_size: Callable[[int | None], None] | None = None,
                 on_too_large: Callable[[int], None] | None = None):
        self.host, self.port, self.helo = host, port, helo
        self.on_size = on_size  # the SIZE each connection's EHLO announced (SMTPClient.size)
        self.on_too_large = on_too_large  # the size of a copy refused as too large
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

    async def open(self, timeout: float = 60.0) -> SMTPClient:
        try:
            client = await SMTPClient.connect(self.host, self.port, self.helo, self.start_tls,
                                              timeout=timeout, ca_file=self.ca_file)
        except SMTPReplyError as exc:
            raise DeliveryDeferred(reply_reason(exc)) from None
        except SMTPConnectionError as exc:  # says which step failed: "connect: ConnectionRefusedError"
            raise DeliveryDeferred(code(str(exc))) from None
        except ssl.SSLError as exc:
            raise DeliveryDeferred(code(f"starttls: {type(exc).__name__}")) from None
        if self.on_size is not None:
            self.on_size(client.size)
        return client

    async def probe(self) -> int | None:
        """Connect, EHLO, QUIT: the relay's SIZE (SMTPClient.size); DeliveryDeferred if unreachable."""
        client = await self.open(self.PROBE_TIMEOUT)
        await client.quit()
        return client.size

    async def send(self, connection: object, sender: str, recipient: str, message: bytes) -> None:
        assert isinstance(connection, SMTPClient)
        try:
            await connection.send(sender, recipient, message)
        except SMTPReplyError as exc:
            reason = reply_reason(exc)
            if 500 <= exc.code < 600:
                if too_large(reason) and self.on_too_large is not None:
                    self.on_too_large(len(message))
                raise DeliveryFailed(reason) from None
            raise DeliveryDeferred(reason) from None
        except SMTPConnectionError as exc:
            connection.abort()
            raise DeliveryDeferred(code(str(exc))) from None

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
            raise DeliveryDeferred(f"outbox-{exc.errno}") from None


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
                 retry: RetryPolicy = RetryPolicy(),
                 on_final: Callable[[Outcome], Awaitable[None]] | None = None):
        self.outgoing = outgoing
        self.transport = transport
        self.concurrency = concurrency
        self.retry = retry
        self.on_final = on_final
        self.active: dict[str, _Active] = {}
        self.settling: dict[str, asyncio.Future] = {}  # jobs all final, being settled
        self._wake = asyncio.Event()

    # -- jobs ------------------------------------------------------------------
    def load(self, job: OutJob) -> None:
        """Take up a delivery job from disk. One taken up already, or gone because it was
        delivered meanwhile, is left alone; one that cannot be read is moved to bad/."""
        if job.qid in self.active or job.qid in self.settling:
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
            self.outgoing.spool.quarantine(job)
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
        order = sorted(self.active.values(), key=lambda a: (PRIORITY[a.job.kind], a.job.created))
        for active in order:
            while active.ready:
                index = active.ready.popleft()
                # A copy being sent keeps its old state until its result is recorded: taking
                # it again (a second `queue retry`, an old timer) would send it twice.
                if index not in active.busy and active.progress[index].state not in FINAL:
                    return active, index
        return None

    def _finish_if_done(self, active: _Active) -> None:
        qid = active.job.qid
        if not active.busy and active.done() and qid in self.active:
            del self.active[qid]
            self.settling[qid] = asyncio.ensure_future(self._settle(active))

    async def _settle(self, active: _Active) -> None:
        """Report the job's outcome, hand it to on_final, then take the job off the spool."""
        job = active.job
        failures = tuple(Failure(index, active.recipients[index].email, active.recipients[index].fingerprint,
                                 state.reason) for index, state in enumerate(active.progress) if state.state == FAILED)
        outcome = Outcome(job, len(active.progress), sum(p.state == SENT for p in active.progress), failures)
        reasons = ",".join(f"{reason}x{count}" for reason, count in
                           sorted(Counter(f.reason or "unknown" for f in failures).items())) or "-"
        if outcome.sent:
            log.info("delivered qid=%s sent=%d failed=%d kind=%s", job.qid, outcome.sent, len(failures), job.kind)
        else:
            log.warning("undelivered qid=%s failed=%d kind=%s reasons=%s", job.qid, len(failures), job.kind,
                        reasons)
        loop = asyncio.get_running_loop()
        try:
            if self.on_final is not None:
                await self.on_final(outcome)
            await loop.run_in_executor(None, self.outgoing.spool.remove, job)
        except Exception as exc:  # the job stays on disk; taken up and settled again later
            log.error("error qid=%s stage=settle %s; trying again in %ds", job.qid, type(exc).__name__,
                      self.retry.minimum)
            loop.call_later(self.retry.minimum, self.settling.pop, job.qid, None)
            return
        self.settling.pop(job.qid, None)

    # -- one copy --------------------------------------------------------------
    def _message(self, active: _Active, recipient: Recipient) -> bytes:
        if recipient.batch == PLAIN:  # signed only: the whole message is the prefix
            return active.prefix + active.suffix
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
        member = recipient.fingerprint or "-"
        try:
            if connection is None:
                connection = await self.transport.open()
            await self.transport.send(connection, sender, recipient.email, message)
            outcome = Progress(SENT, attempts, 0.0)
        except DeliveryFailed as exc:
            outcome = Progress(FAILED, attempts, 0.0, str(exc))
            log.info("failed qid=%s copy=%d member=%s reason=%s", active.job.qid, index, member, exc)
        except DeliveryDeferred as exc:
            now = time.time()
            if now - active.job.created > self.retry.lifetime:
                outcome = Progress(FAILED, attempts, 0.0, f"expired-{exc}")
                log.info("expired qid=%s copy=%d member=%s reason=%s", active.job.qid, index, member, exc)
            else:
                outcome = Progress(DEFERRED, attempts, now + self.retry.delay(attempts), str(exc))
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
        # Jobs whose last copy was just recorded: settled before the workers' end is reported.
        await asyncio.gather(*list(self.settling.values()), return_exceptions=True)


async def _wait_any(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()

