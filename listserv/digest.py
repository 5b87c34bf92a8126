"""Digests: the backlog (sealed to the list's key), the schedule, rendering and sending.

    data/digest/LIST/TIME-QID.pgp   one post waiting for the next digest, sealed to the list
    data/digest.lock                 held while a digest is built: two processes never send one twice

A digest is built in three steps, each safe to repeat after a crash:
  1. in one store transaction: note the issue about to go out, split into parts that each
     fit under the relay's limit, and the backlog items each part takes (a restart finishes
     that issue with exactly those parts, not with posts that came later);
  2. render and fan out each part as a job with a queue id fixed by (list, volume, issue,
     part), naming its items: if the job exists already, this step is skipped;
  3. in one store transaction: record the issue number as used.
Items stay in the backlog folder while a job carries them ("in flight": not offered to the
next digest). Only when a part's delivery is over does `settle` decide: a part that reached
anyone deletes its items; one whose every copy failed leaves them waiting for the next
digest -- it was not sent -- unless it carried one post alone and was refused as too large
(splitting cannot help that post), which is set aside as NAME.undeliverable, still sealed.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from pathlib import Path
from typing import Iterator

from . import relaylimit, sizing
from .deliver import Outcome, too_large
from .durable import make_directories, write_atomically
from .errors import CryptoError
from .keyring import Keyring
from .outbox import Outbox
from .legacy_display import shown_text
from .model import Kind, MailingList, Member, parse_iso
from .schedule import parse_schedule
from .spool import Outgoing, OutJob
from .stages.compose import Composed, Post, compose, wrapping
from .stages.fanout import fan_out
from .store import Store
from .templates import Templates

STATE = "digest:{}"
log = logging.getLogger("listserv.digest")


@dataclass(frozen=True)
class DigestItem:
    """One post as it waits for the digest: who, when, what, and the list's composed message."""

    pseudonym: str
    subject: str
    sent_at: float
    kind: Kind  # POST or ALERT
    message: bytes  # the list's protected inner message (content parts + footer)
    signer: str = ""  # the poster's fingerprint: told if the post can reach no digest reader

    @classmethod
    def of(cls, sender: Member, composed: Composed, kind: Kind) -> DigestItem:
        return cls(sender.name, composed.subject, time.time(), kind, composed.inner, sender.fingerprint)


@dataclass(frozen=True)
class Part:
    """One message of a digest issue: the backlog items it carries, and whether it has the
    HTML alternative (a part with one post too large for that goes as plain text only)."""

    items: tuple[str, ...]
    html: bool = True


@dataclass(frozen=True)
class Settled:
    """What became of a digest part's posts when its delivery ended."""

    posts: int
    delivered: bool  # some reader got it: its posts are gone from the backlog
    set_aside: tuple[DigestItem, ...] = ()  # refused as too large, alone: kept as .undeliverable


@dataclass(frozen=True)
class Sending:
    """An issue noted as about to go out (step 1): a restart finishes it with these parts."""

    volume: int
    issue: int
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class DigestState:
    """A list's digest numbering, as kept in the store under STATE."""

    volume: int
    issue: int  # the last issue sent in this volume (0: none yet)
    last_sent: float
    consumed: tuple[str, ...] = ()  # backlog items the last issue took (written by listserv < 0.9)
    sending: Sending | None = None

    @classmethod
    def of(cls, raw: dict) -> DigestState:
        noted, sending = raw.get("sending"), None
        if noted and "parts" in noted:
            sending = Sending(noted["volume"], noted["issue"],
                              tuple(Part(tuple(part["items"]), part["html"]) for part in noted["parts"]))
        elif noted:  # noted by a listserv that sent a digest as one message
            sending = Sending(noted["volume"], noted["issue"], (Part(tuple(noted["items"])),))
        return cls(raw["volume"], raw["issue"], raw["last_sent"], tuple(raw.get("consumed", ())), sending)

    def as_dict(self) -> dict:
        value: dict = {"volume": self.volume, "issue": self.issue, "last_sent": self.last_sent,
                       "consumed": list(self.consumed)}
        if self.sending is not None:
            value["sending"] = {"volume": self.sending.volume, "issue": self.sending.issue,
                                "parts": [{"items": list(p.items), "html": p.html} for p in self.sending.parts]}
        return value


