"""Compose: build the list's own message from an opened post. Pure: bytes in, bytes out.

Nothing of the submitter's message is copied wholesale. The new message is built from an
allow-list: the MIME parts' Content-* headers and bodies are kept (with fresh boundaries and
fresh Content-IDs); every other header -- Received, User-Agent, X-*, Message-ID, Date,
Autocrypt, DKIM-Signature, the client's own protected headers -- is dropped.

The result has two halves:
  * `inner`: the cryptographic payload (RFC 9788, hp="cipher"; also marked with the older
    protected-headers="v1" that Thunderbird reads) holding the real Subject, the pseudonymous
    From, the content and the footer, with the From and Subject repeated at the top of the
    text for clients that read only the outer header (a Legacy Display Element, see
    listserv.legacy_display). This is what fan-out encrypts.
  * `outer_prefix` / `outer_suffix`: the RFC 3156 multipart/encrypted envelope that every
    member's copy shares, with placeholder Subject and the list's headers only; a copy is
    prefix + that member's armored ciphertext + suffix. The list key's Autocrypt and OpenPGP
    headers are not written here: the outbox adds them to every job's envelope, whatever
    built it (listserv.autocrypt).
"""

from __future__ import annotations

import base64
import quopri
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING
from datetime import datetime, timezone
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime

from .. import legacy_display
from ..model import Kind, MailingList, Member

if TYPE_CHECKING:
    from ..templates import Templates
    from .open import Opened

PLACEHOLDER_SUBJECT = "[...]"  # the outer Subject of every copy; the real one is inside
NO_SUBJECT = "(no subject)"  # when the signed content has none
KEPT_PART_HEADERS = ("content-type", "content-transfer-encoding", "content-disposition",
                     "content-description", "content-language")
# Parameters that describe the submitter's client, not the content: RFC 2183 dates (their clock
# and time zone) and size; Content-Type's x-* (Apple Mail's x-unix-mode, x-mac-type/-creator).
DROPPED_DISPOSITION_PARAMS = ("creation-date", "modification-date", "read-date", "size")
_MESSAGE_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
_CID = re.compile(r"cid:([^\"'\s>)]+)", re.IGNORECASE)
ALERT_HEADERS = (("Importance", "high"), ("Priority", "urgent"), ("X-Priority", "1"))


@dataclass(frozen=True)
class Post:
    """What the list's message is built from: content, and who sent it."""

    content: bytes  # a MIME entity: the signed content of a post, or the list's own text
    kind: Kind
    sender: Member | None = None  # None: the list speaks itself (digests, notices)
    in_reply_to: str | None = None  # threading, from the signed content only
    references: str | None = None
    speaker: str | None = None  # the list's address it comes from (default the list's own)
    auto_submitted: str = ""  # RFC 3834's Auto-Submitted: "auto-replied" or "auto-generated"; "": none
    to: str | None = None  # an outsider the list writes to (a resend): To them, Reply-To LIST-owner@, no List-*

    @classmethod
    def of(cls, opened: Opened, sender: Member, kind: Kind) -> Post:
        return cls(opened.content, kind, sender, opened.in_reply_to, opened.references)


@dataclass(frozen=True)
class Wrapping:
    """The list's own text around the content: its footer, and first an alert's banner."""

    footer: str
    banner: str | None = None


def wrapping(templates: Templates, mailing_list: MailingList, post: Post) -> Wrapping:
    """The deployment's footer (and alert banner) for `post`, rendered from its templates."""
    footer = templates.render("footer.txt.j2", list=mailing_list, footer=mailing_list.option("footer"))
    if post.kind != Kind.ALERT or post.sender is None:
        return Wrapping(footer)
    return Wrapping(footer, templates.render("alert.txt.j2", list=mailing_list, sender=post.sender.name))


@dataclass(frozen=True)
class Composed:
    inner: bytes
    outer_prefix: bytes
    outer_suffix: bytes
    message_id: str
    subject: str

    def copy(self, armored: bytes) -> bytes:
        return self.outer_prefix + armored + self.outer_suffix


def new_message_id(mailing_list: MailingList) -> str:
    return f"<{secrets.token_hex(12)}@{mailing_list.domain}>"


def list_id(mailing_list: MailingList) -> str:
    return f"{mailing_list.name} <{mailing_list.list_id}>"


