"""The paths a message takes, one stage per line (docs/architecture.md draws the same picture).

Only this module, the server that runs it (listserv.server) and the CLI hold the Context;
each stage gets the plain values it needs. A stage that refuses raises a Refusal, which ends
the path: the listener replies with it and keeps the reason (`refused`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .capacity import check_content, check_size
from .context import Context
from .deliver import Outcome
from .digest import DigestItem
from .errors import Refusal
from .ledger import Counted, claim_signature, count_bounce, count_refused, record_rejection
from .model import Kind, MailingList
from .notices import Notice, bounces, unusable_keys
from .settle import told
from .spool import Job, OutJob, new_queue_id
from .stages.authorize import authorize, current_sender
from .stages.compose import Composed, Post, compose, wrapping
from .stages.fanout import Fanned, fan_out
from .stages.open import open_message
from .stages.route import Route, select
from .verp import member_for


@dataclass(frozen=True)
class Accepted:
    job: Job
    signer: str


@dataclass(frozen=True)
class Distributed:
    job: OutJob | None  # None when no member gets an immediate copy
    notices: tuple[OutJob, ...]  # to admins (e.g. members whose keys became unusable)
    fanned: Fanned | None = None  # None: the fan-out was done before a restart

    @property
    def unusable(self) -> tuple[str, ...]:
        return self.fanned.unusable if self.fanned else ()

    @property
    def copies(self) -> int:
        return self.fanned.copies if self.fanned else 0


def receive(raw: bytes, route: Route, ctx: Context) -> Accepted:
    """Before the SMTP reply: the submission is checked and sealed on disk, or a Refusal."""
    roster, limit = ctx.roster(route.list), ctx.copy_limit()
    check_size(raw, roster.mailing_list, ctx.templates, limit)
    opened = open_message(raw, ctx.keyring)
    sender = authorize(opened, route, roster.mailing_list, roster.by_fingerprint, time.time())
    check_content(opened, sender.member, route.kind, roster, ctx.templates, limit)
    job = ctx.spool.accept(route.list, route.kind, ctx.keyring.seal(roster.mailing_list.fingerprint, raw))
    claim_signature(ctx.events, ctx.spool, job, opened, sender, roster.mailing_list, ctx.replay_window())
    return Accepted(job, opened.signer)


def refused(refusal: Refusal, route: Route, ctx: Context) -> None:
    """The listener refused a submission: the reason is kept for `listserv rejections`."""
    record_rejection(ctx.events, ctx.store, refusal, route)


def distribute(job: Job, ctx: Context) -> Distributed:
    """The worker, after the reply: an accepted submission becomes a delivery job and leaves the spool."""
    if ctx.outgoing.exists(job.qid):  # a crash came after the fan-out (the digest hand-over came first)
        return _done(job, ctx, Distributed(None, ()))
    opened = open_message(ctx.keyring.unseal(ctx.spool.read_submission(job)), ctx.keyring, accepted=True)
    roster = ctx.roster(job.list)
    sender = current_sender(opened, roster)
    post = Post.of(opened, sender, job.kind)
    composed = compose(post, roster.mailing_list, wrapping(ctx.templates, roster.mailing_list, post))
    selected = select(roster.members, job.kind)
    if selected.digest:  # the digest backlog first: once the fan-out job exists, a restart skips this
        ctx.digests.add(roster.mailing_list, job.qid, DigestItem.of(sender, composed, job.kind))
    fanned = fan_out(composed, selected.now, roster.mailing_list, ctx.keyring, ctx.verp_key)
    out = _write(job.qid, roster.mailing_list, job.kind, fanned, ctx, poster=sender.fingerprint)
    notices = send_notices([unusable_keys(ctx.templates, roster, fanned.unusable)], ctx)
    return _done(job, ctx, Distributed(out, notices, fanned))


def bounce(route: Route, ctx: Context) -> Counted | None:
    """A report to a VERP address: one more bounce for the member its token names."""
    roster = ctx.roster(route.list)
    counted = count_bounce(ctx.store, route.list, member_for(ctx.verp_key, route.list, roster.members, route.token), "verp")
    send_notices([bounces(ctx.templates, roster, counted.member) if counted and counted.reached else None], ctx)
    return counted


def settle(outcome: Outcome, ctx: Context) -> tuple[OutJob, ...]:
    """A delivery job is over: bounces counted, a digest part settled, whoever must hear told."""
    counted = count_refused(ctx.store, outcome)
    settled = ctx.digests.settle(outcome)
    roster = ctx.store.read().roster_if_any(outcome.job.list)
    return send_notices(told(outcome, roster, counted, settled, ctx.templates) if roster else [], ctx)


# request (LIST-request@, the coming request address) will sit here as one more straight run:
#   open_message -> authorize the requester -> parse the commands -> act on each -> reply.


def send_notices(notices: list[Notice | None], ctx: Context) -> tuple[OutJob, ...]:
    """Fan out and queue each notice (None: nobody to tell) like any mail from the list."""
    return tuple(job for n in notices if n for job in [send(n.composed, n.recipients, n.mailing_list, ctx)] if job)


def send(composed: Composed, recipients, mailing_list: MailingList, ctx: Context, kind: Kind = Kind.NOTICE) -> OutJob | None:
    return _write(new_queue_id(), mailing_list, kind, fan_out(composed, recipients, mailing_list, ctx.keyring, ctx.verp_key), ctx)


def _write(qid: str, mailing_list: MailingList, kind: Kind, fanned: Fanned, ctx: Context,
           poster: str | None = None) -> OutJob | None:
    return ctx.outgoing.write(qid, mailing_list.address, kind, fanned, poster) if fanned.records else None


def _done(job: Job, ctx: Context, result: Distributed) -> Distributed:
    ctx.spool.remove(job)
    return result