@dataclass(frozen=True)
class Outlook:
    pending: int
    next_due: datetime
    last_sent: datetime | None
    volume: int
    issue: int


def _folder_name(address: str) -> str:
    return address.replace("/", "_")


class Digests:
    """The digest backlog and sending, for one home: what it reads and writes is given here."""

    def __init__(self, store: Store, keyring: Keyring, outbox: Outbox, templates: Templates, root: Path):
        self.store = store
        self.keyring = keyring
        self.outbox = outbox
        self.templates = templates
        self.root = root  # data/digest
        self.lock_path = root.parent / "digest.lock"

    @property
    def outgoing(self) -> Outgoing:
        return self.outbox.outgoing

    # -- backlog -------------------------------------------------------------------------
    def folder(self, address: str) -> Path:
        return self.root / _folder_name(address)

    def add(self, mailing_list: MailingList, qid: str, item: DigestItem) -> None:
        """Keep a post for the next digest. A post is kept once: adding its queue id again
        (a restart repeating an interrupted hand-over) does nothing, also when the item has
        gone out already with the last digest."""
        folder = self.folder(mailing_list.address)
        mine = f"-{qid}.pgp"
        if any(folder.glob(f"*{mine}")) or any(name.endswith(mine) for name in self.state(mailing_list).consumed):
            return
        make_directories(folder)
        payload = json.dumps({
            "pseudonym": item.pseudonym, "subject": item.subject, "sent_at": item.sent_at,
            "kind": item.kind, "message": item.message.decode("utf-8", "surrogateescape"),
            "signer": item.signer,
        }).encode("utf-8", "surrogateescape")
        sealed = self.keyring.seal(mailing_list.fingerprint, payload)
        write_atomically(folder / f"{time.time_ns():020d}-{qid}.pgp", sealed)

    def backlog(self, address: str) -> list[Path]:
        """The posts waiting for the next digest: those no digest job carries right now."""
        folder = self.folder(address)
        if not folder.is_dir():
            return []
        carried = self.in_flight(address)
        return sorted(p for p in folder.iterdir()
                      if p.suffix == ".pgp" and not p.name.startswith(".") and p.name not in carried)

    def in_flight(self, address: str) -> set[str]:
        """Backlog items that a digest job waiting for delivery carries."""
        return {name for job in self.outgoing.jobs()
                if job.kind == Kind.DIGEST and job.list == address for name in job.items}

    def _read(self, path: Path) -> DigestItem:
        raw = json.loads(self.keyring.unseal(path.read_bytes()).decode("utf-8", "surrogateescape"))
        return DigestItem(raw["pseudonym"], raw["subject"], raw["sent_at"], Kind(raw["kind"]),
                          raw["message"].encode("utf-8", "surrogateescape"), raw.get("signer", ""))

    # -- state and schedule ------------------------------------------------------------
    def state(self, mailing_list: MailingList) -> DigestState:
        raw = self.store.read().get_value(STATE.format(mailing_list.address))
        if not raw:
            created = _timestamp(mailing_list.created) or time.time()
            return DigestState(1, 0, created)
        return DigestState.of(raw)

    def next_due(self, mailing_list: MailingList, state: DigestState) -> datetime:
        """The first time the schedule fires after the last digest and after the oldest
        waiting post arrived: a post never waits for a firing that came before it, and
        firings missed while the server was down produce one digest, not several."""
        schedule = parse_schedule(mailing_list.option("digest_schedule"))
        base = state.last_sent
        waiting = self.backlog(mailing_list.address)
        if waiting:
            base = max(base, int(waiting[0].name.split("-", 1)[0]) / 1e9)
        return schedule.next_after(datetime.fromtimestamp(base, timezone.utc))

    def outlook(self, mailing_list: MailingList) -> Outlook:
        state = self.state(mailing_list)
        consumed = set(state.consumed)
        pending = [p for p in self.backlog(mailing_list.address) if p.name not in consumed]
        last = datetime.fromtimestamp(state.last_sent, timezone.utc) if state.issue else None
        return Outlook(len(pending), self.next_due(mailing_list, state), last, state.volume, state.issue)

    def due(self, mailing_list: MailingList, now: datetime) -> bool:
        """Due when the schedule fired since the last digest; missed times count once."""
        return self.next_due(mailing_list, self.state(mailing_list)) <= now

    def lists_with_backlog(self) -> list[str]:
        """Lists whose backlog holds posts (a cheap look at folders, no store read)."""
        if not self.root.is_dir():
            return []
        waiting = {folder.name for folder in self.root.iterdir() if any(folder.glob("*.pgp"))}
        if not waiting:
            return []
        return [ml.address for ml in self.store.read().lists()
                if _folder_name(ml.address) in waiting]

    def send_if_due(self, address: str) -> OutJob | None:
        mailing_list = self.store.read().get_list(address)
        if mailing_list is None or not self.due(mailing_list, datetime.now(timezone.utc)):
            return None
        return self.send(address)

    # -- sending -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def send(self, address: str, now: datetime | None = None) -> OutJob | None:
        """Send the pending digest of a list now: the job of its first part (others follow
        it in the spool), or None when nothing is pending."""
        now = now or datetime.now(timezone.utc)
        with self._locked():
            snapshot = self.store.read()
            mailing_list = snapshot.require_list(address)
            state = self.state(mailing_list)
            for leftover in state.consumed:  # written by an older listserv's step 4
                (self.folder(address) / leftover).unlink(missing_ok=True)
            readers = [m for m in snapshot.members(address) if m.mode == "digest" and m.reachable and not m.paused]
            noted = state.sending
            posts: dict[str, DigestItem] = {}
            if noted:  # a crash came after step 1: finish that issue with its own parts
                volume, issue, parts = noted.volume, noted.issue, list(noted.parts)
            else:
                items = self.backlog(address)
                volume = now.year - _year(mailing_list) + 1
                issue = state.issue + 1 if volume == state.volume else 1
                if not items:
                    self._record(mailing_list, state, now)
                    return None
                if not readers:  # nobody takes digests: the posts are cleared, as promised
                    for path in items:
                        path.unlink(missing_ok=True)
                    self._record(mailing_list, DigestState(volume, issue, state.last_sent), now)
                    return None
                posts = dict(self._readable(items))
                limit = sizing.copy_limit(relaylimit.load(self.outgoing.spool.relay_file).size)
                parts = self._split(mailing_list, volume, issue, list(posts.items()), now, limit)
                self._note(mailing_list, volume, issue, parts)
            first: OutJob | None = None
            number = 1
            for index, part in enumerate(parts, start=1):
                missing = [self.folder(address) / name for name in part.items if name not in posts]
                posts.update(self._readable([path for path in missing if path.exists()]))
                carried = [(name, posts[name]) for name in part.items if name in posts]
                job = self._build(mailing_list, readers, volume, issue, index, len(parts), part.html,
                                  carried, number, now)
                number += len(part.items)
                first = first or job
            self._record(mailing_list, DigestState(volume, issue, state.last_sent), now)
            return first

    # -- splitting into parts ------------------------------------------------------------
    def _split(self, mailing_list: MailingList, volume: int, issue: int,
               posts: list[tuple[str, DigestItem]], now: datetime, limit: int | None) -> list[Part]:
        """Parts in the order of the posts, each as large as fits under `limit` (the most a
        copy may have). A post too large for a part of its own goes alone and as plain text;
        if even that does not fit it still goes (the bound takes no credit for gpg's
        compression, which mostly saves a quarter) and `settle` sets it aside if refused."""
        every = tuple(name for name, _ in posts)
        if limit is None or not posts:
            return [Part(every)]
        size = functools.partial(_digest_size, self.templates, mailing_list, now, (volume, issue))
        raw = sum(len(item.message) for _, item in posts)
        base = size([], 1)
        if sizing.fits(base[0] + sizing.DIGEST_GROWTH * raw, base[1], limit) \
                or _bound(size([item for _, item in posts], 1)) <= limit:
            return [Part(every)]
        parts: list[Part] = []
        current: list[tuple[str, DigestItem]] = []
        estimate = 0
        for name, item in posts:
            alone = _bound(size([item], 1))
            if current and estimate + alone - _bound(base) + sizing.DIGEST_SLACK <= limit:
                current.append((name, item))
                estimate += alone - _bound(base)
                continue
            parts.extend(self._close(current, size, limit, 1 + sum(len(p.items) for p in parts)))
            current = []
            if alone <= limit:
                current, estimate = [(name, item)], alone
                continue
            parts.append(Part((name,), html=False))
            plain = _bound(size([item], 1, html=False))
            if plain > limit:
                log.warning("digest list=%s item=%s too-large-alone bound=%d limit=%d",
                            mailing_list.address, name, plain, limit)
        parts.extend(self._close(current, size, limit, 1 + sum(len(p.items) for p in parts)))
        return parts

    @staticmethod
    def _close(group: list[tuple[str, DigestItem]], size, limit: int, first: int) -> list[Part]:
        """`group` as parts that fit: its estimate adds each post's own size, which misses
        what one post does to all (a long line switches the whole text part to base64), so
        each part is measured whole and the longest prefix that fits is taken."""
        parts = []
        while group:
            low, high = 1, len(group)  # group[:low] always goes: one post is a part of its own
            while low < high:
                middle = (low + high + 1) // 2
                if _bound(size([item for _, item in group[:middle]], first)) <= limit:
                    low = middle
                else:
                    high = middle - 1
            parts.append(Part(tuple(name for name, _ in group[:low])))
            first += low
            group = group[low:]
        return parts

    # -- when a part's delivery is over ---------------------------------------------------
    def settle(self, outcome: Outcome) -> Settled | None:
        """A digest part's delivery ended (None for any other job): delivered if any reader got
        it; if none did, its posts go back to the backlog -- unless it carried one post alone
        that the relay refused for its size. Safe to repeat (a crash before the job was
        removed runs it again)."""
        job = outcome.job
        if job.kind != Kind.DIGEST or not (outcome.sent or outcome.failures):
            return None
        refused_for_size = not outcome.sent and all(too_large(f.reason) for f in outcome.failures)
        folder = self.folder(job.list)
        with self._locked():
            if outcome.sent:
                for name in job.items:
                    (folder / name).unlink(missing_ok=True)
                return Settled(len(job.items), True)
            if refused_for_size and len(job.items) == 1:
                path = folder / job.items[0]
                set_aside = tuple(item for _, item in self._readable([path])) if path.exists() else ()
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".undeliverable"))
                log.error("set-aside digest item=%s list=%s reason=too-large", job.items[0], job.list)
                return Settled(1, False, set_aside)
            return Settled(len(job.items), False)  # the job's end puts them back in the backlog

    def _readable(self, items: list[Path]) -> list[tuple[str, DigestItem]]:
        """The waiting posts by name; one that cannot be unsealed is set aside (NAME.bad) and
        logged, so it never blocks the list's digests."""
        posts = []
        for path in items:
            try:
                posts.append((path.name, self._read(path)))
            except (CryptoError, OSError, ValueError, KeyError) as exc:
                log.error("unreadable digest item=%s reason=%s", path.name, type(exc).__name__)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
        return posts

    def _note(self, mailing_list: MailingList, volume: int, issue: int, parts: list[Part]) -> None:
        key = STATE.format(mailing_list.address)
        with self.store.transaction() as tx:
            raw = tx.get_value(key)
            state = DigestState.of(raw) if raw else self.state(mailing_list)  # none yet: what state() assumes
            tx.set_value(key, replace(state, sending=Sending(volume, issue, tuple(parts))).as_dict())

    def _record(self, mailing_list: MailingList, state: DigestState, now: datetime) -> None:
        with self.store.transaction() as tx:
            tx.set_value(STATE.format(mailing_list.address),
                         DigestState(state.volume, state.issue, now.timestamp()).as_dict())

    def _build(self, mailing_list: MailingList, readers: list[Member], volume: int, issue: int,
               part: int, parts: int, html: bool, carried: list[tuple[str, DigestItem]], first: int,
               now: datetime) -> OutJob | None:
        # Part 1 keeps the queue id a digest had when it was always one message.
        name = f"{mailing_list.address}/{volume}/{issue}" + (f"/{part}" if part > 1 else "")
        qid = hashlib.sha256(name.encode()).hexdigest()[:12]
        if self.outgoing.exists(qid) or not readers or not carried:
            return None
        items = [item for _, item in carried]
        composed = _compose_digest(self.templates, mailing_list, now, render_digest(
            self.templates, mailing_list, volume, issue, items, now, part=part, parts=parts,
            html=html, first=first))
        fanned = fan_out(composed, readers, mailing_list, self.keyring, self.outbox.verp_key)
        return self.outbox.write(qid, mailing_list, Kind.DIGEST, fanned, items=tuple(name for name, _ in carried))


