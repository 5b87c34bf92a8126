"""Authorize: is an opened post from a current member, fresh, and allowed on this route?

Identity is the pinned fingerprint: the signer's VALIDSIG primary fingerprint must equal the
fingerprint pinned to a member. Replay is checked by the pipeline against the store, since it
needs a write; everything here is a pure decision.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import Unauthorized
from ..model import MailingList, Member
from ..options import OPTIONS, duration_seconds
from .open import Opened
from .route import Route

FUTURE_SKEW = 600  # a signature may be dated at most 10 minutes ahead of our clock


def option(mailing_list: MailingList, name: str):
    return mailing_list.options.get(name, OPTIONS[name].default)


def authorize(opened: Opened, route: Route, mailing_list: MailingList,
              members: Mapping[str, Member], now: float) -> Member:
    """Return the member who signed, or raise Unauthorized with the reason for the log."""
    if not opened.encrypted and option(mailing_list, "require_encryption"):
        raise Unauthorized("not-encrypted")
    member = members.get(opened.signer)
    if member is None:
        raise Unauthorized("not-a-member")
    if not member.active:  # a revocation of the pinned key was taken in (gpg may not say so)
        raise Unauthorized("key-revoked")
    max_age = duration_seconds(option(mailing_list, "max_signature_age"))
    if opened.signed_at < now - max_age:
        raise Unauthorized("stale-signature")
    if opened.signed_at > now + FUTURE_SKEW:
        raise Unauthorized("future-signature")
    if route.kind == "alert" and option(mailing_list, "alert_senders") == "admins" \
            and member.role != "admin":
        raise Unauthorized("alert-not-allowed")
    return member


def replay_window(mailing_list: MailingList) -> int:
    """How long a signature digest is remembered: longer than any signature stays acceptable."""
    return 2 * duration_seconds(option(mailing_list, "max_signature_age")) + FUTURE_SKEW
