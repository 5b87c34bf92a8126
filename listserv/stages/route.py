"""Route: which list an envelope recipient names, and whether it is a post, an alert, a
request, mail for the admins, a request for the list's key or a bounce (`route`); and who of a list's members gets a post now, and whether it also waits for
the digest (`select`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from ..errors import UnknownRecipient
from ..model import Kind, Member

URGENT = "+urgent"
BOUNCES = "-bounces+"
REQUEST = "-request"
OWNER = "-owner"
SENDKEY = "-sendkey"
# The list's own addresses by suffix, and what mail to each is.
SUFFIXES = ((REQUEST, Kind.REQUEST), (OWNER, Kind.OWNER), (SENDKEY, Kind.SENDKEY))


@dataclass(frozen=True)
class Route:
    list: str  # the list's address
    kind: Kind  # POST, ALERT, REQUEST, OWNER, SENDKEY or BOUNCE
    token: str = ""  # VERP token of a bounce


def route(recipient: str, lists: Collection[str]) -> Route:
    """Map RCPT TO to a list; anything that is not one of `lists` is refused (550 5.1.1)."""
    address = recipient.strip().strip("<>").lower()
    local, at, domain = address.rpartition("@")
    if not at or not local:
        raise UnknownRecipient("unknown-recipient")
    own = next(((suffix, kind) for suffix, kind in SUFFIXES if local.endswith(suffix)), None)
    if local.endswith(URGENT):
        route_ = Route(f"{local[: -len(URGENT)]}@{domain}", Kind.ALERT)
    elif own is not None:
        route_ = Route(f"{local[: -len(own[0])]}@{domain}", own[1])
    elif BOUNCES in local:
        base, _, token = local.partition(BOUNCES)
        route_ = Route(f"{base}@{domain}", Kind.BOUNCE, token)
    else:
        route_ = Route(address, Kind.POST)
    if route_.list not in lists:
        raise UnknownRecipient("unknown-recipient")
    return route_


@dataclass(frozen=True)
class Selection:
    now: tuple[Member, ...]  # get a copy at once
    digest: tuple[Member, ...]  # read digests: the post also waits in the digest backlog


def select(members: Sequence[Member], kind: Kind) -> Selection:
    """An alert goes to every member at once, digest readers and paused members too; a post to
    those who take posts as they come and have not paused. A member whose key was revoked gets
    nothing: that key must not be trusted, nor counted as unusable; nor does one whose mailbox
    refused a copy for good (Member.bounce_paused)."""
    now = tuple(m for m in members
                if m.reachable and (kind == Kind.ALERT or (m.mode == "immediate" and not m.paused)))
    return Selection(now, tuple(m for m in members if m.mode == "digest"))

