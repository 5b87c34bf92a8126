"""The order of the stages, and nothing else.

accept():      open -> authorize -> seal -> spool -> replay check     (before the SMTP reply)
distribute():  unseal -> open -> compose -> fan-out -> outgoing spool (a worker, after the reply)
bounce():      VERP token -> member -> count
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from . import verp
from .digest import DigestItem
from .errors import ListservError, Refusal, TooLarge, Unauthorized
from .model import MailingList
from .outbound import fan_out, notify_admins, render_footer
from .services import Services
from .spool import Job, Outgoing, OutJob
from .stages.authorize import authorize, home_replay_window, option, replayed
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


def accept(raw: bytes, route: Route, services: Services) -> Accepted:
    """Check a submission and store it durably; raises a Refusal (with .signer when known)."""
    signer = None
    try:
        snapshot = services.store.read()
        mailing_list = snapshot.require_list(route.list)
        if len(raw) > option(mailing_list, "max_message_size_kb") * 1024:
            raise TooLarge("too-large")
        opened = open_message(raw, services.keyring)
        signer = opened.signer
        members = {m.fingerprint: m for m in snapshot.members(mailing_list.address)}
        authorized = authorize(opened, route, mailing_list, members, time.time())
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
                                                  job.kind, composed.inner))
    # Key-revoked members get nothing: their key must not be trusted, nor counted unusable.
    recipients = [m for m in members if m.active and (job.kind == "alert" or m.mode == "immediate")]
    out, unusable = fan_out(services, outgoing, job.qid, mailing_list, job.kind, composed, recipients)
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
    with services.store.transaction() as tx:
        member = verp.member_for(key, route.list, tx.members(route.list), route.token)
        if member is None:
            return None
        tx.count_bounce(route.list, member.email)
        member = tx.require_member(route.list, member.email)
        mailing_list, members = tx.require_list(route.list), tx.members(route.list)
    if member.bounces == BOUNCE_NOTICE_AT:
        notify_admins(services, templates, mailing_list, members, "notice-bounces.txt.j2", member=member)
    return member.fingerprint
