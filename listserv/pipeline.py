"""The order of the stages, and nothing else.

accept():      size -> open -> authorize -> size of copies -> seal -> spool -> replay check
               (before the SMTP reply)
distribute():  unseal -> open -> compose -> fan-out -> outgoing spool (a worker, after the reply)
bounce():      VERP token -> member -> count
settle():      a delivery job's outcome -> bounces, notices, digest bookkeeping (listserv.settle)
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from . import capacity, verp
from .digest import DigestItem
from .errors import ListservError, Refusal, Unauthorized
from .model import MailingList, Member
from .outbound import fan_out, notify_admins, render_footer
from .services import Services
from .spool import Job, Outgoing, OutJob
from .stages.authorize import authorize, home_replay_window, replayed
from .stages.compose import compose, new_message_id
from .stages.open import open_message
from .stages.route import Route
from .templates import Templates

__all__ = ["Accepted", "Distributed", "Services", "accept", "bounce", "distribute"]


@dataclass(frozen=True)
class Accepted:
    job: Job
    signer: str

    @property
    def qid(self) -> str:
        return self.job.qid

    @property
    def list(self) -> str:
        return self.job.list

    @property
    def kind(self) -> str:
        return self.job.kind


def accept(raw: bytes, route: Route, services: Services, templates: Templates | None = None) -> Accepted:
    """Check a submission and store it durably; raises a Refusal (with .signer when known).
    `templates` (the deployment's) measure what compose adds: the footer, the alert banner."""
    signer = None
    templates = templates or Templates()
    try:
        snapshot = services.store.read()
        mailing_list = snapshot.require_list(route.list)
        copy_limit = capacity.copy_limit(services)
        allowed = capacity.post_limit(mailing_list, templates, copy_limit)
        if len(raw) > allowed.size:
            raise allowed.refusal()
        opened = open_message(raw, services.keyring)
        signer = opened.signer
        members = {m.fingerprint: m for m in snapshot.members(mailing_list.address)}
        authorized = authorize(opened, route, mailing_list, members, time.time())
        # A post that decompresses into more than it looked like is measured as it will go.
        capacity.check_content(opened, authorized.member, route.kind, mailing_list, templates, copy_limit,
                               digest_readers=any(m.mode == "digest" and m.active for m in members.values()))
        keep = home_replay_window(snapshot.lists())
        sealed = services.keyring.seal(mailing_list.fingerprint, raw)
        job = services.spool.accept(mailing_list.address, route.kind, sealed)
        # Claimed after the job is on disk: a crash in between may deliver a post twice,
        # never lose one that a client will retry (claiming first would refuse the retry).
        try:
            with services.events.transaction() as tx:
                now = time.time()
                earlier = tx.lists_that_took(opened.signature_id, now, keep)
                fresh = not replayed(earlier, mailing_list, authorized.addressed)
                if fresh:
                    tx.record_signature(opened.signature_id, mailing_list.address, now + keep)
        except BaseException:
            services.spool.remove(job)  # the client hears 451 and tries again: keep no copy
            raise
        if not fresh:
            services.spool.remove(job)
            raise Unauthorized("replay")
        return Accepted(job, opened.signer)
    except Refusal as refusal:
        refusal.signer = signer
        _record(refusal, route, services)
        raise


def _record(refusal: Refusal, route: Route, services: Services) -> None:
    """Keep the specific reason where admins can read it (`listserv rejections`)."""
    with contextlib.suppress(ListservError):
        if services.store.read().get_list(route.list) is None:
            return
        with services.events.transaction() as tx:
            tx.add_rejection({
                "list": route.list, "at": time.time(), "kind": route.kind,
                "reason": refusal.reason, "reply": f"{refusal.code} {refusal.status}",
                "signer": refusal.signer, "ref": refusal.ref,
            })


@dataclass(frozen=True)
class Distributed:
    job: OutJob | None  # None when no member gets an immediate copy
    notices: tuple[OutJob, ...]  # notices to admins (e.g. members whose keys became unusable)
    unusable: tuple[str, ...]  # fingerprints of members who got no copy
    copies: int = 0  # copies in `job`


def distribute(job: Job, services: Services, templates: Templates,
               backlog: Callable[[MailingList, str, DigestItem], None] | None = None) -> Distributed:
    """Turn an accepted submission into a fan-out job; the submission leaves the spool."""
    outgoing = Outgoing(services.spool)
    if outgoing.exists(job.qid):  # a crash came after the fan-out job (the backlog came first)
        services.spool.remove(job)
        return Distributed(None, (), ())
    raw = services.keyring.unseal(services.spool.read_submission(job))
    opened = open_message(raw, services.keyring, accepted=True)
    snapshot = services.store.read()
    mailing_list = snapshot.require_list(job.list)
    members = snapshot.members(mailing_list.address)
    sender = next((m for m in members if m.fingerprint == opened.signer), None)
    if sender is None:
        raise Unauthorized("sender-removed")
    if not sender.active:  # the sender's key was revoked after the post was accepted
        raise Unauthorized("key-revoked")
    composed = compose(
        opened.content, in_reply_to=opened.in_reply_to,
        references=opened.references, sender=sender, mailing_list=mailing_list, kind=job.kind,
        footer=render_footer(templates, mailing_list), now=datetime.now(timezone.utc),
        message_id=new_message_id(mailing_list),
        banner=templates.render("alert.txt.j2", list=mailing_list, sender=sender.name)
        if job.kind == "alert" else None,
    )
    # The backlog before the fan-out job: once that job exists a restart skips this hand-over.
    # A restart before it repeats the backlog write, which keeps one item per queue id.
    if backlog is not None and any(m.mode == "digest" for m in members):
        backlog(mailing_list, job.qid, DigestItem(sender.name, composed.subject, time.time(),
                                                  job.kind, composed.inner, sender.fingerprint))
    # Key-revoked members get nothing: their key must not be trusted, nor counted unusable.
    recipients = [m for m in members if m.active and (job.kind == "alert" or m.mode == "immediate")]
    out, unusable = fan_out(services, outgoing, job.qid, mailing_list, job.kind, composed, recipients,
                            poster=sender.fingerprint)
    notices = ()
    if unusable:
        notices = (notify_admins(services, templates, mailing_list, members, "notice-unusable-keys.txt.j2",
                                 members=[m for m in members if m.fingerprint in unusable]),)
    services.spool.remove(job)
    return Distributed(out, tuple(n for n in notices if n), unusable, len(recipients) - len(unusable))


BOUNCE_NOTICE_AT = 3  # admins hear of a member's bounces when they reach this count


def bounce(route: Route, services: Services, templates: Templates) -> str | None:
    """Count a bounce against the member its VERP token names; returns that member's fingerprint.
    When the count reaches BOUNCE_NOTICE_AT the list's admins get a notice."""
    key = verp.secret(services.store)
    member = verp.member_for(key, route.list, services.store.read().members(route.list), route.token)
    if member is None:
        return None
    counted, _ = count_bounce(services, templates, route.list, member.email)
    return counted.fingerprint if counted else None


def count_bounce(services: Services, templates: Templates, list_address: str,
                 email: str) -> tuple[Member | None, OutJob | None]:
    """One more bounce for a member: from the VERP address, or the relay refusing them at RCPT.
    Returns the member (None if gone meanwhile) and the admins' notice when the count has
    just reached BOUNCE_NOTICE_AT."""
    with services.store.transaction() as tx:
        if tx.get_member(list_address, email) is None:
            return None, None
        tx.count_bounce(list_address, email)
        member = tx.require_member(list_address, email)
        mailing_list, members = tx.require_list(list_address), tx.members(list_address)
    notice = None
    if member.bounces == BOUNCE_NOTICE_AT:
        notice = notify_admins(services, templates, mailing_list, members, "notice-bounces.txt.j2", member=member)
    return member, notice
