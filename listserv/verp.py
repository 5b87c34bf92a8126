"""VERP tokens: the return path LOCAL-bounces+TOKEN@DOMAIN of a copy maps back to its member.

A token is a keyed hash of (list, member address): it names the member to this server only,
and says nothing about the address to anyone without the deployment's secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from .model import Member
from .store import Store

SECRET_KEY = "verp_secret"


def secret(store: Store) -> bytes:
    value = store.read().get_value(SECRET_KEY)
    if value is None:
        with store.transaction() as tx:
            value = tx.get_value(SECRET_KEY)
            if value is None:
                value = secrets.token_hex(32)
                tx.set_value(SECRET_KEY, value)
    return bytes.fromhex(value)


def token(key: bytes, list_address: str, email: str) -> str:
    digest = hmac.new(key, f"{list_address}\0{email}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode().lower()


def member_for(key: bytes, list_address: str, members: Iterable[Member], value: str) -> Member | None:
    for member in members:
        if hmac.compare_digest(token(key, list_address, member.email), value.lower()):
            return member
    return None
