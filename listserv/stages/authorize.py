"""Authorize: is an opened post from a current member, fresh, meant for this list, and
allowed on this route?

Identity is the pinned fingerprint: the signer's VALIDSIG primary fingerprint must equal the
fingerprint pinned to a member.

A signature says who wrote the content, not where it was meant to go: the envelope and the
encryption are not signed, so an outsider holding a member's signed post to list A can
encrypt it to list B's key and post it there. What the member meant is in the signed entity's
own headers (protected headers, as Thunderbird writes them): when they name addresses, this
list must be one of them. Content that names none (Mutt without protected headers, inline
PGP, Apple Mail) cannot be checked; the home-wide replay record stops it instead.

An encrypted submission must also have been opened by this list's own key: every list's
secret key is in the one keyring, so a message encrypted only to list B would otherwise be
taken at list A's address just as it is (the open stage keeps gpg to A's key packets, so a
cross-post encrypted to both is opened with A's key there).

Replay is checked against the events store (listserv.ledger.claim_signature), since it needs
a write; the rule it applies (`replayed`) is decided here, and everything here is pure. Every
refusal after the post was opened names its signer, for `listserv rejections`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .. import mime
from ..errors import CommandsInPost, Unauthorized
from ..model import Kind, MailingList, Member, PendingKey, Roster
from ..options import duration_seconds
from .hold import may_post
from .commands import holds_only, looks_like_request
from .open import Opened
from .route import URGENT, Route

FUTURE_SKEW = 600  # a signature may be dated at most 10 minutes ahead of our clock
ADDRESS_HEADERS = ("To", "Cc")  # Bcc never reaches the signed headers of a real client
_LIST_ID = re.compile(r"<([^<>]*)>")


@dataclass(frozen=True)
class SignedAddressing:
    """What the signed content itself says it was written for."""

    addresses: frozenset[str]  # its To and Cc, lowercased, an +urgent address as its list's
    list_ids: tuple[str, ...]  # the identifier of each List-Id it carries, lowercased


@dataclass(frozen=True)
class Authorized:
    member: Member  # who signed
    addressed: frozenset[str]  # SignedAddressing.addresses: the lists a cross-post may reach


def authorize(opened: Opened, route: Route, mailing_list: MailingList,
              members: Mapping[str, Member], now: float,
              confirming: Mapping[str, PendingKey] | None = None) -> Authorized:
    """Return who signed and whom the content names, or raise Unauthorized with the reason
    for the log. `confirming`: the members' new keys awaiting their code (Roster.confirming)."""
    if not opened.encrypted and (route.kind == Kind.REQUEST or mailing_list.option("require_encryption")):
        raise Unauthorized("not-encrypted", signer=opened.signer)
    member = members.get(opened.signer) or confirming_member(opened, route, confirming or {}, now)
    if member is None:
        raise Unauthorized("not-a-member", signer=opened.signer)
    if not member.active:  # a revocation of the pinned key was taken in (gpg may not say so)
        raise Unauthorized("key-revoked", signer=opened.signer)
    max_age = duration_seconds(mailing_list.option("max_signature_age"))
    if opened.signed_at < now - max_age:
        raise Unauthorized("stale-signature", signer=opened.signer)
    if opened.signed_at > now + FUTURE_SKEW:
        raise Unauthorized("future-signature", signer=opened.signer)
    if not encrypted_to_list(opened, mailing_list):
        raise Unauthorized("not-encrypted-to-list", signer=opened.signer)
    addressing = signed_addressing(opened.content)
    require_signed_for_this_list(addressing, mailing_list, opened.signer, route.kind)
    if route.kind == Kind.ALERT and mailing_list.option("alert_senders") == "admins" \
            and member.role != "admin":
        raise Unauthorized("alert-not-allowed", signer=opened.signer)
    if route.kind == Kind.POST and not may_post(member, mailing_list) and not mailing_list.option("hold_refused_posts"):
        raise Unauthorized("post-not-allowed", signer=opened.signer)
    return Authorized(member, addressing.addresses)


def confirming_member(opened: Opened, route: Route, confirming: Mapping[str, PendingKey], now: float) -> Member | None:
    """The exceptions to "signed by a pinned key": a request signed by a member's new key,
    still awaiting its code, that holds nothing but x-confirm is taken for that member -- so a
    member whose client signs with the new key can still prove they hold it; the same for an
    invitee's key awaiting its challenge; and a stranger's request signed by the key it
    carries that holds nothing but x-join (listserv.stages.join, PendingKey.command). Anything else
    signed by that key (a post, any other command) hears the uniform refusal. Every other
    check (encryption to the list, freshness, replay, signed addressing) applies as ever."""
    pending = confirming.get(opened.signer)
    if pending is None or route.kind != Kind.REQUEST or now > pending.expires \
            or not holds_only(opened.content, pending.command):
        return None
    return pending.member


