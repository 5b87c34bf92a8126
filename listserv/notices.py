"""Notices: the messages the list itself sends -- to its admins (bounces, unusable keys, copies
that failed, a post set aside, mail to LIST-owner@), to one member (a welcome, a post that
reached no one, a request's reply).

Everything here only builds them: a `Notice` is a composed message and who gets it. The
outbox fans each out and queues it like any post (listserv.outbox.Outbox.notices), so a
notice is encrypted to its recipients' pinned keys and goes through the same relay. A notice
to admins goes to the admins in good standing: never to a revoked key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from .model import Kind, MailingList, Member, Roster, iso
from .stages.compose import Composed, Post, compose, wrapping
from .stages.forward import Letter
from .templates import Templates

if TYPE_CHECKING:
    from .invites import Told as Joined
    from .ledger import Counted, Done
    from .rotation import Told


@dataclass(frozen=True)
class Notice:
    """A message from the list, composed, and the members who get it."""

    mailing_list: MailingList
    recipients: tuple[Member, ...]
    composed: Composed


def notice(templates: Templates, mailing_list: MailingList, recipients: tuple[Member, ...], template: str,
           attachments: tuple[tuple[str, str, bytes], ...] = (), speaker: str | None = None,
           automatic: str = "", **values: object) -> Notice | None:
    """A message from the list itself, rendered from `template` (its first line
    'Subject: ...', a blank line, the body), with optional (filename, mime type, data)
    attachments; from `speaker` (one of the list's addresses; the list's own by default), and
    marked Auto-Submitted: `automatic` when one is given. None when there is nobody to send it to."""
    if not recipients:
        return None
    text = templates.render(template, list=mailing_list, **values)
    subject, _, body = text.partition("\n\n")
    content = EmailMessage(policy=policy.SMTP)
    content["Subject"] = subject.removeprefix("Subject:").strip()
    content.set_content(body, charset="utf-8")
    for filename, mime_type, data in attachments:
        if mime_type == "message/rfc822":  # a whole message, headers and all (listserv.stages.forward)
            content.add_attachment(BytesParser(policy=policy.SMTP).parsebytes(data), filename=filename)
            continue
        maintype, subtype = mime_type.split("/", 1)
        content.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    post = Post(content.as_bytes(), Kind.NOTICE, speaker=speaker, auto_submitted=automatic)
    return Notice(mailing_list, recipients, compose(post, mailing_list, wrapping(templates, mailing_list, post)))


def to_admins(templates: Templates, roster: Roster, template: str, **values: object) -> Notice | None:
    """A notice to the list's admins in good standing."""
    return notice(templates, roster.mailing_list, roster.admins, template, **values)


def welcome(templates: Templates, mailing_list: MailingList, member: Member, list_key: bytes) -> Notice | None:
    """Welcome a new member: the list's address, fingerprint and key, how to post and alert."""
    return notice(
        templates, mailing_list, (member,), "welcome.txt.j2",
        attachments=(("list-key.asc", "application/pgp-keys", list_key),),
        member=member, fingerprint=mailing_list.fingerprint,
        schedule=mailing_list.option("digest_schedule"),
        require_encryption=mailing_list.option("require_encryption"),
    )


def unusable_keys(templates: Templates, roster: Roster, unusable: tuple[str, ...]) -> Notice | None:
    """The admins hear which members got no copy because their key cannot be encrypted to."""
    if not unusable:
        return None
    return to_admins(templates, roster, "notice-unusable-keys.txt.j2",
                     members=[m for m in roster.members if m.fingerprint in unusable])


def bounces(templates: Templates, roster: Roster | None, counted: Counted | None) -> Notice | None:
    """The admins hear when a bounce just paused a member (listserv.ledger.count_bounce), or
    when a member's bounces have just reached listserv.ledger.BOUNCE_NOTICE_AT (none when
    nothing was counted, or the list is gone)."""
    if roster is None or counted is None:
        return None
    if counted.paused:
        return to_admins(templates, roster, "notice-bounce-paused.txt.j2", member=counted.member,
                         status=counted.paused, when=iso(counted.at), source=counted.source)
    if not counted.reached:
        return None
    return to_admins(templates, roster, "notice-bounces.txt.j2", member=counted.member)