def _compose_digest(templates: Templates, mailing_list: MailingList, now: datetime, content: bytes) -> Composed:
    post = Post(content, Kind.DIGEST)
    return compose(post, mailing_list, wrapping(templates, mailing_list, post), now=now)


def _digest_size(templates: Templates, mailing_list: MailingList, now: datetime,
                 numbers: tuple[int, int], items: list[DigestItem], first: int,
                 html: bool = True) -> tuple[int, int]:
    """(inner, envelope) of a digest part holding `items`, numbered as if it were part 999
    of 999: the longest a part's numbers get."""
    composed = _compose_digest(templates, mailing_list, now, render_digest(
        templates, mailing_list, *numbers, items, now, part=999, parts=999, html=html, first=first))
    return len(composed.inner), len(composed.outer_prefix) + len(composed.outer_suffix)


def _bound(sizes: tuple[int, int]) -> int:
    return sizing.copy_bound(*sizes)


def digest_copy_size(templates: Templates, mailing_list: MailingList, items: list[DigestItem],
                     now: datetime, numbers: tuple[int, int], html: bool = True) -> int:
    """The most bytes a copy of a digest part holding `items` can have."""
    return _bound(_digest_size(templates, mailing_list, now, numbers, items, 1, html))


def _timestamp(iso: str) -> float | None:
    try:
        return parse_iso(iso).timestamp()
    except (TypeError, ValueError):
        return None


