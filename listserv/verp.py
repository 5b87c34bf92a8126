"""VERP tokens: the return path LOCAL-bounces+TOKEN@DOMAIN of a copy maps back to its member.

A token is a keyed hash of (list, member address): it names the member to this server only,
and says nothing about the address to anyone without the deployment's secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

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