def list_headers(mailing_list: MailingList) -> list[tuple[str, str]]:
    return [
        ("List-Id", list_id(mailing_list)),
        ("List-Post", f"<mailto:{mailing_list.address}>"),
        ("List-Help", f"<mailto:{mailing_list.request_address}?subject=help>"),
        ("List-Owner", f"<mailto:{mailing_list.owner_address}>"),
        # To the admins, not to LIST-request@: a client's one-click unsubscribe is not signed,
        # and LIST-request@ would refuse it; x-leave there is the signed way (docs/requests.md).
        ("List-Unsubscribe", f"<mailto:{mailing_list.owner_address}?subject=unsubscribe>"),
        ("Precedence", "list"),
    ]


def own_thread_ids(value: str | None, mailing_list: MailingList) -> list[str]:
    """Keep only message ids minted by this list: threads work, outside ids never leak."""
    if not value:
        return []
    suffix = f"@{mailing_list.domain}>"
    return [mid for mid in _MESSAGE_ID.findall(value) if mid.lower().endswith(suffix)]


def _parse(content: bytes) -> Message:
    return BytesParser(policy=policy.default).parsebytes(content)


def _boundary() -> str:
    return f"=-{secrets.token_hex(16)}"


class _Rebuilder:
    """Copies a MIME tree keeping only Content-* headers; fresh boundaries and Content-IDs."""

    def __init__(self, mailing_list: MailingList):
        self.domain = mailing_list.domain
        self.cids: dict[str, str] = {}

    def collect_cids(self, part: Message) -> None:
        for sub in part.walk():
            old = sub.get("Content-ID")
            if old:
                self.cids[str(old).strip().strip("<>")] = f"{secrets.token_hex(10)}@{self.domain}"

    def rebuild(self, part: Message) -> EmailMessage:
        new = EmailMessage(policy=policy.SMTP)
        if part.get_content_type() == "message/rfc822":
            return _embedded(part, new)
        if part.is_multipart():
            new["Content-Type"] = part.get_content_type()
            for key, value in part.get_params(header="content-type")[1:]:
                if key.lower() not in ("boundary", "protected-headers", "hp") \
                        and not key.lower().startswith("x-"):
                    new.set_param(key, value)
            new.set_boundary(_boundary())
            new.set_payload([self.rebuild(sub) for sub in part.iter_parts()])  # type: ignore[attr-defined]
            if not new.get_payload():
                new.set_payload([])
            return new
        for name in KEPT_PART_HEADERS:
            if name in part:
                new[name] = str(part[name])
        _drop_client_params(new)
        old_cid = str(part.get("Content-ID", "")).strip().strip("<>")
        if old_cid in self.cids:
            new["Content-ID"] = f"<{self.cids[old_cid]}>"
        if part.get_content_type() == "text/html" and self.cids:
            self._rewrite_cid_references(part, new)
        else:
            _copy_body(part, new)
        legacy_display.strip(new)
        return new

    def _rewrite_cid_references(self, part: Message, new: EmailMessage) -> None:
        html = part.get_content()
        html = _CID.sub(lambda m: f"cid:{self.cids.get(m.group(1), m.group(1))}", html)
        disposition = new.get("Content-Disposition")
        for name in list(new.keys()):
            if name.lower() in ("content-type", "content-transfer-encoding"):
                del new[name]
        new.set_content(html, subtype="html", charset="utf-8", cte="quoted-printable")
        del new["MIME-Version"]
        if disposition and "Content-Disposition" not in new:
            new["Content-Disposition"] = disposition


def _embedded(part: Message, new: EmailMessage) -> EmailMessage:
    """A forwarded message is content, whole: its own From, Subject and Date are what the one
    who attached it wants read. Only the attaching part's headers are cut to Content-*."""
    for name in KEPT_PART_HEADERS:
        if name in part and name != "content-transfer-encoding":  # 7bit, 8bit or binary: the inner decides
            new[name] = str(part[name])
    _drop_client_params(new)
    embedded = part.get_payload()
    new.set_payload(embedded if isinstance(embedded, list) else [embedded])
    return new


def _copy_body(part: Message, new: EmailMessage) -> None:
    """The part's body, byte for byte once decoded. An 8bit or binary body (Mutt sends UTF-8
    text attachments so) is re-encoded quoted-printable or base64: the email package hands
    such a body back as decoded text, which it then cannot write out again."""
    encoding = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    if encoding in ("base64", "quoted-printable"):
        new.set_payload(part.get_payload(decode=False))
        return
    data = part.get_payload(decode=True) or b""
    if data.isascii():
        new.set_payload(data.decode("ascii"))
        return
    del new["Content-Transfer-Encoding"]
    if part.get_content_maintype() == "text":
        new.set_payload(quopri.encodestring(data).decode("ascii").replace("\r\n", "\n"))
        new["Content-Transfer-Encoding"] = "quoted-printable"
    else:
        new.set_payload(base64.encodebytes(data).decode("ascii"))
        new["Content-Transfer-Encoding"] = "base64"


