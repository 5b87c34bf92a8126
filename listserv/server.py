"""`listserv serve`: the SMTP listener and the workers, on one asyncio loop.

    SMTP DATA --receive()--> spool/incoming --distribute()--> spool/outgoing --Deliverer--> relay
              (checks pool)                  (work pool, alerts first)       (async workers)
                                                                 settle() <-- a job's end

Three thread pools, so that no kind of work can take the threads another needs: `checks`
([server] data_threads) for DATA checks, each within [server] data_timeout; `lookups` for
RCPT routing and bounces, which must answer at once whatever DATA checks are under way; and
`work` for fan-out, digests and the daily key watch (listserv.keywatch).
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import logging
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import keywatch, notices, relaylimit, rotation
from .config import Home, Settings, format_hostport
from .context import Context
from .deliver import Deliverer, MaildirTransport, Outcome, RelayTransport, RetryPolicy, Transport
from .errors import DeliveryDeferred, EnvironmentProblem, ListservError, Refusal, retryable
from .model import PRIORITY, Accepted, Kind, iso, split_user_id
from .pipeline import answer, distribute, forward, send_key, settle
from .revocation import tell_admins
from .smtpd import Handler, make_server
from .spool import Job, OutJob
from .stages.expiry import RUN_EVERY, watch_due

log = logging.getLogger("listserv.server")
DRAIN_TIMEOUT = 60.0  # a stop waits this long for DATA checks under way to reply
POLL = 1.0  # seconds between looks at the spool for work other processes left there
REDISTRIBUTE_AFTER = 60.0  # a submission that hit a passing problem is tried again after this
LOOKUP_THREADS = 2  # RCPT routing and bounces: short store reads, one per client command
WORK_THREADS = 3  # the distributor, the digest scheduler and the key watch each wait for one job at a time
WATCH_RETRY = 3600.0  # a key watch that failed is tried again after this (not at every POLL)


# The submissions that get an answer of their own rather than a fan-out to the members.
_ANSWERED = {Kind.REQUEST: answer, Kind.OWNER: forward, Kind.SENDKEY: send_key}


def watch_keys(ctx: Context, now: float) -> tuple[keywatch.Report, tuple[OutJob, ...]]:
    """One run of the key watch (listserv.keywatch) at `now`, and the admins of a list where it
    found a pinned key revoked told as listserv.revocation tells them: what to load."""
    report = keywatch.watch(ctx.store, ctx.events, ctx.keyring, ctx.outbox, ctx.templates, now)
    rotation.sweep(ctx.store, ctx.keyring, now)  # changes to a new key past their deadline: their keys go
    told = tuple(job for _, job in tell_admins(ctx, report.revocations))
    return report, report.jobs + told + expire_holds(ctx, now)


def expire_holds(ctx: Context, now: float) -> tuple[OutJob, ...]:
    """Held posts older than their list's max_days_to_hold are discarded and the admins told;
    while any still wait, the admins are reminded (once a day: the key watch's rhythm)."""
    jobs: list[OutJob] = []
    for ml in ctx.store.read().lists():
        roster = ctx.roster(ml.address)
        gone = ctx.holds.expired(ml.address, ml.option("max_days_to_hold"), now)
        for held in gone:
            ctx.holds.drop(held, "expired")
        waiting = ctx.holds.waiting(ml.address)
        jobs += ctx.outbox.notices([notices.held_reminder(ctx.templates, roster, gone, waiting)])
    return tuple(jobs)


@dataclass(frozen=True)
class ServeOptions:
    listen: tuple[str, int]
    relay: tuple[str, int] | None
    outbox: Path


def lock_home(home: Home) -> int:
    """Hold data/serve.lock while this process serves. A second server on the same home would
    deliver every copy a second time, and its start would sweep the first one's spool tmp/."""
    home.data.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(home.data / "serve.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise EnvironmentProblem(f"Another listserv serve is running on {home.root}.") from None
    return fd  # released when the process ends


def _why(exc: OSError) -> str:
    """'address already in use': asyncio wraps the bind error's text in its own words, and a
    name that does not resolve has only the resolver's text."""
    if exc.errno and exc.errno > 0 and not isinstance(exc, socket.gaierror):
        text = os.strerror(exc.errno)
    else:
        text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def _reason(job: Job, exc: Exception) -> str:
    """Why a job was set aside, for the log and the admins' notice: a refusal's reason code,
    an error's class -- or, for a bug, "internal-error" (its traceback goes to the log)."""
    if isinstance(exc, Refusal):
        return exc.reason
    if isinstance(exc, ListservError):
        return type(exc).__name__
    log.error("error qid=%s stage=distribute unexpected", job.qid, exc_info=exc)
    return "internal-error"


def transport_for(options: ServeOptions, settings: Settings,
                  on_size: Callable[[int | None], None] | None = None,
                  on_too_large: Callable[[int], None] | None = None) -> Transport:
    if options.relay:
        return RelayTransport(*options.relay, starttls=settings.starttls,
                              ca_file=settings.tls_ca_file or None, on_size=on_size,
                              on_too_large=on_too_large)
    return MaildirTransport(options.outbox)


class Server:
    def __init__(self, home: Home, settings: Settings, options: ServeOptions):
        self.home = home
        self.settings = settings
        self.options = options
        self._home_lock = lock_home(home)  # before Context.open(), which sweeps the spool
        self.ctx = Context.open(home)
        self.ctx.spool.sweep()  # a crash's half-written jobs: nobody else may be writing now
        self._complete_list_keys()
        self.checks = ThreadPoolExecutor(max_workers=settings.data_threads, thread_name_prefix="listserv-check")
        self.lookups = ThreadPoolExecutor(max_workers=LOOKUP_THREADS, thread_name_prefix="listserv-lookup")
        self.work = ThreadPoolExecutor(max_workers=WORK_THREADS, thread_name_prefix="listserv-work")
        retry = RetryPolicy(settings.retry_min, settings.retry_max, settings.lifetime)
        self.relay = format_hostport(*options.relay) if options.relay else None
        self.transport = transport_for(options, settings, self._announced, self._refused_size)
        self.deliverer = Deliverer(self.ctx.outgoing, self.transport, settings.concurrency, retry,
                                   on_final=self._settled)
        self._stop = asyncio.Event()
        self._submissions: asyncio.PriorityQueue[tuple[int, float, int, Job]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._picked: set[str] = set()

    def _complete_list_keys(self) -> None:
        """Before anything listens: a list key made by an older listserv gets its user ids for
        LIST-request@ and LIST-owner@, so members' clients can encrypt to those addresses and
        the next welcome or x-get-listkey carries them. One key listing when none is missing.
        A failure is logged and the server starts all the same: the key still decrypts and
        signs, and the next start tries again -- a damaged database is answered at RCPT."""
        try:
            added = self.ctx.complete_list_keys()
        except Exception as exc:
            log.error("error stage=list-key %s", type(exc).__name__)
            return
        for address, uids in added.items():
            log.info("list-key list=%s added-uids=%s", address, ",".join(split_user_id(uid)[1] for uid in uids))

    # -- the relay's limit (listserv.relaylimit) ---------------------------------------
    def _learn(self, limit: relaylimit.RelayLimit) -> None:
        path = self.ctx.spool.relay_file
        old = relaylimit.load(path)
        if (old.relay, old.size) != (limit.relay, limit.size):
            relaylimit.save(path, limit)
            # No host or port here: the log names no address (the startup line says where copies go).
            log.info("relay-limit size=%s source=%s", limit.size or "none", "relay" if limit.relay else "outbox")

    def _announced(self, size: int | None) -> None:
        self._learn(relaylimit.learned(relaylimit.load(self.ctx.spool.relay_file), self.relay or "", size))

    def _refused_size(self, size: int) -> None:
        self._learn(relaylimit.refused(relaylimit.load(self.ctx.spool.relay_file), self.relay or "", size))

    async def _probe_relay(self) -> None:
        """Learn the relay's SIZE before the first post is checked against it."""
        if not isinstance(self.transport, RelayTransport):
            self._learn(relaylimit.NONE)  # the outbox takes anything
            return
        try:
            await self.transport.probe()  # its EHLO answer reaches _announced
        except DeliveryDeferred as exc:
            kept = relaylimit.load(self.ctx.spool.relay_file)
            log.warning("relay-limit unreachable reason=%s; keeping size=%s", exc, kept.size or "none")

    async def _settled(self, outcome: Outcome) -> None:
        loop = asyncio.get_running_loop()
        self._load(*await loop.run_in_executor(self.work, settle, outcome, self.ctx))

    def _load(self, *jobs: OutJob | None) -> None:
        for job in jobs:
            if job is not None:
                self.deliverer.load(job)

    def _enqueue(self, job: Job) -> None:
        self._submissions.put_nowait((PRIORITY[job.kind], job.received, next(self._order), job))

    def _accepted(self, accepted: Accepted) -> None:
        self._enqueue(accepted.job)

    async def _distributor(self) -> None:
        while True:
            *_, job = await self._submissions.get()
            try:
                await self._distribute(job)
            except Exception as exc:  # one submission must never stop the distributor
                log.error("error qid=%s stage=distribute %s", job.qid, type(exc).__name__)

    async def _distribute(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        path = _ANSWERED.get(job.kind, distribute)
        try:
            result = await loop.run_in_executor(self.work, path, job, self.ctx)
        except Exception as exc:  # the error decides: a passing problem waits, anything else is set aside
            if retryable(exc):
                log.error("deferred qid=%s stage=distribute %s", job.qid, type(exc).__name__)
                loop.call_later(REDISTRIBUTE_AFTER, self._enqueue, job)
            else:
                await self._quarantine(job, _reason(job, exc))
            return
        if job.kind in _ANSWERED:
            self._load(*result)  # the reply (and notices to the admins), the forward, the key
            log.info("answered qid=%s kind=%s jobs=%d", job.qid, job.kind, len(result))
            return
        self._load(result.job, *result.notices)
        log.info("fanned-out qid=%s copies=%d unusable=%s", job.qid, result.copies,
                 ",".join(result.unusable) or "-")

    async def _quarantine(self, job: Job, reason: str) -> None:
        """Set a submission aside that was answered 250 but cannot be sent, and tell the
        list's admins: accepted and then dropped must never be silent."""
        log.error("quarantined qid=%s reason=%s", job.qid, reason)
        self.ctx.spool.quarantine(job)
        try:
            told = await asyncio.get_running_loop().run_in_executor(self.work, self._tell_quarantined, job, reason)
        except Exception as exc:  # the log line above is then all that is left
            log.error("error qid=%s stage=quarantine-notice %s", job.qid, type(exc).__name__)
            return
        self._load(*told)

    def _tell_quarantined(self, job: Job, reason: str) -> tuple[OutJob, ...]:
        roster = self.ctx.store.read().roster_if_any(job.list)
        return self.ctx.outbox.notices([notices.quarantined(self.ctx.templates, roster, job.qid, reason)
                                        if roster else None])

    async def _poller(self) -> None:
        """Picks up what other processes left in the spool: `queue retry`'s flag, and delivery
        jobs written by the CLI (`digest send`, welcomes) or by the SMTP threads (notices)."""
        flag = self.ctx.spool.retry_flag
        while True:
            await asyncio.sleep(POLL)
            try:
                if flag.exists():
                    flag.unlink(missing_ok=True)
                    log.info("retry-now copies=%d", self.deliverer.retry_now())
                for job in self.ctx.spool.released():  # approved held posts (listserv.holds)
                    if job.qid not in self._picked:
                        self._picked.add(job.qid)
                        self._enqueue(job)
                for out in self.ctx.outgoing.jobs():
                    if out.qid not in self.deliverer.active:
                        self.deliverer.load(out)
            except Exception as exc:  # the poller must outlive any one bad look at the spool
                log.error("error stage=poll %s", type(exc).__name__)

    async def _scheduler(self) -> None:
        """Sends each list's digest when its schedule fires (missed times: one digest)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(POLL)
            try:
                lists = self.ctx.digests.lists_with_backlog()
            except Exception as exc:
                log.error("error stage=digest %s", type(exc).__name__)
                continue
            for address in lists:
                try:
                    job = await loop.run_in_executor(self.work, self.ctx.digests.send_if_due, address)
                    if job is not None:
                        self.deliverer.load(job)
                        log.info("digest qid=%s list=%s", job.qid, address)
                except Exception as exc:  # one list's digest must not stop the others' (or the next)
                    log.error("digest list=%s failed: %s", address, type(exc).__name__)

    async def _key_watch(self) -> None:
        """Runs the key watch once a day: its last run is kept in the events store, so a
        restart does not run it again, and a server that was down for days runs it once on
        start. An error is logged by its class and tried again in an hour; it never stops
        the server."""
        loop = asyncio.get_running_loop()
        try:
            last = keywatch.last_run(self.ctx.events)
        except Exception as exc:
            log.error("error stage=keywatch %s", type(exc).__name__)
            last = None
        start = time.time()
        due = start if last is None or watch_due(last, start) else last + RUN_EVERY
        log.info("keywatch next=%s", iso(due))
        while True:
            await asyncio.sleep(max(0.0, min(POLL, due - time.time())))
            if time.time() < due:
                continue
            now = time.time()
            try:
                report, jobs = await loop.run_in_executor(self.work, watch_keys, self.ctx, now)
            except Exception as exc:  # the watch must never stop the server
                log.error("error stage=keywatch %s", type(exc).__name__)
                due = now + WATCH_RETRY
                continue
            self._load(*jobs)
            due = now + RUN_EVERY
            log.info("keywatch warnings=%d summaries=%d missed=%d revoked=%s next=%s", report.warnings,
                     report.summaries, report.missed,
                     ",".join(r.fingerprint for r in report.revocations) or "-", iso(due))

    async def run(self, ready: Callable[[str, int], None]) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        await self._probe_relay()
        handler = Handler(self.ctx, checks=self.checks, lookups=self.lookups,
                          budget=self.settings.data_timeout, on_accepted=self._accepted)
        factory = make_server(handler, "listserv", self.settings.max_data_kb * 1024)
        host, port = self.options.listen
        try:
            server = await loop.create_server(factory, host=host, port=port)
        except OSError as exc:
            raise EnvironmentProblem(f"cannot listen on {format_hostport(host, port)}: {_why(exc)}.") from None
        bound = server.sockets[0].getsockname()
        self._load(*self.ctx.outgoing.jobs())
        rotation.sweep(self.ctx.store, self.ctx.keyring)  # key changes that expired while it was down
        waiting = self.ctx.spool.submissions()
        self._picked = {job.qid for job in waiting}  # the poller enqueues a released post once
        for job in waiting:
            self._enqueue(job)
        log.info("listening on %s:%s (resuming %d submissions, %d delivery jobs)",
                 bound[0], bound[1], len(waiting), len(self.deliverer.active))
        ready(bound[0], bound[1])
        tasks = [asyncio.ensure_future(c) for c in (self._distributor(), self._poller(), self._scheduler(),
                                                     self._key_watch(), self.deliverer.run(self._stop))]
        try:
            await self._stop.wait()
        finally:
            log.info("stopping")
            server.close()  # no new connections; checks under way finish and reply
            if not await handler.drain(DRAIN_TIMEOUT):
                log.error("stopping with DATA checks still under way")
            settling = list(self.deliverer.settling.values())
            if settling:  # a job just delivered is told about now, not at the next start
                await asyncio.wait(settling, timeout=DRAIN_TIMEOUT)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()
            for pool in (self.checks, self.lookups, self.work):
                pool.shutdown(wait=True)  # a check abandoned after its 451 finishes here
