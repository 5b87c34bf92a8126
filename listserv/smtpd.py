"""The SMTP front door (aiosmtpd): MAIL, RCPT and DATA checks; DATA goes to the pipeline.

A size the client declares (MAIL FROM ... SIZE=n, RFC 1870) is held against the largest any
list here takes at MAIL, and against the list's own at RCPT: 552 5.3.4 with the limit, before
the client sends the message (listserv.capacity).

aiosmtpd is imported only here. Slow work runs in thread pools, never on the event loop's
thread: RCPT routing and bounces in one (`lookups`), DATA checks (gpg, MIME) in another
(`checks`), so however long a few messages take to check, other clients' EHLO, RCPT and
replies are not held up. Each DATA check has a time budget; past it the client hears 451
and the check may no longer write anything (`_Deadline`). No header is added to a message
(aiosmtpd's X-Peer would leak the sender's IP), and the log carries queue ids, reason codes
and fingerprints only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import threading
from concurrent.futures import Executor, Future
from typing import Any, Callable

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from . import capacity
from .errors import (BOUNCE_NOTED, DATA_OK, LINE_TOO_LONG, NO_STARTTLS, ONE_LIST_PER_MESSAGE, OVERSIZE, QUEUED,
                     RECIPIENT_OK, SENDER_OK, TEMPORARY_FAILURE, TOO_SLOW, Abandoned, ListservError, Refusal,
                     TooLarge)
from .mimescan import check_lines
from .model import Accepted, Kind
from .context import Context
from .pipeline import bounce, receive, receive_for_admins, receive_key_request, refused
from .stages.route import Route, route

log = logging.getLogger("listserv.smtpd")

_BLOCK = 256 * 1024  # DATA is read in blocks of this size
_END = b"\r\n.\r\n"


class ListservSMTP(SMTP):
    """aiosmtpd's protocol engine with enhanced status codes and a sentence on its own
    refusals, and a permanent refusal of STARTTLS where it is not offered (aiosmtpd's 454
    would have the client try again, and again)."""

    async def push(self, status: str) -> None:
        if status.startswith("552 Error"):
            status = OVERSIZE
        elif status.startswith("500 Line too long"):
            status = LINE_TOO_LONG
        await super().push(status)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, but reading blocks rather than lines. aiosmtpd spends about a
        microsecond of the event loop's thread on each line, so a 5 MB header folded into
        4-byte lines held every other client's EHLO and RCPT for over a second; here the end
        of DATA, dot-stuffing, the line limit and the size limit are found with bytes.find
        and replace. Replies and their order are aiosmtpd's."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        read = await self._read_data()
        if read is None:
            return  # the client hung up
        data, size = read
        if self.data_size_limit and size > self.data_size_limit:
            status = OVERSIZE
        elif _has_long_line(data, self.line_length_limit):
            status = LINE_TOO_LONG
        else:
            self.envelope.content = self.envelope.original_content = _unstuff(data)
            status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(DATA_OK if status is MISSING else status)

    async def _read_data(self) -> tuple[bytearray, int] | None:
        """The DATA lines as sent (dot-stuffed, each with its CRLF) up to the line ".", and
        their size. Past the size limit they are dropped as they come and only counted (the
        reply waits for the end, RFC 5321 §4.2.5). None if the client hung up."""
        data = bytearray(b"\r\n")  # so that the end line is found when it is the first line
        dropped = 0
        while True:
            block = await self._reader.read(_BLOCK)
            if not block:
                return None
            start = max(0, len(data) - len(_END) + 1)
            data += block
            end = data.find(_END, start)
            if end >= 0:
                break
            if self.data_size_limit and dropped + len(data) > self.data_size_limit + 2:
                dropped += len(data) - len(_END)  # keep what may begin the end line
                del data[:-len(_END)]
        if end + len(_END) < len(data):  # pipelined commands: give them back to the reader
            self._reader._buffer[:0] = data[end + len(_END):]  # asyncio's own buffer (private)
        if dropped:
            return bytearray(), dropped + end
        return data[2:end + 2], end

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        if not self.tls_context:
            await self.push(NO_STARTTLS)
            return
        await super().smtp_STARTTLS(arg)


def _has_long_line(data: bytearray, limit: int) -> bool:
    """aiosmtpd's rule: a line longer than `limit` (1001) with its CRLF is refused."""
    try:
        check_lines(data, limit - 2)
    except TooLarge:
        return True
    return False


def _unstuff(data: bytearray) -> bytes:
    """RFC 5321 §4.5.2: a line that begins with a dot lost its first dot in transit."""
    unstuffed = data.replace(b"\r\n.", b"\r\n")
    return bytes(unstuffed[1:] if unstuffed.startswith(b".") else unstuffed)


