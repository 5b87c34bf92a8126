"""Digests: the backlog (sealed to the list's key), the schedule, rendering and sending.

    data/digest/LIST/TIME-QID.pgp   one post waiting for the next digest, sealed to the list
    data/digest.lock                 held while a digest is built: two processes never send one twice

A digest is built in four steps, each safe to repeat after a crash:
  1. in one store transaction: note the issue about to go out and the backlog items it takes
     (a restart finishes that issue with exactly those items, not with posts that came later);
  2. render and fan out the digest as a job with a queue id fixed by (list, volume, issue):
     if the job exists already, this step is skipped;
  3. in one store transaction: record the issue as sent, with the backlog items it consumed;
  4. delete those items (a restart deletes any that step 4 left behind).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from pathlib import Path
from typing import Iterator

from .errors import CryptoError
from .legacy_display import shown_text
from .model import MailingList, Member
from .outbound import fan_out, render_footer
from .services import Services
from .schedule import parse_schedule
from .spool import Outgoing, OutJob, make_directories
from .stages.authorize import option
from .stages.compose import compose, new_message_id
from .store import write_atomically
from .templates import Templates

STATE = "digest:{}"
log = logging.getLogger("listserv.digest")


@dataclass(frozen=True)
class DigestItem:
    """One post as it waits for the digest: who, when, what, and the list's composed message."""

    pseudonym: str
    subject: str
    sent_at: float
    kind: str  # "post" or "alert"
    message: bytes  # the list's protected inner message (content parts + footer)


