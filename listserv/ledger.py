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
from dataclasses import asdict, dataclass, replace


from .deliver import Outcome
from .errors import ListservError, Refusal, Unauthorized
from .keyring import Keyring
from .model import ACTIVE, MailingList, Member, Rejection, fingerprint_format
from .stages.commands import Request, help_lines
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


@dataclass(frozen=True)
class Done:
    """A request's outcome, as kept with it: who asked, each line's result, what follows."""

    requester: Member  # as they were when the request ran
    results: tuple[tuple[str, str], ...]  # (the line as written, its result in words)
    refused: str | None  # why nothing ran; None: every line ran
    attach_key: bool = False  # x-get-listkey: the reply carries the list's key
    left: bool = False  # x-leave: the requester is gone; the admins are told

    @classmethod
    def of(cls, record: dict) -> Done:
        return cls(Member(**record["requester"]), tuple(tuple(r) for r in record["results"]), record["refused"],
                   record["attach_key"], record["left"])


def run_request(store: Store, qid: str, mailing_list: MailingList, signer: str, request: Request) -> Done:
    """Run a request's commands, all of them or none, in one store transaction, once per queue
    id: run again after a crash it gives the outcome it had (a leaver is gone by then). The
    signer must still be a member in good standing, as for a post."""
    with store.transaction() as tx:
        kept = tx.get_request(qid)
        if kept is not None:
            return Done.of(kept)
        member = tx.member_by_fingerprint(mailing_list.address, signer)
        if member is None:
            raise Unauthorized("sender-removed", signer=signer)
        if member.state != ACTIVE:
            raise Unauthorized("key-revoked", signer=signer)
        done = _run(tx, mailing_list, member, request)
        tx.add_request({"qid": qid, "list": mailing_list.address, "at": time.time(), "signer": signer,
                        "commands": list(request.keywords), "requester": asdict(member),
                        "results": [list(r) for r in done.results], "refused": done.refused,
                        "attach_key": done.attach_key, "left": done.left})
    log.info("request qid=%s list=%s signer=%s commands=%s outcome=%s", qid, mailing_list.address, signer,
             ",".join(request.keywords) or "-", "refused" if done.refused else "done")
    return done


def _run(tx, mailing_list: MailingList, member: Member, request: Request) -> Done:
    refused = request.refused or _why_not(tx, mailing_list, member, request)
    if refused:
        return Done(member, (), refused)
    results, current = [], member
    for line in request.lines:
        keyword = line.command.keyword
        if keyword == "help":
            results.append((line.text, "\n".join(help_lines(member))))
        elif keyword == "status":
            results.append((line.text, _status(current)))
        elif keyword == "get-listkey":
            results.append((line.text, f"The list's key ({fingerprint_format(mailing_list.fingerprint)}) is attached."))
        elif keyword == "mode":
            mode = line.arguments[0]
            was, current = current.mode, replace(current, mode=mode)
            tx.update_member(current)
            results.append((line.text, f"Your mode is {mode}." + ("" if was != mode else " (It was already.)")))
        elif keyword == "leave":
            tx.remove_member(mailing_list.address, member.email)
            results.append((line.text, f"You have left {mailing_list.address}. This is the last message you get from it."))
    keywords = request.keywords
    return Done(member, tuple(results), None, "get-listkey" in keywords, "leave" in keywords)


def _why_not(tx, mailing_list: MailingList, member: Member, request: Request) -> str | None:
    """A reason the whole request may not run, found before anything runs."""
    for index, line in enumerate(request.lines):
        if line.command.keyword != "leave":
            continue
        if index != len(request.lines) - 1:
            return f"Line {line.number} ({line.text}): x-leave must be the last command; nothing was done."
        admins = [m for m in tx.members(mailing_list.address) if m.role == "admin" and m.state == ACTIVE]
        if member.role == "admin" and admins == [member]:
            return (f"Line {line.number} ({line.text}): you are the list's last admin, who cannot leave; "
                    "make another member an admin first. Nothing was done.")
    return None


def _status(member: Member) -> str:
    expires = member.key_expires or "no expiry"
    return (f"You are {member.name}, mode {member.mode}, role {member.role}; your key "
            f"{fingerprint_format(member.fingerprint)} is usable until {expires}.")


def forget_key(store: Store, keyring: Keyring, done: Done) -> None:
    """A leaver's key leaves the keyring -- after their last reply was encrypted to it -- unless
    another membership still pins it."""
    if done.left and not store.read().fingerprint_in_use(done.requester.fingerprint):
        keyring.delete(done.requester.fingerprint)