def encrypted_to_list(opened: Opened, mailing_list: MailingList) -> bool:
    """Whether a submission is signed only, or was opened by the list's own key: gpg's
    DECRYPTION_KEY names its primary fingerprint, also for a hidden recipient (wildcard key
    id), where gpg tries every secret key it holds. The key ids the message's key packets
    name decide nothing: anyone can add a key packet naming any key."""
    return not opened.encrypted or opened.decrypted_with == mailing_list.fingerprint


def refuse_commands_in_post(opened: Opened, route: Route, mailing_list: MailingList) -> None:
    """A post that begins with commands was meant for LIST-request@: it must never go out to
    every member. Said only after the signature and its freshness were found good."""
    if route.kind != Kind.REQUEST and looks_like_request(opened.content):
        raise CommandsInPost("commands-in-post", f"This post begins with list commands (x-...); send them to "
                             f"{mailing_list.request_address} instead.", signer=opened.signer)


def current_sender(opened: Opened, roster: Roster) -> Member:
    """The member who signed an accepted post, as they stand now: a post whose sender left,
    or whose key was revoked, after it was accepted goes to nobody."""
    sender = roster.by_fingerprint.get(opened.signer)
    if sender is None:
        raise Unauthorized("sender-removed", signer=opened.signer)
    if not sender.active:
        raise Unauthorized("key-revoked", signer=opened.signer)
    return sender


def signed_addressing(content: bytes) -> SignedAddressing:
    """The To/Cc addresses and List-Ids among the top-level headers of the signed entity.
    Headers outside the signature (the submission's own) are not looked at: anyone can
    write them."""
    entity = mime.parse(content)
    addresses = set()
    for name in ADDRESS_HEADERS:
        for address in getattr(entity.get(name), "addresses", ()):
            if address.addr_spec:
                addresses.add(_as_list_address(address.addr_spec.lower()))
    list_ids = []
    for value in entity.get_all("List-Id") or ():
        text = str(value).strip()
        if text:
            found = _LIST_ID.findall(text)
            list_ids.append((found[-1] if found else text).strip().lower())
    return SignedAddressing(frozenset(addresses), tuple(list_ids))


def _as_list_address(address: str) -> str:
    # A post signed for news+urgent@ was written for the list news@: both are its addresses.
    local, at, domain = address.rpartition("@")
    if at and local.endswith(URGENT):
        return f"{local[: -len(URGENT)]}@{domain}"
    return address


def require_signed_for_this_list(addressing: SignedAddressing, mailing_list: MailingList,
                                 signer: str | None = None, kind: Kind = Kind.POST) -> None:
    """Unauthorized("wrong-list") when the signed content names addresses but not this list's
    (or its +urgent address) -- for a request, the list's LIST-request@ address, so a request
    cannot be posted nor a post sent as a request -- or carries another list's List-Id."""
    meant = mailing_list.request_address if kind == Kind.REQUEST else mailing_list.address
    if addressing.addresses and meant not in addressing.addresses:
        raise Unauthorized("wrong-list", signer=signer)
    if any(list_id != mailing_list.list_id for list_id in addressing.list_ids):
        raise Unauthorized("wrong-list", signer=signer)


def replayed(earlier: frozenset[str], mailing_list: MailingList, addressed: frozenset[str]) -> bool:
    """Whether taking a signature on `mailing_list` is a replay, given the lists that took it
    before. A signature counts once in the whole home, not once per list: otherwise a post
    that names no list could be re-encrypted to every other list. The one exception is a
    cross-post: listserv takes one list per message, so a member's MTA sends one copy per
    list, and content whose signed To/Cc names this list and every list that took it already
    may be taken once on each."""
    if mailing_list.address in earlier:
        return True
    return bool(earlier) and not (earlier | {mailing_list.address}) <= addressed


def replay_window(mailing_list: MailingList) -> int:
    """How long a signature digest is remembered: longer than any signature stays acceptable."""
    return 2 * duration_seconds(mailing_list.option("max_signature_age")) + FUTURE_SKEW


def home_replay_window(lists: Iterable[MailingList]) -> int:
    """How long a record is kept: it guards every list of the home, so for the longest window
    among them. Kept only for the accepting list's window, a post taken on a list with a
    1-day max_signature_age could be replayed on a 7-day list after its record expired."""
    return max((replay_window(ml) for ml in lists), default=0)