class _Deadline:
    """Decides, once, between a DATA check that runs out of time and the 451 its client hears.

    The check's first write (to the spool or a database) and the 451 race for it under a
    lock. A check that has begun to write is waited for, however late, and its own reply
    stands: half of it may be on disk. A check that has not is abandoned: the client hears
    451 and will send the message again, and every write the check tries later raises
    Abandoned, so nothing of it is kept (no queued copy, no claimed signature that would make
    the client's retry a replay, no rejection it never heard of)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = "checking"

    def write(self) -> None:
        """Called in the check's thread before each write."""
        with self._lock:
            if self._state == "abandoned":
                raise Abandoned("The DATA check ran out of time; its client heard 451.")
            self._state = "writing"

    def abandon(self) -> bool:
        """Called on the event loop when the time is up: True if the check may write no more."""
        with self._lock:
            if self._state == "writing":
                return False
            self._state = "abandoned"
            return True

    def guard(self, ctx: Context) -> Context:
        return dataclasses.replace(
            ctx,
            store=_Guarded(ctx.store, self, reads=("read",)),
            events=_Guarded(ctx.events, self, reads=("read",)),
            spool=_Guarded(ctx.spool, self, reads=("read_submission", "submissions")),
        )


class _Guarded:
    """`target`, whose every method except `reads` first asks the deadline for leave to write.
    Guarding all but the reads keeps a write that `pipeline.receive` may make in future covered."""

    def __init__(self, target: Any, deadline: _Deadline, reads: tuple[str, ...]):
        self._target, self._deadline, self._reads = target, deadline, reads

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value) or name in self._reads:
            return value

        def guarded(*args: Any, **kwargs: Any) -> Any:
            self._deadline.write()
            return value(*args, **kwargs)
        return guarded


class Handler:
    def __init__(self, ctx: Context, *, checks: Executor, lookups: Executor, budget: float,
                 on_accepted: Callable[[Accepted], None] = lambda accepted: None):
        self.ctx = ctx
        self.checks = checks  # DATA checks: pipeline.receive
        self.lookups = lookups  # RCPT routing and bounces: short reads and writes of the store
        self.budget = budget  # seconds from the end of DATA to the reply
        self.on_accepted = on_accepted
        self._checking = 0  # DATA checks under way: a stop waits for their replies
        self._idle = asyncio.Event()
        self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until no DATA check is under way (so every client got its reply)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def _route(self, address: str) -> Route:
        lists = {ml.address for ml in self.ctx.store.read().lists()}
        return route(address, lists)

    def _largest(self) -> capacity.Limit | None:
        lists = self.ctx.store.read().lists()
        return capacity.largest_limit(lists, self.ctx.templates, self.ctx.copy_limit())

    def _limit(self, list_address: str) -> capacity.Limit:
        mailing_list = self.ctx.store.read().require_list(list_address)
        return capacity.post_limit(mailing_list, self.ctx.templates, self.ctx.copy_limit())

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        declared = _declared_size(mail_options)
        # A bounce (null sender) may carry a whole copy back: it is never held to a post's limit.
        if declared is not None and address not in ("", "<>"):
            try:
                limit = await asyncio.get_running_loop().run_in_executor(self.lookups, self._largest)
            except ListservError as exc:
                log.error("error stage=mail %s: %s", type(exc).__name__, exc)
                return TEMPORARY_FAILURE
            except Exception:  # a bug must never reach the client as a traceback
                log.exception("error stage=mail unexpected")
                return TEMPORARY_FAILURE
            if limit is not None and declared > limit.size:
                refusal = limit.refusal()
                log.info("refused ref=%s stage=mail reason=%s size=%d limit=%d", refusal.ref, refusal.reason,
                         declared, limit.size)
                return refusal.smtp_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return SENDER_OK

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if envelope.rcpt_tos:
            return ONE_LIST_PER_MESSAGE
        declared = None if envelope.mail_from in ("", "<>") else _declared_size(envelope.mail_options)
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(self.lookups, self._route, address)
            if declared is not None and found.kind != Kind.BOUNCE:  # a post declared too large for its list
                limit = await loop.run_in_executor(self.lookups, self._limit, found.list)
                if declared > limit.size:
                    refusal = limit.refusal()
                    log.info("refused ref=%s list=%s reason=%s stage=rcpt size=%d limit=%d", refusal.ref,
                             found.list, refusal.reason, declared, limit.size)
                    return refusal.smtp_reply
        except Refusal as refusal:
            log.info("refused ref=%s stage=rcpt reason=%s", refusal.ref, refusal.reason)
            return refusal.smtp_reply
        except ListservError as exc:
            log.error("error stage=rcpt %s: %s", type(exc).__name__, exc)
            return TEMPORARY_FAILURE
        except Exception:  # a bug must never reach the client as a traceback
            log.exception("error stage=rcpt unexpected")
            return TEMPORARY_FAILURE
        envelope.rcpt_tos.append(address)
        return RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._checking += 1
        self._idle.clear()
        try:
            return await self._data(envelope)
        finally:
            self._checking -= 1
            if self._checking == 0:
                self._idle.set()

    async def _data(self, envelope: Envelope) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget
        raw = envelope.original_content or envelope.content or b""
        route_: Route | None = None
        try:
            route_ = await loop.run_in_executor(self.lookups, self._route, envelope.rcpt_tos[0])
            if route_.kind == Kind.BOUNCE:
                counted = await loop.run_in_executor(self.lookups, bounce, route_, self.ctx, raw)
                log.info("bounce list=%s member=%s", route_.list,
                         counted.member.fingerprint if counted else "unknown-token")
                return BOUNCE_NOTED
            accepted = await self._check(raw, route_, envelope.mail_from or "", deadline - loop.time())
        except Refusal as refusal:
            log.info("refused ref=%s list=%s reason=%s signer=%s reply=%s %s", refusal.ref,
                     route_.list if route_ else "-", refusal.reason,
                     refusal.signer or "-", refusal.code, refusal.status)
            return refusal.smtp_reply
        except _TimeUp as late:
            log.warning("timeout ref=%s list=%s stage=data budget=%gs", late.ref,
                        route_.list if route_ else "-", self.budget)
            return TOO_SLOW
        except ListservError as exc:
            log.error("error stage=data %s: %s", type(exc).__name__, exc)
            return TEMPORARY_FAILURE
        except Exception:  # a bug must never reach the client as a traceback
            log.exception("error stage=data unexpected")
            return TEMPORARY_FAILURE
        job = accepted.job
        log.info("accepted qid=%s list=%s kind=%s signer=%s", job.qid, job.list, job.kind, accepted.signer)
        self.on_accepted(accepted)
        return QUEUED.format(qid=job.qid)

    async def _check(self, raw: bytes, route_: Route, sender: str, budget: float) -> Accepted:
        """pipeline.receive (or its kin) in the checks pool within `budget` seconds, else _TimeUp."""
        deadline = _Deadline()
        future = self.checks.submit(_receive, raw, route_, sender, deadline.guard(self.ctx))
        waiter = asyncio.wrap_future(future)
        try:
            done, _ = await asyncio.wait({waiter}, timeout=max(0.0, budget))
        except asyncio.CancelledError:  # the client hung up: it will send the message again
            if future.cancel() or deadline.abandon():
                waiter.cancel()
            raise
        if not done and (future.cancel() or deadline.abandon()):
            waiter.cancel()  # its outcome, when it comes, is the log's alone
            late = _TimeUp()
            future.add_done_callback(late.log)
            raise late
        return await waiter  # done, or writing: its reply stands however late


