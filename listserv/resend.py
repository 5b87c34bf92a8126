"""Resends in the worker: a post that begins with x-resend lines (listserv.stages.resend decides)
is checked, refused with a reply, or sent to each outside address as the list's own message.

Where it runs: in `pipeline.distribute`, after the post is opened and before the hold
(`holds.keep_post`). So a refused resend is never held (nothing waits that cannot go out),
and a held one is checked once more when an admin approves it -- the approval puts it back
into the spool, and distribute runs again: a contact removed meanwhile refuses it then.

    refused    nothing goes to anyone; the poster gets a notice saying why (its queue id fixed
               by the post's) and the submission leaves the spool
    going out  one delivery job per outside address, each under a queue id fixed by the post's
               (`outbox.derived_qid`), written before the members' job: the members' job is
               what marks a post done (distribute's first line), so a rerun after a crash
               writes the copies it had not written yet and none twice

An outsider's copy is composed like a notice of the list's own (stages.compose, Post.to):
From the list, To that address, Reply-To LIST-owner@, a fresh Message-ID and Date, no
References, no pseudonym, no list headers or footer; signed by the list key and encrypted to
the contact's pinned key only (the fan-out's machinery: the contact's key packet built from
the session key, stages.fanout `keys_from`). Without a usable key, and with
resend_unencrypted on, it is a signed plain copy instead. Its envelope sender is LIST-owner@,
so a bounce reaches the admins (forwarded like any mail to that address); a copy the relay
refuses or that expires is told to the admins at settle (Kind.RESEND, listserv.settle).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from .keyring import Keyring
from .model import Kind, Member, Roster
from .notices import notice
from .outbox import Outbox, derived_qid
from .spool import Job, OutJob, Spool
from .stages.commands import is_resend
from .stages.compose import Wrapping, compose
from .stages.fanout import fan_out
from .stages.open import Opened
from .stages.resend import Resend, outside_post, plain_copy, read_resend
from .store import Store
from .templates import Templates

log = logging.getLogger("listserv.resend")


@dataclass(frozen=True)
class Checked:
    """A post as the members get it (a resend's keyword lines cut, the note first), its resend
    if it is one, and the reply to a refused one."""

    opened: Opened
    resend: Resend | None = None
    replies: tuple[OutJob, ...] = ()

    @property
    def refused(self) -> bool:
        return self.resend is not None and self.resend.refused is not None


class Resends:
    """The worker's resends, with the parts of the home they need (Context.resends)."""

    def __init__(self, store: Store, contacts: Keyring, outbox: Outbox, templates: Templates, spool: Spool):
        self.store, self.contacts, self.outbox, self.templates, self.spool = store, contacts, outbox, templates, spool

    def check(self, roster: Roster, job: Job, opened: Opened) -> Checked:
        """A resend checked (see the module docstring); anything else passes as it is."""
        poster = roster.by_fingerprint.get(opened.signer)
        if job.kind not in (Kind.POST, Kind.ALERT) or poster is None or not poster.active \
                or not is_resend(opened.content):
            return Checked(opened)  # no resend, or a sender gone: the usual path decides
        ml = roster.mailing_list
        pinned = {c["address"]: c["fingerprint"] for c in self.store.read().contacts(ml.address)}
        keys = [fp for fp in pinned.values() if fp]
        usable = set(self.contacts.recipient_keys(keys)) if keys else set()  # usable, of a kind pkesk encrypts to
        resend = read_resend(opened.content, ml, poster, pinned, usable)
        if resend is None:
            return Checked(opened)
        if resend.refused:
            refusal = notice(self.templates, ml, (poster,), "notice-resend-refused.txt.j2", automatic="auto-replied",
                             reason=resend.refused)
            replies = self.outbox.notices([refusal], after=job.qid)
            self.spool.remove(job)
            log.info("resend-refused qid=%s list=%s signer=%s", job.qid, ml.address, poster.fingerprint)
            return Checked(opened, resend, replies)
        return Checked(replace(opened, content=resend.content), resend)

    def send(self, roster: Roster, job: Job, checked: Checked) -> tuple[OutJob, ...]:
        """Each outside address's copy, queued under its own fixed queue id (none queued twice)."""
        resend, outbox = checked.resend, self.outbox
        if resend is None or resend.refused:
            return ()
        ml, written = roster.mailing_list, []
        for index, target in enumerate(resend.targets):
            qid = derived_qid(job.qid, f"resend/{index}")
            if outbox.outgoing.exists(qid):  # queued before a crash
                continue
            if target.fingerprint is None:
                out = outbox.write_plain(qid, ml, Kind.RESEND, plain_copy(resend, target, ml, outbox.keyring),
                                         target.address, return_path=ml.owner_address)
            else:
                composed = compose(outside_post(resend, target), ml, Wrapping(""))
                outsider = Member(ml.address, target.address, target.fingerprint, "contact")
                fanned = fan_out(composed, [outsider], ml, outbox.keyring, outbox.verp_key, keys_from=self.contacts)
                out = outbox.write(qid, ml, Kind.RESEND, replace(fanned, return_path=ml.owner_address))
            if out is None:  # the contact's key stopped working since the check
                log.error("resend-unsent qid=%s list=%s copy=%d reason=key-unusable", job.qid, ml.address, index)
                continue
            log.info("resent qid=%s list=%s copy=%s", job.qid, ml.address, out.qid)
            written.append(out)
        return tuple(written)
