"""Whether an authorized post waits for an admin instead of going out (docs/moderation.md). Pure.

Only a member's valid post ever gets here: an outsider was refused before the 250."""

from __future__ import annotations

from ..model import Kind, Member


def held_for(member: Member | None, kind: Kind) -> str | None:
    """The reason a post or alert by `member` is held, or None: it goes out now."""
    if member is not None and member.probation and kind in (Kind.POST, Kind.ALERT):
        return "probation"
    return None
