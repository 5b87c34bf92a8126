"""Whether an authorized post waits for an admin instead of going out (docs/moderation.md). Pure.

Only a member's valid post ever gets here: an outsider was refused before the 250."""

from __future__ import annotations

from ..model import Kind, MailingList, Member


def held_for(member: Member | None, kind: Kind, mailing_list: MailingList) -> str | None:
    """The reason a post or alert by `member` is held, or None: it goes out now.

    In an emergency every post waits, and every alert but an admin's: the admins must still be
    able to warn everyone at once that the list is compromised. On a newsletter list
    (post_senders = admins) a member's post waits when hold_refused_posts is on (else it was
    refused before the 250: listserv.stages.authorize)."""
    if member is None or kind not in (Kind.POST, Kind.ALERT):
        return None
    if member.probation:
        return "probation"
    if mailing_list.option("emergency") and not (kind == Kind.ALERT and member.role == "admin"):
        return "emergency"
    if kind == Kind.POST and not may_post(member, mailing_list):
        return "not-a-poster"
    return None


def may_post(member: Member, mailing_list: MailingList) -> bool:
    """post_senders: on a newsletter list only admins post."""
    return mailing_list.option("post_senders") != "admins" or member.role == "admin"
