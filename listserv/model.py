"""The values passed between modules: lists, members and addresses."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import UsageError

MODES = ("immediate", "digest")
ROLES = ("member", "admin")
# A member's standing. "key-revoked": a revocation of the pinned key was taken in, so the member
# may not post and gets no copy of anything until an admin pins a new key (`member set --key`).
ACTIVE, KEY_REVOKED = "active", "key-revoked"
STATES = (ACTIVE, KEY_REVOKED)

# Deliberately strict: a list serves people who can pick an ordinary address.
_LOCAL = r"[A-Za-z0-9!#$%&'*/=?^_`{|}~.-]+"
_LOCAL_NO_PLUS = r"[A-Za-z0-9!#$%&'*/=?^_`{|}~.-]+"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
_ADDRESS = re.compile(rf"^({_LOCAL}(?:\+{_LOCAL})*)@({_DOMAIN})$")
_LIST_ADDRESS = re.compile(rf"^({_LOCAL_NO_PLUS})@({_DOMAIN})$")


def shown(text: str) -> str:
    """`text` safe to print on an admin's terminal: control characters (C0, C1, DEL), line and
    paragraph separators and bidirectional overrides written as escapes. A key's user id is
    whatever its maker typed, terminal escape sequences included."""
    return "".join(
        ch if ch.isprintable() and not unicodedata.category(ch).startswith(("C", "Z")) or ch == " "
        else ch.encode("unicode_escape").decode("ascii") if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}"
        for ch in text
    )


def normalise_address(text: str, what: str = "address") -> str:
    address = text.strip()
    if len(address) > 254 or not _ADDRESS.match(address) or ".." in address or address.startswith("."):
        raise UsageError(f"'{text}' is not a valid email {what}.")
    local, domain = address.rsplit("@", 1)
    return f"{local}@{domain.lower()}".lower()


def normalise_list_address(text: str) -> str:
    address = normalise_address(text, "list address")
    local = address.split("@", 1)[0]
    if "+" in local or local.endswith("-bounces"):
        raise UsageError(
            f"'{text}' cannot be a list address: '+' and '-bounces' are reserved for "
            "urgent alerts and bounce addresses."
        )
    return address


# The addresses a list answers besides LOCAL@DOMAIN itself: LOCAL+anything (+urgent, and any
# other tag a relay with recipient_delimiter "+" hands to LOCAL) and these LOCAL-SUFFIX ones
# (-bounces+TOKEN for VERP). An address the list gains later joins this tuple, so that no
# member can be given it.
LIST_SUFFIXES = ("-bounces", "-owner", "-request", "-sendkey")


def list_of_address(address: str, list_addresses: list[str]) -> str | None:
    """The list (of `list_addresses`) that `address` is one of the addresses of, or None. A
    member with such an address would get their copies back at the list, as a post or a
    bounce, on every post."""
    local, _, domain = address.lower().rpartition("@")
    base = local.split("+", 1)[0]
    for list_address in list_addresses:
        list_local, _, list_domain = list_address.rpartition("@")
        if domain == list_domain and (
                base == list_local or (base.startswith(list_local) and base[len(list_local):] in LIST_SUFFIXES)):
            return list_address
    return None


# An OpenPGP user id is "Name (comment) <address>" by convention, not an RFC 5322 address:
# "Doe, John <john@example.org>" is a common one that email.utils.parseaddr gets wrong.
_USER_ID = re.compile(r"^\s*(?P<name>[^<>()]*?)\s*(?:\([^()]*\)\s*)?<(?P<address>[^<>]*)>\s*$")


def split_user_id(uid: str) -> tuple[str, str]:
    """'Alice (work) <alice@example.org>' -> ('Alice', 'alice@example.org'); a bare address too."""
    match = _USER_ID.match(uid)
    if match:
        return match.group("name"), match.group("address").strip()
    return "", uid.strip()


def fingerprint_format(fingerprint: str) -> str:
    return " ".join(fingerprint[i:i + 4] for i in range(0, len(fingerprint), 4))


@dataclass(frozen=True)
class MailingList:
    address: str
    name: str
    fingerprint: str
    options: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    @property
    def local(self) -> str:
        return self.address.split("@", 1)[0]

    @property
    def domain(self) -> str:
        return self.address.split("@", 1)[1]

    @property
    def urgent_address(self) -> str:
        return f"{self.local}+urgent@{self.domain}"

    @property
    def list_id(self) -> str:
        """The RFC 2919 list identifier, `local.domain`: what a List-Id header names in <>."""
        return f"{self.local}.{self.domain}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Member:
    list: str
    email: str
    fingerprint: str
    name: str
    mode: str = "immediate"
    role: str = "member"
    key_expires: str | None = None
    added: str = ""
    bounces: int = 0
    state: str = ACTIVE  # one of STATES

    @property
    def active(self) -> bool:
        """May post, and gets posts, alerts, digests and notices."""
        return self.state == ACTIVE

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UsageError(f"'{mode}' is not a delivery mode; use one of: {', '.join(MODES)}.")
    return mode


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UsageError(f"'{role}' is not a role; use one of: {', '.join(ROLES)}.")
    return role


def check_pseudonym(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > 64 or any(ch in cleaned for ch in "\r\n<>\"@,;"):
        raise UsageError(
            "A pseudonym must be 1-64 characters with no line breaks and none of < > \" @ , ;."
        )
    return cleaned
