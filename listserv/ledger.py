"""What the pipeline writes down besides the mail itself: each post's signature claimed once,
each refusal kept for admins, each bounce counted against its member.

Called by listserv.pipeline only; the stages it applies (`replayed`, BOUNCE_NOTICE_AT) are
decided elsewhere and are pure.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .deliver import Outcome
from .errors import ListservError, Refusal, Unauthorized
from .model import MailingList, Member, Rejection
from .spool import Job, Spool
from .stages.authorize import Authorized, replayed
from .stages.open import Opened
from .stages.route import Route
from .store import Store

log = logging.getLogger("listserv.settle")
BOUNCE_NOTICE_AT = 3  # admins hear of a member's bounces when they reach this count


@dataclass(frozen=True)
class Counted:
    """A bounce counted against a member (their count as it now stands)."""

    member: Member
    source: str  # "verp" (a report to the VERP address) or "rcpt" (the relay refused them)

    @property
    def reached(self) -> bool:
        """The count has just reached BOUNCE_NOTICE_AT: the admins are told, once."""
        return self.member.bounces == BOUNCE_NOTICE_AT


def claim_signature(events: Store, spool: Spool, job: Job, opened: Opened, sender: Authorized,
                    mailing_list: MailingList, keep: int) -> None:
    """Take the post's signature for this list once in the whole home, or undo `job`:
    Unauthorized("replay") when it was taken before (listserv.stages.authorize.replayed).
    Claimed after the job is on disk: a crash in between may deliver a post twice, never
    lose one that a client will retry (claiming first would refuse the retry)."""
    with _undone_on_error(spool, job):
        with events.transaction() as tx:
            now = time.time()
            earlier = tx.lists_that_took(opened.signature_id, now, keep)
            if replayed(earlier, mailing_list, sender.addressed):
                raise Unauthorized("replay", signer=opened.signer)
            tx.record_signature(opened.signature_id, mailing_list.address, now + keep)


@contextlib.contextmanager
def _undone_on_error(spool: Spool, job: Job) -> Iterator[None]:
    try:
        yield
    except BaseException:
        spool.remove(job)  # the client hears 451 or the refusal: keep no copy
        raise


def record_rejection(events: Store, store: Store, refusal: Refusal, route: Route) -> None:
    """Keep the specific reason where admins can read it (`listserv rejections`); the sender
    heard only the reply. Not for a list that does not exist, and never at the cost of the reply."""
    with contextlib.suppress(ListservError):
        if store.read().get_list(route.list) is None:
            return
        with events.transaction() as tx:
            tx.add_rejection(Rejection(route.list, time.time(), route.kind, refusal.reason,
                                       f"{refusal.code} {refusal.status}", refusal.signer, refusal.ref))


def count_bounce(store: Store, list_address: str, member: Member | None, source: str) -> Counted | None:
    """One more bounce for `member`: None when there is none (an unknown VERP token), or they
    left meanwhile."""
    if member is None:
        return None
    with store.transaction() as tx:
        if tx.get_member(list_address, member.email) is None:
            return None
        tx.count_bounce(list_address, member.email)
        return Counted(tx.require_member(list_address, member.email), source)


def count_refused(store: Store, outcome: Outcome) -> dict[int, Counted]:
    """A member the relay refused at RCPT (5xx) bounced, as if their server had reported it to
    the VERP address -- not when the relay refused every recipient of a job of several: that
    is the relay, not the members. By the copy's index in the job."""
    refused = [f for f in outcome.failures if f.reason.startswith("rcpt-5")]
    if outcome.sent == 0 and outcome.copies > 1 and len(refused) == outcome.copies:
        return {}
    counted = {}
    for failure in refused:
        found = count_bounce(store, outcome.job.list, _by_email(store, outcome.job.list, failure.email), "rcpt")
        if found is not None:
            counted[failure.index] = found
            log.info("bounce list=%s member=%s source=rcpt qid=%s", outcome.job.list, found.member.fingerprint,
                     outcome.job.qid)
    return counted


def _by_email(store: Store, list_address: str, email: str) -> Member | None:
    return store.read().get_member(list_address, email)
