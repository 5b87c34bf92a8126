"""Which posts wait for an admin (listserv.stages.hold)."""

from __future__ import annotations

from dataclasses import replace

from listserv.model import Kind, MailingList, Member
from listserv.stages.hold import held_for, may_post

NEWS = MailingList("news@example.org", "News", "F" * 40)
NEWCOMER = Member("news@example.org", "n@example.org", "A" * 40, "Newcomer", probation=True)
MEMBER = Member("news@example.org", "m@example.org", "B" * 40, "Member")
ADMIN = Member("news@example.org", "a@example.org", "C" * 40, "Admin", role="admin")


def listing(**options) -> MailingList:
    return replace(NEWS, options=options)


def test_a_probation_members_posts_and_alerts_are_held_and_nobody_elses():
    assert held_for(NEWCOMER, Kind.POST, NEWS) == held_for(NEWCOMER, Kind.ALERT, NEWS) == "probation"
    assert held_for(MEMBER, Kind.POST, NEWS) is None and held_for(MEMBER, Kind.ALERT, NEWS) is None
    assert held_for(NEWCOMER, Kind.REQUEST, NEWS) is None  # requests are answered, never held


def test_in_an_emergency_everything_waits_but_an_admins_alert():
    emergency = listing(emergency=True)
    assert held_for(MEMBER, Kind.POST, emergency) == held_for(ADMIN, Kind.POST, emergency) == "emergency"
    assert held_for(MEMBER, Kind.ALERT, emergency) == "emergency"
    assert held_for(ADMIN, Kind.ALERT, emergency) is None
    assert held_for(MEMBER, Kind.REQUEST, emergency) is None


def test_on_a_newsletter_only_admins_post():
    newsletter = listing(post_senders="admins")
    assert not may_post(MEMBER, newsletter) and may_post(ADMIN, newsletter) and may_post(MEMBER, NEWS)
    assert held_for(MEMBER, Kind.POST, newsletter) == "not-a-poster"
    assert held_for(ADMIN, Kind.POST, newsletter) is None
    assert held_for(MEMBER, Kind.ALERT, newsletter) is None  # alert_senders decides alerts
