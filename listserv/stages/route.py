"""Route: which list an envelope recipient names, and whether it is a post, an alert or a bounce."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from ..errors import UnknownRecipient

URGENT = "+urgent"
BOUNCES = "-bounces+"


@dataclass(frozen=True)
class Route:
    list: str  # the list's address
    kind: str  # "post", "alert" or "bounce"
    token: str = ""  # VERP token of a bounce


def route(recipient: str, lists: Collection[str]) -> Route:
    """Map RCPT TO to a list; anything that is not one of `lists` is refused (550 5.1.1)."""
    address = recipient.strip().strip("<>").lower()
    local, at, domain = address.rpartition("@")
    if not at or not local:
        raise UnknownRecipient("unknown-recipient")
    if local.endswith(URGENT):
        route_ = Route(f"{local[: -len(URGENT)]}@{domain}", "alert")
    elif BOUNCES in local:
        base, _, token = local.partition(BOUNCES)
        route_ = Route(f"{base}@{domain}", "bounce", token)
    else:
        route_ = Route(address, "post")
    if route_.list not in lists:
        raise UnknownRecipient("unknown-recipient")
    return route_
