"""The values passed between modules: lists, members, addresses, kinds of mail, recipient records."""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .options import OPTIONS

if TYPE_CHECKING:
    from .spool import Job, OutJob
    from .stages.fanout import Fanned

ISO = "%Y-%m-%dT%H:%M:%SZ"  # how times are written in the store, on the CLI and in JSON: UTC


def iso(when: datetime | float | None = None) -> str:
    """`when` (a datetime or a Unix time; default now) as ISO, UTC."""
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(time.time() if when is None else when, timezone.utc)
    return when.astimezone(timezone.utc).strftime(ISO)


def parse_iso(text: str) -> datetime:
    """An ISO time as `iso` writes it; ValueError if it is not one."""
    return datetime.strptime(text, ISO).replace(tzinfo=timezone.utc)


class Kind(StrEnum):
    """What a piece of mail is. A StrEnum: on disk and in JSON it is its plain value."""

    POST = "post"  # a member's post to LIST@
    ALERT = "alert"  # an urgent alert to LIST+urgent@: to every member at once, digest readers too
    NOTICE = "notice"  # from the list itself to admins or one member (welcome, failures)
    DIGEST = "digest"  # one part of a digest issue
    BOUNCE = "bounce"  # a delivery report to a VERP address (LIST-bounces+TOKEN@)
    REQUEST = "request"  # signed commands to LIST-request@, answered to the signer
    OWNER = "owner"  # mail from anyone to LIST-owner@, forwarded to the admins re-encrypted
    SENDKEY = "sendkey"  # a request from anyone to LIST-sendkey@: answered with the list's key
    RESEND = "resend"  # a post's copy to one of the list's contacts, from the list (listserv.resend)


# The order the spool and the deliverer take jobs in: alerts jump the queue. A request waits
# its turn with the posts, in arrival order: a member's x-leave never overtakes their own
# post accepted before it (which would then find their key gone).
PRIORITY = {Kind.ALERT: 0, Kind.NOTICE: 1, Kind.OWNER: 1, Kind.POST: 2, Kind.REQUEST: 2, Kind.DIGEST: 3,
            Kind.SENDKEY: 3, Kind.RESEND: 2}

MODES = ("immediate", "digest")
ROLES = ("member", "spokesperson", "admin")  # a spokesperson may also resend posts to contacts (listserv.resend)
# A member's standing. "suspended": a revocation of the pinned key was taken in, so the member
# may not post or send requests and gets no copy of anything until an admin pins a new key
# (`member set --key`, or x-set-member with key=). Stores written before the name changed say
# "key-revoked" (listserv.store reads it as "suspended").
ACTIVE, SUSPENDED = "active", "suspended"
STATES = (ACTIVE, SUSPENDED)
OLD_STATE_NAMES = {"key-revoked": SUSPENDED}
# A change to a new key (listserv.rotation) waits for the code sent to the new key, then for an
# admin; only these two are pending. The others are where a change ends.
AWAITING_CODE, AWAITING_APPROVAL = "awaiting-code", "awaiting-approval"
KEY_CHANGE_PENDING = (AWAITING_CODE, AWAITING_APPROVAL)