def _receive(raw: bytes, route_: Route, sender: str, ctx: Context) -> Accepted:
    """The pipeline's path for the address: a post, an alert or a request (receive), mail to
    the admins (LIST-owner@) or a request for the list's key (LIST-sendkey@, which alone reads
    the envelope sender). A refusal's reason is kept for admins in the same check (within its
    deadline: a check abandoned after its 451 keeps no record either)."""
    try:
        if route_.kind == Kind.OWNER:
            return receive_for_admins(raw, route_, ctx)
        if route_.kind == Kind.SENDKEY:
            return receive_key_request(raw, route_, sender, ctx)
        return receive(raw, route_, ctx)
    except Refusal as refusal:
        refused(refusal, route_, ctx)
        raise


class _TimeUp(Exception):
    """A DATA check ran past its budget and was abandoned (or never started)."""

    def __init__(self) -> None:
        super().__init__()
        self.ref = secrets.token_hex(4)

    def log(self, future: Future) -> None:
        """The abandoned check's own end (in its thread): by design it kept nothing."""
        error = None if future.cancelled() else future.exception()
        if future.cancelled():
            outcome = "never-started"
        elif isinstance(error, Abandoned):
            outcome = "abandoned"
        elif isinstance(error, Refusal):
            outcome = f"refused reason={error.reason}"
        elif error is not None:
            outcome = f"failed {type(error).__name__}"
        else:  # cannot happen: accepting writes to the spool, which the deadline refuses
            log.error("late ref=%s stage=data outcome=accepted-after-451", self.ref)
            return
        log.info("late ref=%s stage=data outcome=%s", self.ref, outcome)


def _declared_size(mail_options: list[str]) -> int | None:
    """SIZE=n of MAIL FROM (aiosmtpd checked it is a number)."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None


def make_server(handler: Handler, hostname: str, data_size_limit: int) -> Callable[[], SMTP]:
    def factory() -> SMTP:
        return ListservSMTP(handler, hostname=hostname, ident="listserv",
                            data_size_limit=data_size_limit, decode_data=False,
                            enable_SMTPUTF8=True, timeout=120)
    return factory
