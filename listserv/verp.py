"""VERP tokens: the return path LOCAL-bounces+TOKEN@DOMAIN of a copy maps back to its member.

A token is a keyed hash of (list, member address): it names the member to this server only,
and says nothing about the address to anyone without the deployment's secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from email import policy
from email.parser import BytesParser

from .model import Member

SECRET_KEY = "verp_secret"  # its name in the store (Store.secret)


def token(key: bytes, list_address: str, email: str) -> str:
    digest = hmac.new(key, f"{list_address}\0{email}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode().lower()


def member_for(key: bytes, list_address: str, members: Iterable[Member], value: str) -> Member | None:
    for member in members:
        if hmac.compare_digest(token(key, list_address, member.email), value.lower()):
            return member
    return None


_STATUS = re.compile(r"^Status:\s*(5\.\d{1,3}\.\d{1,3})\b", re.IGNORECASE | re.MULTILINE)


def permanent_status(raw: bytes) -> str:
    """The 5.x.x status a delivery report (RFC 3464, message/delivery-status) gives, or "":
    a delay (4.x.x) or a report that is no DSN is counted as a bounce, never taken as a
    mailbox that refuses for good."""
    try:
        message = BytesParser(policy=policy.compat32).parsebytes(raw)
    except Exception:  # a malformed report is only counted  # noqa: BLE001
        return ""
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        # compat32 gives the per-recipient field groups as sub-messages; their text is enough.
        payload = part.get_payload()
        text = "\n".join(str(p) for p in payload) if isinstance(payload, list) else str(payload)
        found = _STATUS.search(text)
        if found:
            return found.group(1)
    return ""