def _drop_client_params(part: EmailMessage) -> None:
    for key, _ in (part.get_params(header="content-type") or [])[1:]:
        # hp and protected-headers on a single-part post mark the client's payload, which this
        # part no longer is: inside the list's payload they would mark a part as a second one.
        if key.lower().startswith("x-") or key.lower() in ("hp", "protected-headers"):
            part.del_param(key, header="content-type")
    for key in DROPPED_DISPOSITION_PARAMS:
        if part.get_param(key, header="content-disposition") is not None:
            part.del_param(key, header="content-disposition")


def _body_parts(content: Message, mailing_list: MailingList) -> list[EmailMessage]:
    rebuilder = _Rebuilder(mailing_list)
    rebuilder.collect_cids(content)
    if content.get_content_type() == "multipart/mixed":
        parts = [rebuilder.rebuild(sub) for sub in content.iter_parts()]  # type: ignore[attr-defined]
    else:
        parts = [rebuilder.rebuild(content)]
    # A "legacy display" part that repeats the client's protected headers goes too.
    return [p for p in parts if p.get_content_type() != "text/rfc822-headers"]


def rebuilt_parts(content: bytes, mailing_list: MailingList) -> list[EmailMessage]:
    """The body parts of `content` as the list's message carries them (Content-* headers only,
    fresh boundaries and Content-IDs): for a copy built elsewhere (listserv.stages.resend)."""
    return _body_parts(_parse(content), mailing_list)


def _text_part(text: str) -> EmailMessage:
    part = EmailMessage(policy=policy.SMTP)
    part.set_content(text, charset="utf-8")
    del part["MIME-Version"]
    return part


# What clients put before the Subject of a reply: Re, and in other languages Aw (German), Sv
# (Scandinavian), Vs (Finnish) and Antw (Dutch), with Outlook's count as in "Re[2]:" -- Mailman's
# set (handlers/subject_prefix.py) and Antw. Fwd and the like stay: a forward is not a reply.
_REPLY_MARK = re.compile(r"(?:re|aw|sv|vs|antw)(?:\[\d+\])?\s*:\s*", re.IGNORECASE)
URGENT_MARK = "URGENT:"  # the list's own mark of an alert, put first


def normalise_subject(subject: str, prefix: str, urgent: bool) -> str:
    """The list's Subject for `subject`: "PREFIX Re: text", whatever way the member's client
    wrote it ("Re: PREFIX text", "RE: Re: PREFIX text", "Aw: ..."), "URGENT: " first for an alert.

    Mailman's rule: every copy of the prefix goes, then the reply marks at the front, which
    come back as one "Re:" after the prefix -- so a thread reads the same in every member's
    list. The list's URGENT: mark at the front goes too: a reply to an alert is an ordinary
    post unless it was itself sent as one, and only alerts are marked."""
    text = " ".join(subject.split())
    if prefix:
        text = re.sub(rf"\s*{re.escape(prefix)}\s*", " ", text, flags=re.IGNORECASE).strip()
    reply = False
    while True:
        if text.startswith(URGENT_MARK):
            text = text[len(URGENT_MARK):].lstrip()
        elif mark := _REPLY_MARK.match(text):
            text, reply = text[mark.end():], True
        else:
            break
    subject = f"Re: {text or NO_SUBJECT}" if reply else (text or NO_SUBJECT)
    if prefix:
        subject = f"{prefix} {subject}"
    return f"{URGENT_MARK} {subject}" if urgent else subject


def _subject(content: Message, mailing_list: MailingList, urgent: bool) -> str:
    # Only the signed content's own Subject: the submission's outer one is not signed, and
    # anyone on the way could put words in a member's mouth with it.
    prefix = str(mailing_list.option("subject_prefix")).strip()
    return normalise_subject(str(content.get("Subject") or ""), prefix, urgent)


def _shown_wrongly_outside(inner: EmailMessage, outer_from: Address) -> list[tuple[str, str]]:
    """The user-facing fields a client reading only the outer header would show wrongly: the
    Subject (outside it is PLACEHOLDER_SUBJECT) and the From when it carries a pseudonym."""
    fields = []
    if str(inner["From"]) != str(outer_from):
        fields.append(("From", str(inner["From"])))
    fields.append(("Subject", str(inner["Subject"])))
    return fields