# Deliberately strict: a list serves people who can pick an ordinary address.
_LOCAL = r"[A-Za-z0-9!#$%&'*/=?^_`{|}~.-]+"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
_ADDRESS = re.compile(rf"^({_LOCAL}(?:\+{_LOCAL})*)@({_DOMAIN})$")
_LIST_ADDRESS = re.compile(rf"^({_LOCAL})@({_DOMAIN})$")  # no +tag: +urgent is the list's own


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
    if "+" in local or local.endswith(LIST_SUFFIXES):
        raise UsageError(
            f"'{text}' cannot be a list address: '+' and '-bounces' are reserved for "
            "urgent alerts and bounce addresses, and '-owner', '-request' and '-sendkey' for a list's own."
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
    def request_address(self) -> str:
        return f"{self.local}-request@{self.domain}"

    @property
    def owner_address(self) -> str:
        """LIST-owner@: anyone's mail to the list's admins, re-encrypted to each (and unsubscribe requests)."""
        return f"{self.local}-owner@{self.domain}"

    @property
    def sendkey_address(self) -> str:
        return f"{self.local}-sendkey@{self.domain}"

    @property
    def key_user_ids(self) -> tuple[str, ...]:
        """The user ids the list's key carries, the primary one (LIST@) first. A member's client
        (Thunderbird, gpg, sq, rnp) picks the key to encrypt to by the address written to, so
        LIST-request@ and LIST-owner@ need user ids of their own; and each address the list
        writes from needs one for its Autocrypt header (listserv.autocrypt: the key data must
        name the From address), LIST-sendkey@ too."""
        return tuple(f"{self.name} <{address}>" for address in
                     (self.address, self.request_address, self.owner_address, self.sendkey_address))

    @property
    def list_id(self) -> str:
        """The RFC 2919 list identifier, `local.domain`: what a List-Id header names in <>."""
        return f"{self.local}.{self.domain}"

    def option(self, name: str) -> Any:
        """This list's value of the option `name`, or the default (listserv.options)."""
        return self.options.get(name, OPTIONS[name].default)

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
    paused: bool = False  # gets no posts or digests for now (x-pause); urgent alerts still
    previous_fingerprints: tuple[str, ...] = ()  # keys pinned before, oldest first (x-key-change)
    # Their mailbox refused a copy for good (5.x.x): nothing at all goes to it -- posts,
    # digests, alerts, notices -- until they send x-resume signed by their key or an admin
    # resumes them. Unlike `paused`: a seized mailbox must not keep getting the alerts.
    bounce_paused: bool = False
    probation: bool = False  # a newcomer: gets everything, but their posts and alerts wait for an admin

    def __post_init__(self) -> None:
        # The store and JSON give a list; a Member is frozen and hashable, so keep a tuple.
        object.__setattr__(self, "previous_fingerprints", tuple(self.previous_fingerprints))

    @property
    def active(self) -> bool:
        """May post, and gets posts, alerts, digests and notices."""
        return self.state == ACTIVE

    @property
    def reachable(self) -> bool:
        """In good standing and not paused for a bounce: mail from the list may go to them."""
        return self.active and not self.bounce_paused

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PendingKey:
    """A key not pinned yet that may send one command: a member's new key waiting for its code
    (listserv.rotation), or an invitee's key waiting for its challenge (listserv.invites), may
    send x-confirm, until `expires` (Unix seconds); a stranger's key carried by a request to
    join, x-join (listserv.stages.join)."""

    fingerprint: str
    member: Member
    expires: float
    command: str = "confirm"  # the one command it may send: x-confirm, or x-join (listserv.invites)


@dataclass(frozen=True)
class Roster:
    """A list and its members, as one read of the store saw them."""

    mailing_list: MailingList
    members: tuple[Member, ...]
    pending_keys: tuple[PendingKey, ...] = ()

    @cached_property
    def by_fingerprint(self) -> dict[str, Member]:
        return {m.fingerprint: m for m in self.members}

    @cached_property
    def confirming(self) -> dict[str, PendingKey]:
        """The new keys awaiting their code, by fingerprint."""
        return {p.fingerprint: p for p in self.pending_keys}

    @property
    def admins(self) -> tuple[Member, ...]:
        """Who hears of the list's troubles: its admins in good standing (never a revoked key),
        whose mailbox has not refused mail for good (a seized mailbox hears nothing)."""
        return tuple(m for m in self.members if m.role == "admin" and m.reachable)


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
    # Control and format characters and line or paragraph separators (U+2028...) could forge
    # lines in the notices admins read: a member's key's user id may become their pseudonym.
    unsafe = any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in cleaned)
    if not cleaned or len(cleaned) > 64 or unsafe or any(ch in cleaned for ch in "\r\n<>\"@,;"):
        raise UsageError(
            "A pseudonym must be 1-64 characters with no line breaks and none of < > \" @ , ;."
        )
    return cleaned


@dataclass(frozen=True)
class Recipient:
    """One member's record in a delivery job: where their copy goes and the PKESK that makes it theirs."""

    email: str
    token: str  # VERP token of the envelope sender
    pkesk: bytes  # the member's PKESK packet, exact bytes
    batch: int  # which shared packet of the job it unlocks; PLAIN: none, the copy is sent as it is
    fingerprint: str = ""  # the member's pinned key: logs and notices name members by it


PLAIN = -1  # Recipient.batch of a signed-only copy (listserv.outbox.Outbox.write_plain)


@dataclass(frozen=True)
class Rejection:
    """A refused submission as admins see it (`listserv rejections`); the sender saw only the reply."""

    list: str
    at: float
    kind: str
    reason: str  # the code the log gives too (not-a-member, stale-signature...)
    reply: str  # "550 5.7.1": what the sender heard, without the sentence
    signer: str | None  # the signing key's fingerprint, when the signature could be read
    ref: str  # the reference the log line and the reply's client both quote

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Accepted:
    """What listserv.pipeline.receive stored before its 250: the job, and who signed it."""

    job: Job
    signer: str


@dataclass(frozen=True)
class Distributed:
    """What listserv.pipeline.distribute made of a submission."""

    job: OutJob | None  # None when no member gets an immediate copy
    notices: tuple[OutJob, ...] = ()  # to admins (e.g. members whose keys became unusable)
    fanned: Fanned | None = None  # None: the fan-out was done before a restart

    @property
    def copies(self) -> int:
        return self.fanned.copies if self.fanned else 0

    @property
    def unusable(self) -> tuple[str, ...]:  # fingerprints of members who got no copy
        return self.fanned.unusable if self.fanned else ()