def _year(mailing_list: MailingList) -> int:
    created = _timestamp(mailing_list.created)
    return datetime.fromtimestamp(created, timezone.utc).year if created else datetime.now(timezone.utc).year


# -- rendering -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Entry:
    number: int
    pseudonym: str
    time: str
    subject: str
    alert: bool
    text: str
    attachments: tuple[str, ...]


def _split(message: bytes) -> tuple[str, list[Message]]:
    """The readable text of a post and its other parts (attachments), footer left out."""
    parsed = BytesParser(policy=policy.default).parsebytes(message)
    parts = list(parsed.iter_parts()) if parsed.is_multipart() else [parsed]
    parts = parts[:-1] if len(parts) > 1 else parts  # the last part is the list's footer
    texts, attachments = [], []
    for part in parts:
        for leaf in part.walk():
            if leaf.is_multipart():
                continue
            if leaf.get_content_type() == "text/plain" and not leaf.get_filename():
                # Read as an RFC 9788 client reads it: the entry names sender and Subject already.
                texts.append(shown_text(leaf))
            elif leaf.get_content_type() != "text/html" or leaf.get_filename():
                attachments.append(leaf)
    return "\n".join(t.strip("\n") for t in texts if t.strip()), attachments


def render_digest(templates: Templates, mailing_list: MailingList, volume: int, issue: int,
                  items: list[DigestItem], now: datetime, *, part: int = 1, parts: int = 1,
                  html: bool = True, first: int = 1) -> bytes:
    """The digest's content: a table of contents and every post, as text and (`html`) HTML,
    with the posts' attachments as MIME parts. compose() turns it into the list's message.
    Part `part` of `parts` numbers its posts from `first`, so an issue's numbers run on."""
    entries, carried = [], []
    for number, item in enumerate(items, start=first):
        text, attachments = _split(item.message)
        names = tuple(a.get_filename() or a.get_content_type() for a in attachments)
        entries.append(_Entry(number, item.pseudonym,
                              datetime.fromtimestamp(item.sent_at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                              item.subject, item.kind == Kind.ALERT, text, names))
        carried.extend(attachments)
    values = dict(list=mailing_list, volume=volume, issue=issue, entries=entries,
                  date=now.strftime("%Y-%m-%d"), part=part, parts=parts)
    digest = EmailMessage(policy=policy.SMTP)
    digest["Subject"] = templates.render("digest-subject.txt.j2", **values).strip()
    digest.set_content(templates.render("digest.txt.j2", **values), charset="utf-8")
    if html:
        digest.add_alternative(templates.render("digest.html.j2", **values), subtype="html", charset="utf-8")
    if carried:
        digest.make_mixed()
        for attachment in carried:
            digest.attach(attachment)
    return digest.as_bytes(policy=policy.SMTP)
