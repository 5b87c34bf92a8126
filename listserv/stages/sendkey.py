"""Sendkey: LIST-sendkey@ answers anyone with the list's public key, signed by the list.

An automatic reply, so RFC 3834's rules hold: it goes to the envelope sender (the
Return-Path), never to a null sender, never to mail marked Auto-Submitted other than `no`,
under a null sender itself, marked `Auto-Submitted: auto-replied`. And since an envelope
sender is easily forged, it is a way to send mail to a stranger: at most one reply per
address a day, and SENDKEY_PER_DAY per list a day (listserv.ledger counts them).

Mail that gets no reply is still taken (250): a 5xx here would have the sender's server, or
the Postfix in front, send a bounce to that same forged address -- the very mail the limits
are there to stop. Each one is kept for `listserv rejections` with its reason.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import format_datetime, parseaddr

from .. import mime
from ..errors import Unanswered, UsageError
from ..keyring import Keyring
from ..model import MailingList, list_of_address, normalise_address
from ..templates import Templates
from .compose import new_message_id

SENDKEY_PER_DAY = 100  # replies a list's LIST-sendkey@ sends in 24 hours, to anyone
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,250}>")


@dataclass(frozen=True)
class KeyRequest:
    """Who gets the list's key: the envelope sender, and the id of the mail that asked."""

    address: str
    digest: str  # a keyed digest of the list and the address: the rate records keep no address
    message_id: str | None = None

    def sealed(self) -> bytes:
        """What the spool keeps of the request (sealed to the list's key): no more than this."""
        return json.dumps({"address": self.address, "message_id": self.message_id}).encode()

    @classmethod
    def unsealed(cls, data: bytes, secret: bytes, mailing_list: MailingList) -> KeyRequest:
        kept = json.loads(data)
        return cls(kept["address"], sender_digest(secret, mailing_list, kept["address"]), kept["message_id"])


def sender_digest(secret: bytes, mailing_list: MailingList, address: str) -> str:
    return hmac.new(secret, f"sendkey\n{mailing_list.address}\n{address.lower()}".encode(), hashlib.sha256).hexdigest()


def key_request(raw: bytes, sender: str, mailing_list: MailingList, secret: bytes) -> KeyRequest:
    """The request, or Unanswered naming why no key may go back."""
    address = sender.strip().strip("<>")
    if not address:
        raise Unanswered("sendkey-null-sender")
    if mime.auto_submitted(raw):
        raise Unanswered("sendkey-auto-submitted")
    try:
        normalised = normalise_address(address)
    except UsageError:
        raise Unanswered("sendkey-bad-sender") from None
    if normalised.split("@")[0] in ("mailer-daemon", "postmaster") \
            or list_of_address(normalised, [mailing_list.address]) is not None:
        raise Unanswered("sendkey-auto-submitted")  # RFC 3834 §2: never to a mail system
    head = BytesHeaderParser(policy=policy.compat32).parsebytes(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
    found = _MESSAGE_ID.search(str(head.get("Message-ID", "")))
    return KeyRequest(address, sender_digest(secret, mailing_list, address), found.group(0) if found else None)


def key_reply(request: KeyRequest, mailing_list: MailingList, templates: Templates, keyring: Keyring) -> bytes:
    """The reply: the list's key attached, the whole signed by the list (RFC 3156 §5), CRLF."""
    text = templates.render("sendkey-reply.txt.j2", list=mailing_list, fingerprint=mailing_list.fingerprint,
                            address=request.address)
    key = keyring.export(mailing_list.fingerprint).encode("ascii")
    return list_signed(text, mailing_list, keyring, mailing_list.sendkey_address, request.address,
                       attachments=((f"{mailing_list.address}.asc", "application/pgp-keys", key),),
                       in_reply_to=request.message_id)


def list_signed(text: str, mailing_list: MailingList, keyring: Keyring, sender: str, to: str, *,
                attachments: tuple[tuple[str, str, bytes], ...] = (), in_reply_to: str | None = None,
                automatic: str = "auto-replied") -> bytes:
    """A message to one address that is signed by the list's key and not encrypted (RFC 3156
    §5), CRLF: `text` is a rendered template (its first line 'Subject: ...', a blank line, the
    body), with (filename, mime type, 7-bit data) attachments; from `sender` (one of the list's
    addresses) and marked Auto-Submitted: `automatic`. For whoever has no usable key here: a
    stranger asking LIST-sendkey@, a member whose key stopped working (listserv.keywatch)."""
    subject, _, body = text.partition("\n\n")
    signed = EmailMessage(policy=policy.SMTP)
    signed.set_content(body, charset="utf-8", cte="quoted-printable")
    for filename, mime_type, data in attachments:
        maintype, subtype = mime_type.split("/", 1)
        signed.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename, cte="7bit")
    del signed["MIME-Version"]
    return signed_message(signed.as_bytes(), subject.removeprefix("Subject:").strip(), mailing_list, keyring,
                          sender, to, in_reply_to=in_reply_to, automatic=automatic)


def signed_message(entity: bytes, subject: str, mailing_list: MailingList, keyring: Keyring, sender: str, to: str,
                   *, in_reply_to: str | None = None, automatic: str = "", reply_to: str | None = None) -> bytes:
    """`entity` (a MIME entity, CRLF) signed by the list's key as RFC 3156 §5's
    multipart/signed, in a message from `sender` to `to`, CRLF; marked Auto-Submitted:
    `automatic` when one is given."""
    signature = keyring.sign_detached(entity, mailing_list.fingerprint)
    boundary = f"=-{hashlib.sha256(entity).hexdigest()[:32]}"
    head = EmailMessage(policy=policy.SMTP)
    head["From"] = Address(display_name=mailing_list.name, addr_spec=sender)
    head["To"] = parseaddr(to)[1]
    if reply_to:
        head["Reply-To"] = Address(display_name=mailing_list.name, addr_spec=reply_to)
    head["Subject"] = subject
    head["Date"] = format_datetime(datetime.now(timezone.utc))
    head["Message-ID"] = new_message_id(mailing_list)
    if in_reply_to:
        head["In-Reply-To"] = in_reply_to
        head["References"] = in_reply_to
    if automatic:
        head["Auto-Submitted"] = automatic
    head["MIME-Version"] = "1.0"
    head["Content-Type"] = "multipart/signed"
    head.set_param("micalg", "pgp-sha512")
    head.set_param("protocol", "application/pgp-signature")
    head.set_param("boundary", boundary)
    top = head.as_bytes().split(b"\r\n\r\n", 1)[0]
    return (top + b"\r\n\r\nThis is an OpenPGP/MIME signed message (RFC 3156).\r\n"
            + f"--{boundary}\r\n".encode() + entity + f"\r\n--{boundary}\r\n".encode()
            + b'Content-Type: application/pgp-signature; name="signature.asc"\r\n'
            + b"Content-Description: OpenPGP digital signature\r\n\r\n"
            + signature.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            + f"\r\n--{boundary}--\r\n".encode())
