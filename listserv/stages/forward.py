"""Forward: what of a message to LIST-owner@ the admins get, and what they are told of its sender.

Anyone may write to LIST-owner@: a journalist, a stranger, a member who lost their key, a
server's bounce. Its words reach the admins whole, as an attached message/rfc822, inside the
list's own encrypted notice to each admin. What listserv can say of who wrote it:

    signed by a member's pinned key      "member"     the only sender the notice vouches for
    signed by some other key             "outside"    the From line is the sender's word only
    not signed                           "outside"
    encrypted to this list's key         opened first: the admins read the plaintext
    encrypted to some other key          "sealed"     attached as it came (another list's key
                                                      too: its admins may not read that list's mail)

Nothing is refused here: every refusal was made before the 250 (size, rate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.header import Header
from email.message import EmailMessage

from .. import mime, openpgp
from ..errors import CryptoError, Malformed, Refusal, UnknownRecipient
from ..keyring import GpgTimeout, Keyring
from ..model import Member
from .open import MAX_PLAINTEXT, message_packets, open_message, text_entity

# The original headers an admin needs to judge and answer the message; the rest (Received,
# DKIM, the sender's client) stays out of the list's notice.
SHOWN_HEADERS = ("From", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID", "Auto-Submitted")


@dataclass(frozen=True)
class Letter:
    """A message to LIST-owner@, ready to attach: `message` is the whole of it that admins read."""

    message: bytes  # an RFC 5322 message, CRLF
    origin: str  # "member", "outside" or "sealed" (see the module docstring)
    signer: Member | None = None  # the member whose pinned key signed it, for "member"
    encrypted: bool = False  # it came encrypted to the list's key


def check_letter(raw: bytes, admins: Sequence[Member]) -> None:
    """Before the 250: the mail is MIME the admins' clients can read (Malformed), and there is
    an admin to read it (a list with none refuses LIST-owner@ as no address, 550 5.1.1)."""
    if not admins:
        raise UnknownRecipient("no-admin", "This list has no admin yet to receive mail.")
    mime.parse(raw)


def read_letter(raw: bytes, keyring: Keyring, list_key: str, members: Mapping[str, Member]) -> Letter:
    """The message as the admins should read it, decrypted when it was encrypted to this list's
    key `list_key` -- and only then: every list's key is in the one keyring, and the admins of
    one list must not be able to read, by sending it to their LIST-owner@, what was encrypted
    to another's."""
    outer = mime.parse(raw)
    try:
        opened = open_message(raw, keyring, list_key=list_key, accepted=True)
    except GpgTimeout:
        raise  # a passing problem: the worker tries again
    except Refusal:
        opened = None
    if opened is not None and opened.encrypted and opened.decrypted_with != list_key:
        return Letter(_shown(outer, _entity(raw)), "sealed")
    if opened is not None:
        member = members.get(opened.signer)
        origin = "member" if member is not None and member.active else "outside"
        return Letter(_shown(outer, opened.content), origin, member if origin == "member" else None,
                      opened.encrypted)
    plaintext = _plaintext(outer, keyring, list_key)
    if plaintext is None:
        sealed = outer.get_content_type() == "multipart/encrypted" or b"-----BEGIN PGP MESSAGE-----" in raw
        return Letter(_shown(outer, _entity(raw)), "sealed" if sealed else "outside")
    return Letter(_shown(outer, plaintext), "outside", encrypted=True)


def _plaintext(outer: EmailMessage, keyring: Keyring, list_key: str) -> bytes | None:
    """The content of a message encrypted to the list's key but signed by no member (open_message
    took it for no post): PGP/MIME, or one armored message as a text body (`gpg -ea` pasted into
    a mail). None when it was not encrypted, or not to this list's key."""
    if outer.get_content_type() == "multipart/encrypted":
        parts = outer.get_payload()
        if not isinstance(parts, list) or len(parts) != 2:
            return None
        armored, inline = parts[1].get_payload(decode=True) or b"", False
    elif outer.get_content_type() == "text/plain" and not outer.is_multipart():
        armored, inline = (outer.get_payload(decode=True) or b"").strip(), True
        if not armored.startswith(b"-----BEGIN PGP MESSAGE-----"):
            return None
    else:
        return None
    try:
        data = openpgp.only_to(message_packets(armored, "encrypted"), keyring.encryption_ids(list_key))
        decrypted = keyring.decrypt(data, max_output=MAX_PLAINTEXT, allow_expired=True)
    except GpgTimeout:
        raise
    except (CryptoError, Refusal, ValueError):
        return None
    if not decrypted.encrypted or decrypted.decrypted_with != list_key:
        return None
    if inline:
        return mime.crlf(text_entity(decrypted.content, outer.get_content_charset()))
    content = mime.crlf(decrypted.content)
    try:
        mime.parse(content)
    except Malformed:
        return None
    return content


def _entity(raw: bytes) -> bytes:
    """The message's own MIME entity: its Content-* header fields and its body, as they came."""
    head, _, body = raw.partition(b"\r\n\r\n")
    kept, keep = [], False
    for line in head.split(b"\r\n"):
        if line[:1] not in (b" ", b"\t"):  # not a continuation: a new field starts
            keep = line.lower().startswith(b"content-")
        if keep:
            kept.append(line + b"\r\n")
    return b"".join(kept) + b"\r\n" + body


def _shown(outer: EmailMessage, content: bytes) -> bytes:
    """`content` (a MIME entity) under the original's own headers; a Subject or From the
    signed content carries (protected headers) wins over the outer one."""
    inner = mime.parse(content)
    head = []
    for name in SHOWN_HEADERS:
        value = mime.header(inner, name) if name in ("Subject", "From") else None
        value = value or mime.header(outer, name)
        if value:
            head.append(_field(name, value))
    return b"".join(head) + content


def _field(name: str, value: str) -> bytes:
    """One header field, unfolded; RFC 2047-encoded when it is not ASCII."""
    text = " ".join(value.split())
    if not text.isascii():
        text = Header(text, "utf-8", maxlinelen=998).encode()
    return f"{name}: {text}\r\n".encode("ascii")
