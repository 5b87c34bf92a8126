"""When a delivery job is over: what its failed copies mean, and who is told.

    a member refused at RCPT (5xx)     a bounce for that member, as if their server had sent one
                                       to the VERP address: the admins hear at BOUNCE_NOTICE_AT.
                                       Not when the relay refused every recipient of a job of
                                       several at RCPT: that is the relay, not the members.
    no copy delivered                  the admins get a notice; the poster of a post or alert a
                                       note, to their pinned key; a digest part's posts wait for
                                       the next digest (Digests.settle)
    some copies failed otherwise       the admins get one notice for the job, naming those
    (at MAIL or DATA, retries expired) members by pseudonym and key, with the reason
    a notice that reached no one       the log only: a notice about a notice could loop
    LIST-sendkey@'s key not delivered  the log only: the one who asked is no member, and a
                                       stranger's bad address is nothing an admin could act on
    a resend's copy not delivered      the admins get a notice naming the contact's address and
                                       why (no bounce is counted: a contact is no member)

Notices are encrypted like any mail from the list and go through the same relay; the log
(`undelivered qid=...`, `failed qid=... member=FPR reason=...`) is the word of last resort.

Here it is only decided who is told what (`told`, pure); the pipeline's settle path counts
the bounces (listserv.ledger), settles a digest part (Digests.settle) and sends the notices.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone

from .deliver import Failure, Outcome, too_large
from .digest import Settled
from .ledger import Counted
from .model import Kind, Member, Roster
from .notices import Notice, bounces, notice, to_admins
from .templates import Templates

log = logging.getLogger("listserv.settle")


@dataclass(frozen=True)
class Failed:
    """A failed copy as a notice shows it."""

    pseudonym: str
    fingerprint: str
    reason: str  # in words


def describe(reason: str) -> str:
    """A reason code (listserv.deliver) in words for a notice."""
    stage, _, code = reason.partition("-")
    if stage == "expired":
        return f"not delivered within the retry lifetime (last: {code or 'no answer'})"
    if stage == "rcpt":
        return f"the relay refused the address ({code})"
    if too_large(reason):
        return f"the relay refused the copy as too large ({code})"
    if stage in ("mail", "data"):
        return f"the relay refused the copy at {stage.upper()} ({code})"
    return f"refused ({reason or 'no reason recorded'})"


def told(outcome: Outcome, roster: Roster, counted: dict[int, Counted], settled: Settled | None,
         templates: Templates) -> list[Notice]:
    """The notices a delivery job's end calls for: bounce counts that reached the notice, and
    the failures (see the module docstring). `counted`: the bounces counted, by copy index;
    `settled`: what became of a digest part's posts."""
    job = outcome.job
    notices = [bounces(templates, roster, c) for c in counted.values()]
    # No notice of a notice that failed (it would fail alike), nor of a key sent to someone
    # who asked LIST-sendkey@: the log has it; nobody here could act on it.
    if job.kind in (Kind.NOTICE, Kind.SENDKEY) or not outcome.failures:
        return [n for n in notices if n]
    if job.kind == Kind.RESEND:  # a copy to one of the list's contacts (listserv.resend)
        return [n for n in [*notices, to_admins(templates, roster, "notice-resend-undelivered.txt.j2", qid=job.qid,
                                                 failed=[(f.email, describe(f.reason)) for f in outcome.failures])] if n]
    by_email = {m.email: m for m in roster.members}
    failed = [_shown(f, by_email) for f in outcome.failures]
    when = datetime.fromtimestamp(job.created, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    values = dict(qid=job.qid, kind=job.kind, when=when, copies=outcome.copies, failed=failed,
                  reasons=_summary(outcome.failures))
    if outcome.sent == 0:
        notices.extend(_undelivered(outcome, roster, settled, templates, values))
    else:
        others = [_shown(f, by_email) for f in outcome.failures if f.index not in counted]
        if others:
            notices.append(to_admins(templates, roster, "notice-copies-failed.txt.j2",
                                     **{**values, "failed": others, "sent": outcome.sent}))
    return [n for n in notices if n]


def _undelivered(outcome: Outcome, roster: Roster, settled: Settled | None, templates: Templates,
                 values: dict) -> list[Notice | None]:
    job = outcome.job
    ml = roster.mailing_list
    if job.kind == Kind.DIGEST and settled is not None:
        notices = [to_admins(templates, roster, "notice-undelivered.txt.j2", **values, poster=None,
                             posts=settled.posts, set_aside=[item.pseudonym for item in settled.set_aside])]
        for item in settled.set_aside:
            poster = _member(roster, item.signer)
            if poster is not None:
                notices.append(notice(templates, ml, (poster,), "notice-undelivered-poster.txt.j2",
                                      **values, digest=True))
        return notices
    poster = _member(roster, job.poster)
    notices = [to_admins(templates, roster, "notice-undelivered.txt.j2", **values, poster=poster, posts=0,
                         set_aside=[])]
    if poster is not None:
        notices.append(notice(templates, ml, (poster,), "notice-undelivered-poster.txt.j2", **values, digest=False))
    else:
        log.info("undelivered qid=%s poster=%s not-told reason=no-longer-a-member", job.qid, job.poster or "-")
    return notices


def _member(roster: Roster, fingerprint: str | None) -> Member | None:
    """The poster by their pinned key -- if still a member in good standing."""
    if not fingerprint:
        return None
    return next((m for m in roster.members if m.fingerprint == fingerprint and m.active), None)


def _shown(failure: Failure, by_email: dict[str, Member]) -> Failed:
    member = by_email.get(failure.email)
    name = member.name if member else "(no longer a member)"
    return Failed(name, failure.fingerprint or (member.fingerprint if member else "-"), describe(failure.reason))


def _summary(failures: tuple[Failure, ...]) -> list[str]:
    counts = Counter(describe(f.reason) for f in failures)
    return [f"{count} x {text}" for text, count in sorted(counts.items())]