def quarantined(templates: Templates, roster: Roster, qid: str, reason: str) -> Notice | None:
    """The admins hear that an accepted post was set aside (its queue id and why; no content)."""
    return to_admins(templates, roster, "notice-quarantined.txt.j2", qid=qid, reason=reason)


def key_revoked(templates: Templates, roster: Roster, member: Member) -> Notice | None:
    """The admins hear that a member's pinned key was revoked (listserv.revocation)."""
    return to_admins(templates, roster, "notice-key-revoked.txt.j2", member=member)


def for_admins(templates: Templates, roster: Roster, letter: Letter) -> Notice | None:
    """Mail to LIST-owner@, to every admin in good standing, re-encrypted to each: the letter
    attached whole, and first what listserv can say of who sent it (listserv.stages.forward)."""
    ml = roster.mailing_list
    return notice(templates, ml, roster.admins, "notice-owner.txt.j2",
                  attachments=(("message.eml", "message/rfc822", letter.message),),
                  speaker=ml.owner_address, automatic="auto-generated", origin=letter.origin,
                  signer=letter.signer, encrypted=letter.encrypted)


def answers(templates: Templates, roster: Roster, done: Done, list_key: bytes,
            key_changes: tuple[Told | Joined, ...] = ()) -> list[Notice | None]:
    """A request's reply, to the signer's pinned address and key only (never From or Reply-To),
    from LIST-request@ and marked auto-replied; and when the signer left, a notice to the
    admins that names them by pseudonym only; and the notices of its key changes and of an
    admin's x-approve-join."""
    ml = roster.mailing_list
    if done.suspended:  # the key was revoked: nothing can be encrypted to it (the admins hear of it)
        return []
    attached = ((("list-key.asc", "application/pgp-keys", list_key),) if done.attach_key else ()) + done.signed
    reply = notice(templates, ml, (done.requester,), "request-reply.txt.j2", attachments=attached,
                   speaker=ml.request_address, automatic="auto-replied", results=done.results, refused=done.refused)
    told = [reply]
    if done.changes:  # a stolen admin key is noticed: every admin hears what it did
        told.append(notice(templates, ml, roster.admins, "notice-admin-changes.txt.j2", admin=done.requester,
                           changes=done.changes))
    if done.left:
        told.append(notice(templates, ml, roster.admins, "notice-member-left.txt.j2", member=done.requester))
    told += held_rejected(templates, roster, done.rejected)
    if done.signed:  # the others who asked get the statement too (listserv.statements)
        others = tuple(m for m in roster.members if m.reachable and m.name in done.signed_for and m.email != done.requester.email)
        told.append(notice(templates, ml, others, "notice-statement-signed.txt.j2", attachments=done.signed,
                           speaker=ml.request_address, automatic="auto-replied", asked=done.signed_for))
    told += join_notices(templates, roster, tuple(c for c in key_changes if hasattr(c, "invitation")), (), "", [], "")
    return told + [n for change in key_changes if hasattr(change, "change") for n in key_change(templates, roster, change)]


def key_change(templates: Templates, roster: Roster, told: Told) -> list[Notice | None]:
    """What a step of a member's change to a new key tells whom (listserv.rotation): the code to
    the new key only; the approval code to the admins; once pinned, the admins, the member (at
    the new key) and, with announce_key_changes, the other members -- who learn the pseudonym
    and the date, never an address or a key."""
    ml, change = roster.mailing_list, told.change
    member = next((m for m in roster.members if m.email == change.email), None)
    if member is None:  # gone meanwhile
        return []
    if told.what == "challenge":
        return [notice(templates, ml, (replace(member, fingerprint=change.new),), "key-change-challenge.txt.j2",
                       speaker=ml.request_address, automatic="auto-replied", change=change, code=told.code)]
    if told.what == "approval":
        return [to_admins(templates, roster, "notice-key-change-approve.txt.j2", change=change, code=told.code,
                          requested=iso(change.requested), confirmed=iso(change.confirmed))]
    others = tuple(m for m in roster.members if m.active and m.role != "admin" and m.email != member.email)
    announced = others if ml.option("announce_key_changes") else ()
    return [to_admins(templates, roster, "notice-key-changed-admins.txt.j2", change=change),
            notice(templates, ml, (member,), "notice-key-changed-member.txt.j2", change=change),
            notice(templates, ml, announced, "notice-key-changed-list.txt.j2", change=change,
                   date=iso(change.ended)[:10])]