def compose(post: Post, mailing_list: MailingList, wrapping: Wrapping, *,
            now: datetime | None = None, message_id: str | None = None) -> Composed:
    """Build the list's message from `post`, wrapped in the list's own text (an alert's banner
    first, the footer last). The Subject is the content's own (signed, for a post) or
    NO_SUBJECT. `now` and `message_id` default to the present and a fresh id."""
    sender, footer, banner = post.sender, wrapping.footer, wrapping.banner
    now = now or datetime.now(timezone.utc)
    message_id = message_id or new_message_id(mailing_list)
    original = _parse(post.content)
    urgent = post.kind == Kind.ALERT
    subject = normalise_subject(str(original.get("Subject") or ""), "", False) if post.to \
        else _subject(original, mailing_list, urgent)
    date = format_datetime(now.astimezone(timezone.utc))
    display = f"{sender.name} via {mailing_list.name}" if sender else mailing_list.name
    speaker = post.speaker or mailing_list.address
    outer_from = Address(display_name=mailing_list.name, addr_spec=speaker)
    automatic = [("Auto-Submitted", post.auto_submitted)] if post.auto_submitted else []
    parents = own_thread_ids(post.in_reply_to, mailing_list)
    thread = own_thread_ids(post.references, mailing_list)

    # A resend (post.to) is the list's own word to an outsider: no list headers, no footer,
    # and answers go to the admins.
    to = Address(addr_spec=post.to) if post.to else Address(display_name=mailing_list.name, addr_spec=mailing_list.address)
    reply_to = mailing_list.owner_address if post.to else speaker
    headers = [] if post.to else list_headers(mailing_list)
    inner = EmailMessage(policy=policy.SMTP)
    inner["From"] = Address(display_name=display, addr_spec=speaker)
    inner["To"] = to
    inner["Reply-To"] = Address(display_name=mailing_list.name, addr_spec=reply_to)
    inner["Subject"] = subject
    inner["Date"] = date
    inner["Message-ID"] = message_id
    if parents:
        inner["In-Reply-To"] = parents[-1]
    if thread or parents:
        inner["References"] = " ".join(dict.fromkeys(thread + parents))
    for name, value in [*headers, *automatic]:
        inner[name] = value
    if urgent:
        for name, value in ALERT_HEADERS:
            inner[name] = value
    inner["HP-Outer"] = f"Subject: {PLACEHOLDER_SUBJECT}"
    inner["HP-Outer"] = f"From: {outer_from}"
    inner["MIME-Version"] = "1.0"
    inner["Content-Type"] = "multipart/mixed"
    inner.set_param("protected-headers", "v1")
    inner.set_param("hp", "cipher")
    inner.set_boundary(_boundary())
    leading = [_text_part(banner)] if banner else []
    parts = [*leading, *_body_parts(original, mailing_list), *([] if post.to else [_text_part(footer)])]
    inner.set_payload(legacy_display.add(parts, _shown_wrongly_outside(inner, outer_from)))

    outer_boundary = _boundary()
    outer = EmailMessage(policy=policy.SMTP)
    outer["From"] = outer_from
    outer["To"] = to if post.to else outer_from
    if post.to:
        outer["Reply-To"] = str(inner["Reply-To"])
    outer["Subject"] = PLACEHOLDER_SUBJECT
    for name in ("Date", "Message-ID", "In-Reply-To", "References"):
        if name in inner:
            outer[name] = str(inner[name])
    for name, value in [*headers, *automatic, *(ALERT_HEADERS if urgent else ())]:
        outer[name] = value
    outer["MIME-Version"] = "1.0"
    outer["Content-Type"] = "multipart/encrypted"
    outer.set_param("protocol", "application/pgp-encrypted")
    outer.set_boundary(outer_boundary)
    head = outer.as_bytes(policy=policy.SMTP).split(b"\r\n\r\n", 1)[0].decode("ascii") + "\r\n"
    prefix = (
        f"{head}\r\nThis is an OpenPGP/MIME encrypted message (RFC 3156).\r\n"
        f"--{outer_boundary}\r\nContent-Type: application/pgp-encrypted\r\n"
        f"Content-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n"
        f"--{outer_boundary}\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n"
        f"Content-Description: OpenPGP encrypted message\r\n"
        f"Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n"
    )
    suffix = f"\r\n--{outer_boundary}--\r\n"
    return Composed(inner.as_bytes(policy=policy.SMTP), prefix.encode("ascii"),
                    suffix.encode("ascii"), message_id, subject)
