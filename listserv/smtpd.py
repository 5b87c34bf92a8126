"""The SMTP front door (aiosmtpd): MAIL, RCPT and DATA checks; DATA goes to the pipeline.

A size the client declares (MAIL FROM ... SIZE=n, RFC 1870) is held against the largest any
list here takes at MAIL, and against the list's own at RCPT: 552 5.3.4 with the limit, before
the client sends the message (listserv.capacity).

aiosmtpd is imported only here. Slow work (gpg) runs in a thread pool, never on the event
loop's thread. No header is added to a message (aiosmtpd's X-Peer would leak the sender's IP),
and the log carries queue ids, reason codes and fingerprints only.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import Callable

from aiosmtpd.smtp import SMTP, Envelope, Session

from . import capacity
from .errors import ListservError, Refusal, TooLarge
from .pipeline import Accepted, Services, accept, bounce
from .stages.route import Route, route
from .templates import Templates

log = logging.getLogger("listserv.smtpd")

TEMPORARY_FAILURE = "451 4.3.0 A temporary problem on this server; please try again later."
ONE_LIST_PER_MESSAGE = "452 4.5.3 One list per message; send it again for the other recipients."
OVERSIZE = TooLarge("too-large", "The message is larger than this server accepts.").smtp_reply


class ListservSMTP(SMTP):
    """aiosmtpd's protocol engine with enhanced status codes on its own size refusals."""

    async def push(self, status: str) -> None:
        if status.startswith("552 Error"):
            status = OVERSIZE
        await super().push(status)


class Handler:
    def __init__(self, services: Services, templates: Templates, executor: Executor,
                 on_accepted: Callable[[Accepted], None] = lambda accepted: None):
        self.services = services
        self.templates = templates
        self.executor = executor
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
        lists = {ml.address for ml in self.services.store.read().lists()}
        return route(address, lists)

    def _largest(self) -> capacity.Limit | None:
        lists = self.services.store.read().lists()
        return capacity.largest_limit(lists, self.templates, capacity.copy_limit(self.services))

    def _limit(self, list_address: str) -> capacity.Limit:
        mailing_list = self.services.store.read().require_list(list_address)
        return capacity.post_limit(mailing_list, self.templates, capacity.copy_limit(self.services))

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        declared = _declared_size(mail_options)
        # A bounce (null sender) may carry a whole copy back: it is never held to a post's limit.
        if declared is not None and address not in ("", "<>"):
            try:
                limit = await asyncio.get_running_loop().run_in_executor(self.executor, self._largest)
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
        return "250 2.1.0 Sender ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if envelope.rcpt_tos:
            return ONE_LIST_PER_MESSAGE
        declared = None if envelope.mail_from in ("", "<>") else _declared_size(envelope.mail_options)
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(self.executor, self._route, address)
            if declared is not None and found.kind != "bounce":  # a post declared too large for its list
                limit = await loop.run_in_executor(self.executor, self._limit, found.list)
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
        return "250 2.1.5 Recipient ok"

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
        raw = envelope.original_content or envelope.content or b""
        route_: Route | None = None
        try:
            route_ = await loop.run_in_executor(self.executor, self._route, envelope.rcpt_tos[0])
            if route_.kind == "bounce":
                member = await loop.run_in_executor(self.executor, bounce, route_, self.services,
                                                    self.templates)
                log.info("bounce list=%s member=%s", route_.list, member or "unknown-token")
                return "250 2.0.0 Bounce noted"
            accepted = await loop.run_in_executor(self.executor, accept, raw, route_, self.services,
                                                  self.templates)
        except Refusal as refusal:
            log.info("refused ref=%s list=%s reason=%s signer=%s reply=%s %s", refusal.ref,
                     route_.list if route_ else "-", refusal.reason,
                     refusal.signer or "-", refusal.code, refusal.status)
            return refusal.smtp_reply
        except ListservError as exc:
            log.error("error stage=data %s: %s", type(exc).__name__, exc)
            return TEMPORARY_FAILURE
        except Exception:  # a bug must never reach the client as a traceback
            log.exception("error stage=data unexpected")
            return TEMPORARY_FAILURE
        log.info("accepted qid=%s list=%s kind=%s signer=%s", accepted.qid, accepted.list,
                 accepted.kind, accepted.signer)
        self.on_accepted(accepted)
        return f"250 2.0.0 Queued as {accepted.qid}"


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