def join_notices(templates: Templates, roster: Roster, told: tuple[Joined, ...], keywords: tuple[str, ...],
                 result: str, invitations: list[dict], signer: str) -> list[Notice | None]:
    """What an invitee's request tells whom (listserv.invites): the challenge to their key at
    their address; the approval code to the admins; once pinned, the member and the admins.
    An x-confirm is answered, to that key and address, as a member's request is; a failed
    x-join by nothing at all."""
    ml, found = roster.mailing_list, []
    for step in told:
        invitation = step.invitation
        invitee = Member(ml.address, invitation.email, invitation.fingerprint, invitation.name or "invitee")
        if step.what == "challenge":
            found.append(notice(templates, ml, (invitee,), "join-challenge.txt.j2", speaker=ml.request_address,
                                automatic="auto-replied", invitation=invitation, code=step.code))
        elif step.what == "approval":
            found.append(to_admins(templates, roster, "notice-join-approve.txt.j2", invitation=invitation,
                                   code=step.code))
        else:
            member = next((m for m in roster.members if m.fingerprint == invitation.fingerprint), None)
            if member is not None:
                found.append(to_admins(templates, roster, "notice-joined.txt.j2", member=member, invitation=invitation))
    pending = [doc for doc in invitations if doc.get("fingerprint") == signer]
    if "confirm" in keywords and pending:
        invitee = Member(ml.address, pending[-1]["email"], signer, pending[-1]["name"] or "invitee")
        found.append(notice(templates, ml, (invitee,), "request-reply.txt.j2", speaker=ml.request_address,
                            automatic="auto-replied", results=(("x-confirm", result),), refused=None))
    return found


def emergency(templates: Templates, roster: Roster, on: bool) -> Notice | None:
    """The admins hear that the emergency was switched on the server (`list set`); a signed
    x-emergency is told as every admin's change is, naming who sent it."""
    return to_admins(templates, roster, "notice-emergency.txt.j2", on=on)


def held(templates: Templates, roster: Roster, job, member: Member | None, content: bytes,
         reason: str = "probation") -> Notice | None:
    """The admins hear that a post waits for them (listserv.holds): its id, who, why, and the
    post itself attached, so they can judge it (encrypted to each admin, as every notice)."""
    return notice(templates, roster.mailing_list, roster.admins, "notice-held.txt.j2",
                  attachments=(("held.eml", "message/rfc822", content),), automatic="auto-generated",
                  qid=job.qid, member=member, kind=str(job.kind), reason=reason)


def held_rejected(templates: Templates, roster: Roster, rejected: tuple[tuple[str, str], ...]) -> list[Notice | None]:
    """Each poster whose held post an admin rejected hears it, with the admin's reason."""
    by_fingerprint = roster.by_fingerprint
    return [notice(templates, roster.mailing_list, (by_fingerprint[fp],), "notice-held-rejected.txt.j2",
                   automatic="auto-generated", reason=reason)
            for fp, reason in rejected if fp in by_fingerprint]


def held_reminder(templates: Templates, roster: Roster, expired: list, waiting: list) -> Notice | None:
    """The admins' daily word on the hold queue: what was discarded as too old, and what still waits."""
    if not expired and not waiting:
        return None
    return to_admins(templates, roster, "notice-held-reminder.txt.j2", expired=expired, waiting=waiting,
                     shown=[(h, iso(h.at)) for h in waiting])
