"""Which posts wait for an admin (listserv.stages.hold)."""

from __future__ import annotations

from listserv.model import Kind, Member
from listserv.stages.hold import held_for

NEWCOMER = Member("news@example.org", "n@example.org", "A" * 40, "Newcomer", probation=True)
MEMBER = Member("news@example.org", "m@example.org", "B" * 40, "Member")


def test_a_probation_members_posts_and_alerts_are_held_and_nobody_elses():
    assert held_for(NEWCOMER, Kind.POST) == held_for(NEWCOMER, Kind.ALERT) == "probation"
    assert held_for(MEMBER, Kind.POST) is None and held_for(MEMBER, Kind.ALERT) is None
    assert held_for(NEWCOMER, Kind.REQUEST) is None  # requests are answered, never held
