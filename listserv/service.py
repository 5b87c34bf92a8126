"""`listserv serve`: the SMTP listener and the workers, on one asyncio loop.

    SMTP DATA --accept()--> spool/incoming --distribute()--> spool/outgoing --Deliverer--> relay
             (checks pool)                  (work pool, alerts first)       (async workers)

Three thread pools, so that no kind of work can take the threads another needs: `checks`
([server] data_threads) for DATA checks, each within [server] data_timeout; `lookups` for
RCPT routing and bounces, which must answer at once whatever DATA checks are under way; and
`work` for fan-out and digests.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .config import Home, Settings
from .digest import Digests
from .deliver import Deliverer, MaildirTransport, RelayTransport, RetryPolicy, Transport
from .errors import CryptoError, EnvironmentProblem, ListservError, Refusal
from .keyring import Keyring
from .pipeline import Accepted, Services, distribute
from .smtpd import Handler, make_server
from .spool import KINDS, Job, Outgoing, Spool
from .store import Store
from .templates import Templates

log = logging.getLogger("listserv.service")
DRAIN_TIMEOUT = 60.0  # a stop waits this long for DATA checks under way to reply
POLL = 1.0  # seconds between looks at the spool for work other processes left there
REDISTRIBUTE_AFTER = 60.0  # a submission that hit a passing problem is tried again after this
LOOKUP_THREADS = 2  # RCPT routing and bounces: short store reads, one per client command
WORK_THREADS = 2  # the distributor and the digest scheduler each wait for one job at a time


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


def services_for(home: Home) -> Services:
    spool = Spool(home.spool)
    spool.prepare()
    return Services(Store(home.database), Keyring(home.keys), spool, Store(home.events))


def transport_for(options: ServeOptions, settings: Settings) -> Transport:
    if options.relay:
        return RelayTransport(*options.relay, starttls=settings.starttls,
                              ca_file=settings.tls_ca_file or None)
    return MaildirTransport(options.outbox)


class Service:
    def __init__(self, home: Home, settings: Settings, options: ServeOptions):
        self.home = home
        self.settings = settings
        self.options = options
        self._home_lock = lock_home(home)  # before services_for(), which sweeps the spool
        self.services = services_for(home)
        self.templates = Templates(home.templates)
        self.checks = ThreadPoolExecutor(max_workers=settings.data_threads, thread_name_prefix="listserv-check")
        self.lookups = ThreadPoolExecutor(max_workers=LOOKUP_THREADS, thread_name_prefix="listserv-lookup")
        self.work = ThreadPoolExecutor(max_workers=WORK_THREADS, thread_name_prefix="listserv-work")
        self.outgoing = Outgoing(self.services.spool)
        self.digests = Digests(self.services, self.templates, home.digests)
        retry = RetryPolicy(settings.retry_min, settings.retry_max, settings.lifetime)
        self.deliverer = Deliverer(self.outgoing, transport_for(options, settings), settings.concurrency, retry)
        self._stop = asyncio.Event()
        self._submissions: asyncio.PriorityQueue[tuple[int, float, int, Job]] = asyncio.PriorityQueue()
        self._order = itertools.count()

    def _enqueue(self, job: Job) -> None:
        self._submissions.put_nowait((KINDS.index(job.kind), job.received, next(self._order), job))

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
        try:
            result = await loop.run_in_executor(self.work, distribute, job, self.services,
                                                self.templates, self.digests.add)
        except (Refusal, CryptoError) as exc:
            reason = getattr(exc, "reason", type(exc).__name__)
            log.error("quarantined qid=%s reason=%s", job.qid, reason)
            self.services.spool.quarantine(job)
            return
        except (ListservError, OSError) as exc:  # a passing problem (disk full, database busy)
            log.error("deferred qid=%s stage=distribute %s", job.qid, type(exc).__name__)
            loop.call_later(REDISTRIBUTE_AFTER, self._enqueue, job)
            return
        except Exception:
            log.exception("quarantined qid=%s reason=internal-error", job.qid)
            self.services.spool.quarantine(job)
            return
        for out in (result.job, *result.notices):
            if out is not None:
                self.deliverer.load(out)
        log.info("fanned-out qid=%s copies=%d unusable=%s", job.qid, result.copies,
                 ",".join(result.unusable) or "-")

    async def _poller(self) -> None:
        """Picks up what other processes left in the spool: `queue retry`'s flag, and delivery
        jobs written by the CLI (`digest send`, welcomes) or by the SMTP threads (notices)."""
        flag = self.services.spool.retry_flag
        while True:
            await asyncio.sleep(POLL)
            try:
                if flag.exists():
                    flag.unlink(missing_ok=True)
                    log.info("retry-now copies=%d", self.deliverer.retry_now())
                for out in self.outgoing.jobs():
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
                lists = self.digests.lists_with_backlog()
            except Exception as exc:
                log.error("error stage=digest %s", type(exc).__name__)
                continue
            for address in lists:
                try:
                    job = await loop.run_in_executor(self.work, self.digests.send_if_due, address)
                    if job is not None:
                        self.deliverer.load(job)
                        log.info("digest qid=%s list=%s", job.qid, address)
                except Exception as exc:  # one list's digest must not stop the others' (or the next)
                    log.error("digest list=%s failed: %s", address, type(exc).__name__)

    async def run(self, ready: Callable[[str, int], None]) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        handler = Handler(self.services, self.templates, checks=self.checks, lookups=self.lookups,
                          budget=self.settings.data_timeout, on_accepted=self._accepted)
        factory = make_server(handler, "listserv", self.settings.max_data_kb * 1024)
        host, port = self.options.listen
        server = await loop.create_server(factory, host=host, port=port)
        bound = server.sockets[0].getsockname()
        for out in self.outgoing.jobs():
            self.deliverer.load(out)
        waiting = self.services.spool.submissions()
        for job in waiting:
            self._enqueue(job)
        log.info("listening on %s:%s (resuming %d submissions, %d delivery jobs)",
                 bound[0], bound[1], len(waiting), len(self.deliverer.active))
        ready(bound[0], bound[1])
        tasks = [asyncio.ensure_future(c) for c in (self._distributor(), self._poller(),
                                                     self._scheduler(), self.deliverer.run(self._stop))]
        try:
            await self._stop.wait()
        finally:
            log.info("stopping")
            server.close()  # no new connections; checks under way finish and reply
            if not await handler.drain(DRAIN_TIMEOUT):
                log.error("stopping with DATA checks still under way")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()
            for pool in (self.checks, self.lookups, self.work):
                pool.shutdown(wait=True)  # a check abandoned after its 451 finishes here
