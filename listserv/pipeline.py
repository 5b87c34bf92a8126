"""The paths a message takes, one stage per line (docs/architecture.md draws the same picture). Only this module, the
server and the CLI hold the Context; each stage gets the plain values it needs. A Refusal ends a path: the listener
replies with it, and `refused` keeps the reason."""

from __future__ import annotations

import time

from .capacity import check_content, check_size
from .context import Context
from .deliver import Outcome
from .digest import DigestItem
from .errors import Refusal
from .ledger import (Counted, claim_key_reply, claim_owner_slot, claim_signature, count_bounce, count_missed, count_refused,
                     forget_keys, record_rejection, refuse_key_rate, refuse_owner_rate, refuse_replay, run_request)
from .joining import answer_invitee, is_joining, key_changes
from .holds import keep_post
from .notices import answers, bounces, for_admins, unusable_keys
from .keyupdate import take_offered
from .revocation import admin_notices, take_in_offered
from .settle import told
from .model import Accepted, Distributed, Kind
from .spool import Job, OutJob
from .stages.authorize import authorize, current_sender, refuse_commands_in_post
from .stages.commands import read_request, refuse_automatic
from .stages.compose import Post, compose, wrapping
from .stages.fanout import fan_out
from .stages.forward import check_letter, read_letter
from .stages.join import joining, open_request, reopen_request
from .stages.open import open_message
from .stages.renew import offered_keys
from .stages.route import Route, select
from .stages.sendkey import KeyRequest, key_reply, key_request
from .verp import member_for, permanent_status


def receive(raw: bytes, route: Route, ctx: Context) -> Accepted:
    """Before the SMTP reply: the submission is checked and sealed on disk, or a Refusal."""
    roster = ctx.roster(route.list)
    limit = ctx.copy_limit()  # read once: what the relay takes, for both size checks
    keep = ctx.replay_window()
    check_size(raw, roster.mailing_list, ctx.templates, limit)
    opened = open_request(raw, ctx.keyring, roster.by_fingerprint, roster.mailing_list.fingerprint, route.kind)
    refuse_automatic(raw, route.kind, opened.signer)
    sender = authorize(opened, route, roster.mailing_list, roster.by_fingerprint, time.time(), joining(opened, roster))
    check_content(opened, sender.member, route.kind, roster, ctx.templates, limit)
    refuse_replay(ctx.events, opened, sender, roster.mailing_list, keep)
    refuse_commands_in_post(opened, route, roster.mailing_list)
    job = ctx.spool.accept(route.list, route.kind, ctx.keyring.seal(roster.mailing_list.fingerprint, raw))
    claim_signature(ctx.events, ctx.spool, job, opened, sender, roster.mailing_list, keep)
    return Accepted(job, opened.signer)


def refused(refusal: Refusal, route: Route, ctx: Context) -> None:
    """The listener refused a submission: the reason is kept for `listserv rejections`."""
    record_rejection(ctx.events, ctx.store, refusal, route)


def distribute(job: Job, ctx: Context) -> Distributed:
    """The worker, after the reply: an accepted submission becomes a delivery job and leaves the spool."""
    if ctx.outgoing.exists(job.qid):  # a crash came after the fan-out (and the digest hand-over)
        ctx.spool.remove(job)
        return Distributed(None)
    opened = open_message(ctx.keyring.unseal(ctx.spool.read_submission(job)), ctx.keyring, accepted=True)
    revoked = take_offered(ctx.store, ctx.keyring, ctx.roster(job.list), opened)  # the signer's key renewed, or revoked
    if (checked := ctx.resends.check(roster := ctx.roster(job.list), job, opened)).refused or keep_post(ctx.holds, ctx.outbox, ctx.templates, roster, job, opened):
        return Distributed(None, checked.replies)  # a resend refused, the poster told; or held for an admin, who was
    resent = ctx.resends.send(roster, job, checked)  # a resend's outside copies, before the members' job marks it done
    composed = compose(post := Post.of(checked.opened, current_sender(opened, roster), job.kind), roster.mailing_list, wrapping(ctx.templates, roster.mailing_list, post))
    selected = select(roster.members, job.kind)
    if selected.digest:  # the backlog first: once the fan-out job exists, a restart skips this
        ctx.digests.add(roster.mailing_list, job.qid, DigestItem.of(post.sender, composed, job.kind))
    fanned = fan_out(composed, selected.now, roster.mailing_list, ctx.keyring, ctx.verp_key)
    out = ctx.outbox.write(job.qid, roster.mailing_list, job.kind, fanned, poster=post.sender.fingerprint)
    count_missed(ctx.events, roster.mailing_list, fanned.unusable)  # told to them by the key watch
    notices = ctx.outbox.notices([unusable_keys(ctx.templates, roster, fanned.unusable), *admin_notices(ctx, revoked)])
    ctx.spool.remove(job)
    return Distributed(out, notices + resent, fanned)


