"""The SMTP front door (aiosmtpd): RCPT and DATA checks; DATA goes to the pipeline.

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

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if envelope.rcpt_tos:
            return ONE_LIST_PER_MESSAGE
        try:
            await asyncio.get_running_loop().run_in_executor(self.executor, self._route, address)
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
            accepted = await loop.run_in_executor(self.executor, accept, raw, route_, self.services)
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


def make_server(handler: Handler, hostname: str, data_size_limit: int) -> Callable[[], SMTP]:
    def factory() -> SMTP:
        return ListservSMTP(handler, hostname=hostname, ident="listserv",
                            data_size_limit=data_size_limit, decode_data=False,
                            enable_SMTPUTF8=True, timeout=120)
    return factory