@dataclass(frozen=True)
class DigestState:
    volume: int
    issue: int  # the last issue sent in this volume (0: none yet)
    last_sent: float
    consumed: tuple[str, ...]  # backlog items the last issue took


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
    def __init__(self, services: Services, templates: Templates, root: Path):
        self.services = services
        self.templates = templates
        self.root = root  # data/digest
        self.lock_path = root.parent / "digest.lock"

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
        }).encode("utf-8", "surrogateescape")
        sealed = self.services.keyring.seal(mailing_list.fingerprint, payload)
        write_atomically(folder / f"{time.time_ns():020d}-{qid}.pgp", sealed)

    def backlog(self, address: str) -> list[Path]:
        folder = self.folder(address)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix == ".pgp" and not p.name.startswith("."))

    def _read(self, path: Path) -> DigestItem:
        raw = json.loads(self.services.keyring.unseal(path.read_bytes()).decode("utf-8", "surrogateescape"))
        return DigestItem(raw["pseudonym"], raw["subject"], raw["sent_at"], raw["kind"],
                          raw["message"].encode("utf-8", "surrogateescape"))

    # -- state and schedule ------------------------------------------------------------
    def state(self, mailing_list: MailingList) -> DigestState:
        raw = self.services.store.read().get_value(STATE.format(mailing_list.address))
        if not raw:
            created = _timestamp(mailing_list.created) or time.time()
            return DigestState(1, 0, created, ())
        return DigestState(raw["volume"], raw["issue"], raw["last_sent"], tuple(raw["consumed"]))

    def next_due(self, mailing_list: MailingList, state: DigestState) -> datetime:
        """The first time the schedule fires after the last digest and after the oldest
        waiting post arrived: a post never waits for a firing that came before it, and
        firings missed while the server was down produce one digest, not several."""
        schedule = parse_schedule(option(mailing_list, "digest_schedule"))
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
        return [ml.address for ml in self.services.store.read().lists()
                if _folder_name(ml.address) in waiting]

    def send_if_due(self, address: str) -> OutJob | None:
        mailing_list = self.services.store.read().get_list(address)
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
        """Send the pending digest of a list now; None when nothing is pending."""
        now = now or datetime.now(timezone.utc)
        with self._locked():
            snapshot = self.services.store.read()
            mailing_list = snapshot.require_list(address)
            state = self.state(mailing_list)
            for leftover in state.consumed:  # step 4 of a digest that a crash interrupted
                (self.folder(address) / leftover).unlink(missing_ok=True)
            noted = self._noted(mailing_list)
            if noted:  # a crash came after step 1: finish that issue with its own posts
                volume, issue, names = noted
                items = [self.folder(address) / name for name in names]
                items = [path for path in items if path.exists()]
            else:
                items = self.backlog(address)
                volume = now.year - _year(mailing_list) + 1
                issue = state.issue + 1 if volume == state.volume else 1
            if not items:
                self._record(mailing_list, state, now, (), advance=False)
                return None
            if not noted:
                self._note(mailing_list, volume, issue, tuple(p.name for p in items))
            readers = [m for m in snapshot.members(address) if m.mode == "digest" and m.active]
            job = self._build(mailing_list, readers, volume, issue, self._readable(items), now)
            self._record(mailing_list, DigestState(volume, issue, state.last_sent, ()), now,
                         tuple(p.name for p in items), advance=True)
            for path in items:
                path.unlink(missing_ok=True)
            return job

    def _readable(self, items: list[Path]) -> list[DigestItem]:
        """The waiting posts; one that cannot be unsealed is set aside (NAME.bad) and logged,
        so it never blocks the list's digests."""
        posts = []
        for path in items:
            try:
                posts.append(self._read(path))
            except (CryptoError, OSError, ValueError, KeyError) as exc:
                log.error("unreadable digest item=%s reason=%s", path.name, type(exc).__name__)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
        return posts

    def _noted(self, mailing_list: MailingList) -> tuple[int, int, tuple[str, ...]] | None:
        raw = self.services.store.read().get_value(STATE.format(mailing_list.address)) or {}
        noted = raw.get("sending")
        return (noted["volume"], noted["issue"], tuple(noted["items"])) if noted else None

    def _note(self, mailing_list: MailingList, volume: int, issue: int, items: tuple[str, ...]) -> None:
        key = STATE.format(mailing_list.address)
        with self.services.store.transaction() as tx:
            value = dict(tx.get_value(key) or {})
            if not value:  # no digest yet: what state() assumes, written down
                state = self.state(mailing_list)
                value = {"volume": state.volume, "issue": state.issue, "last_sent": state.last_sent,
                         "consumed": []}
            value["sending"] = {"volume": volume, "issue": issue, "items": list(items)}
            tx.set_value(key, value)

    def _record(self, mailing_list: MailingList, state: DigestState, now: datetime,
                consumed: tuple[str, ...], advance: bool) -> None:
        value = {"volume": state.volume, "issue": state.issue, "last_sent": now.timestamp(),
                 "consumed": list(consumed)}
        with self.services.store.transaction() as tx:
            tx.set_value(STATE.format(mailing_list.address), value)

    def _build(self, mailing_list: MailingList, readers: list[Member], volume: int, issue: int,
               items: list[DigestItem], now: datetime) -> OutJob | None:
        qid = hashlib.sha256(f"{mailing_list.address}/{volume}/{issue}".encode()).hexdigest()[:12]
        outgoing = Outgoing(self.services.spool)
        if outgoing.exists(qid) or not readers or not items:
            return None
        content = render_digest(self.templates, mailing_list, volume, issue, items, now)
        composed = compose(
            content, in_reply_to=None, references=None, sender=None,
            mailing_list=mailing_list, kind="digest", footer=render_footer(self.templates, mailing_list),
            now=now, message_id=new_message_id(mailing_list),
        )
        job, _ = fan_out(self.services, outgoing, qid, mailing_list, "digest", composed, readers)
        return job


def _timestamp(iso: str) -> float | None:
    try:
        return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
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
                  items: list[DigestItem], now: datetime) -> bytes:
    """The digest's content: a table of contents and every post, as text and HTML, with the
    posts' attachments as MIME parts. compose() turns it into the list's message."""
    entries, carried = [], []
    for number, item in enumerate(items, start=1):
        text, attachments = _split(item.message)
        names = tuple(a.get_filename() or a.get_content_type() for a in attachments)
        entries.append(_Entry(number, item.pseudonym,
                              datetime.fromtimestamp(item.sent_at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                              item.subject, item.kind == "alert", text, names))
        carried.extend(attachments)
    values = dict(list=mailing_list, volume=volume, issue=issue, entries=entries,
                  date=now.strftime("%Y-%m-%d"))
    digest = EmailMessage(policy=policy.SMTP)
    digest["Subject"] = templates.render("digest-subject.txt.j2", **values).strip()
    digest.set_content(templates.render("digest.txt.j2", **values), charset="utf-8")
    digest.add_alternative(templates.render("digest.html.j2", **values), subtype="html", charset="utf-8")
    if carried:
        digest.make_mixed()
        for attachment in carried:
            digest.attach(attachment)
    return digest.as_bytes(policy=policy.SMTP)