def bounce(route: Route, ctx: Context, raw: bytes = b"") -> Counted | None:
    """A report to a VERP address: one more bounce for the member its token names (paused
    when it says 5.x.x and the list's bounce_pause is on)."""
    members = ctx.store.read().members(route.list)  # none when the list was deleted meanwhile
    counted = count_bounce(ctx.store, route.list, member_for(ctx.verp_key, route.list, members, route.token), "verp", permanent_status(raw))
    ctx.outbox.notices([bounces(ctx.templates, ctx.store.read().roster_if_any(route.list), counted)])
    return counted


def settle(outcome: Outcome, ctx: Context) -> tuple[OutJob, ...]:
    """A delivery job is over: bounces counted, a digest part settled, whoever must hear told."""
    if ctx.store.read().get_list(outcome.job.list) is None:  # deleted while its mail was out
        return ()
    counted = count_refused(ctx.store, outcome)
    settled = ctx.digests.settle(outcome)
    return ctx.outbox.notices(told(outcome, ctx.roster(outcome.job.list), counted, settled, ctx.templates))


def answer(job: Job, ctx: Context) -> tuple[OutJob, ...]:
    """A request to LIST-request@, after the reply: its commands run, all or none, once; one
    encrypted reply goes to the signer's pinned address and key."""
    roster = ctx.roster(job.list)
    opened = reopen_request(ctx.keyring.unseal(ctx.spool.read_submission(job)), ctx.keyring, roster.mailing_list.fingerprint)
    if is_joining(ctx.store, job.list, opened):  # an invitee's x-join or x-confirm, or anyone's x-join
        return answer_invitee(ctx.store, ctx.keyring, ctx.templates, ctx.outbox, ctx.spool, job, opened)
    revoked = take_in_offered(ctx.store, ctx.keyring, offered_keys(opened.content), (opened.signer,))
    request = read_request(opened.content, roster.mailing_list, roster.by_fingerprint.get(opened.signer))
    done = run_request(ctx.store, ctx.events, ctx.keyring, job.qid, roster.mailing_list, opened.signer, request,
                       opened.content, revoked, ctx.holds, ctx.contacts)
    key = ctx.keyring.export(roster.mailing_list.fingerprint).encode()
    told = key_changes(ctx.store, job.list, done.rotated)  # the codes its key-change and x-approve-join lines call for
    replies = ctx.outbox.notices([*answers(ctx.templates, ctx.roster(job.list), done, key, told), *admin_notices(ctx, revoked)], after=job.qid)
    ctx.spool.remove(job)  # before the keys go: a rerun must still be able to open the request
    forget_keys(ctx.store, ctx.keyring, done)
    return replies


def receive_for_admins(raw: bytes, route: Route, ctx: Context) -> Accepted:
    """Before the SMTP reply: mail from anyone to LIST-owner@, sealed for the admins, within
    the list's size limit and LIST-owner@'s hourly share (452 past it)."""
    roster = ctx.roster(route.list)
    check_size(raw, roster.mailing_list, ctx.templates, ctx.copy_limit())
    check_letter(raw, roster.admins)
    refuse_owner_rate(ctx.events, roster.mailing_list)
    job = ctx.spool.accept(route.list, Kind.OWNER, ctx.keyring.seal(roster.mailing_list.fingerprint, raw))
    claim_owner_slot(ctx.events, ctx.spool, job, roster.mailing_list)
    return Accepted(job, "-")


def forward(job: Job, ctx: Context) -> tuple[OutJob, ...]:
    """Mail to LIST-owner@, after the reply: to every admin, re-encrypted to each, saying
    whether a member signed it."""
    roster = ctx.roster(job.list)
    letter = read_letter(ctx.keyring.unseal(ctx.spool.read_submission(job)), ctx.keyring,
                         roster.mailing_list.fingerprint, roster.by_fingerprint)
    told = ctx.outbox.notices([for_admins(ctx.templates, roster, letter)], after=job.qid)
    ctx.spool.remove(job)
    return told


def receive_key_request(raw: bytes, route: Route, sender: str, ctx: Context) -> Accepted:
    """Before the SMTP reply: mail to LIST-sendkey@ is answered with the list's key once a day
    per address, or taken with no answer (stages.sendkey says when)."""
    ml = ctx.store.read().require_list(route.list)
    request = key_request(raw, sender, ml, ctx.verp_key)
    refuse_key_rate(ctx.events, request, ml)
    job = ctx.spool.accept(route.list, Kind.SENDKEY, ctx.keyring.seal(ml.fingerprint, request.sealed()))
    claim_key_reply(ctx.events, ctx.spool, job, request, ml)
    return Accepted(job, "-")


def send_key(job: Job, ctx: Context) -> tuple[OutJob, ...]:
    """The list's key, signed by the list, to whoever asked LIST-sendkey@ for it."""
    ml = ctx.store.read().require_list(job.list)
    request = KeyRequest.unsealed(ctx.keyring.unseal(ctx.spool.read_submission(job)), ctx.verp_key, ml)
    reply = ctx.outbox.write_plain(job.qid, ml, Kind.SENDKEY, key_reply(request, ml, ctx.templates, ctx.keyring),
                                   request.address)
    ctx.spool.remove(job)
    return (reply,) if reply else ()
