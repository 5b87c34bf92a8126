"""Resend: may this post go out to outsiders too, and to whom (docs/requests.md, Resends). Pure.

A post to the list whose first text part begins with `x-list-name: LIST` and one or more
`x-resend: ADDRESS [ADDRESS...]` lines (the request grammar, listserv.stages.commands) is a
resend: each address, one of the list's contacts, gets its own copy from the list's address,
and the members get the post as usual with one line at the top saying so. Its keyword lines
are cut from both. It is refused whole -- nothing goes to anyone, the poster hears why --
when the poster is neither a spokesperson nor an admin, an address is malformed or no
contact, the lines name another list, or a contact has no key that can be encrypted to
(unless the list's resend_unencrypted allows a signed plain copy for it).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage

from .. import mime
from ..errors import Malformed, UsageError
from ..keyring import Keyring
from ..model import Kind, MailingList, Member, fingerprint_format, normalise_address
from .commands import command_lines, first_text_part, is_resend
from .compose import NO_SUBJECT, Post, normalise_subject, rebuilt_parts
from .sendkey import signed_message

RESENDERS = ("spokesperson", "admin")  # the roles that may resend
MAX_ADDRESSES = 20  # outside addresses one post may be resent to


@dataclass(frozen=True)
class Target:
    """One outside address and the contact key its copy is encrypted to (None: a signed plain copy)."""

    address: str
    fingerprint: str | None


@dataclass(frozen=True)
class Resend:
    """What a resend post becomes, or why it is refused (`refused`: one sentence for the poster)."""

    targets: tuple[Target, ...] = ()
    refused: str | None = None
    content: bytes = b""  # the members' content: keyword lines cut, the note line first
    outside: bytes = b""  # the outsiders' content: keyword lines cut


def read_resend(content: bytes, mailing_list: MailingList, poster: Member,
                contacts: Mapping[str, str | None], usable: Collection[str]) -> Resend | None:
    """The resend `content` asks for (None: it is no resend). `contacts`: the list's contacts,
    address -> pinned fingerprint (None: no key); `usable`: the fingerprints among them that can
    be encrypted to now."""
    if not is_resend(content):
        return None
    lines = command_lines(content)
    if poster.role not in RESENDERS:
        return Resend(refused="Only the list's spokespersons and admins may resend a post (x-resend); nothing was sent.")
    named, addresses = None, []
    for number, text, match in lines:
        keyword, rest = match.group(1).lower(), match.group(2).strip()
        words = [w for w in re.split(r"[\s,]+", rest) if w]
        if keyword == "list-name":
            named = words[0].lower() if len(words) == 1 else ""
            continue
        if not words:
            return Resend(refused=f"Line {number} ({text}): write it as x-resend: ADDRESS [ADDRESS...]; nothing was sent.")
        for word in words:
            try:
                address = normalise_address(word, "address")
            except UsageError:
                return Resend(refused=f"Line {number}: '{word}' is not a valid email address; nothing was sent.")
            if address not in addresses:
                addresses.append(address)
    if named != mailing_list.address:
        return Resend(refused=f"A resend must name this list (x-list-name: {mailing_list.address}); nothing was sent.")
    if len(addresses) > MAX_ADDRESSES:
        return Resend(refused=f"A post may be resent to at most {MAX_ADDRESSES} addresses, not {len(addresses)}; "
                              "nothing was sent.")
    targets = []
    for address in addresses:
        if address not in contacts:
            return Resend(refused=f"{address} is not one of the list's contacts (an admin adds it with "
                                  "x-add-contact); nothing was sent.")
        fingerprint = contacts[address]
        if fingerprint is None or fingerprint not in usable:
            if not mailing_list.option("resend_unencrypted"):
                return Resend(refused=f"The list has no usable key for {address}, and resend_unencrypted is off; "
                                      "nothing was sent.")
            fingerprint = None
        targets.append(Target(address, fingerprint))
    count = len(lines)
    note = resent_line(poster, targets)
    return Resend(tuple(targets), None, rewrite(content, count, note), rewrite(content, count))


def resent_line(poster: Member, targets: list[Target] | tuple[Target, ...]) -> str:
    """The line the members read first: who resent it, to which address and key."""
    shown = [f"{t.address} (key {fingerprint_format(t.fingerprint)})" if t.fingerprint
             else f"{t.address} (signed, not encrypted: no usable key)" for t in targets]
    return f"[Resent by {poster.name} from the list's address to {', '.join(shown)}.]"


def rewrite(content: bytes, count: int, note: str | None = None) -> bytes:
    """`content` with the first `count` command lines of its first text part cut (and the
    blank lines before and after them), `note` put first when given; CRLF, as signed content is."""
    try:
        entity = mime.parse(content)
    except Malformed:
        return content
    part = first_text_part(entity)
    if part is None:
        return content
    lines = part.get_content().replace("\r\n", "\n").split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    rest = "\n".join(lines[start + count:]).lstrip("\n")
    text = f"{note}\n\n{rest}" if note is not None else rest
    part.set_content(text or "\n", charset="utf-8")
    return mime.crlf(entity.as_bytes(policy=policy.SMTP))


def outside_post(resend: Resend, target: Target) -> Post:
    """What an outsider's copy is composed from: the list speaks (no member named), to them."""
    return Post(resend.outside, Kind.POST, to=target.address)


def plain_copy(resend: Resend, target: Target, mailing_list: MailingList, keyring: Keyring) -> bytes:
    """A signed plain copy (RFC 3156 §5) for a contact with no usable key (resend_unencrypted):
    from the list's address, Reply-To LIST-owner@, the post's own parts rebuilt as the list's
    message carries them; nothing of the member's message but its Subject and content."""
    original = mime.parse(resend.outside)
    entity = EmailMessage(policy=policy.SMTP)
    entity["Content-Type"] = "multipart/mixed"
    entity.set_boundary(f"=-{secrets.token_hex(16)}")
    entity.set_payload(rebuilt_parts(resend.outside, mailing_list))  # type: ignore[arg-type]
    subject = normalise_subject(str(original.get("Subject") or ""), "", False) or NO_SUBJECT
    return signed_message(mime.crlf(entity.as_bytes(policy=policy.SMTP)), subject, mailing_list, keyring,
                          mailing_list.address, target.address, reply_to=mailing_list.owner_address)
