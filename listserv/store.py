"""State (lists, members, seen signatures, rejections) in TinyDB, written crash-safely.

TinyDB's own JSONStorage rewrites its file in place, so a crash mid-write leaves a corrupt
database. Here every transaction:

  1. takes an exclusive lock (flock on data/listserv.lock) so the CLI and a running server can
     both write;
  2. reads the database once into memory;
  3. on success writes a temporary file, fsyncs it, renames it over the old file and fsyncs the
     directory; on an exception writes nothing (all or nothing).

Readers never see a half-written file: a rename is atomic. tinydb is imported only here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import threading
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

from tinydb import Query, TinyDB
from tinydb.storages import Storage

from .durable import write_atomically
from .errors import Conflict, NotFound, StoreError
from .model import AWAITING_CODE, KEY_CHANGE_PENDING, OLD_STATE_NAMES, MailingList, Member, PendingKey, Rejection, Roster

_EMPTY: dict[str, Any] = {}


class _MemoryStorage(Storage):
    """Holds one transaction's snapshot; TinyDB reads and writes it in memory."""

    def __init__(self, data: dict[str, Any], writable: bool = True):
        self.data = data
        self.dirty = False
        self.writable = writable

    def read(self) -> dict[str, Any] | None:
        return self.data

    def write(self, data: dict[str, Any]) -> None:
        if not self.writable:  # a read snapshot is shared between readers: never change it
            raise StoreError("Internal error: a read-only snapshot of the database was written.")
        self.data = data
        self.dirty = True


RATE_MEMORY = 24 * 3600  # seconds a rate record is kept: the longest window counted
_MEMBER_FIELDS = frozenset(f.name for f in fields(Member))
_LIST_FIELDS = frozenset(f.name for f in fields(MailingList))


def _member(doc: dict[str, Any]) -> Member:
    member = Member(**{k: v for k, v in doc.items() if k in _MEMBER_FIELDS})
    if member.state in OLD_STATE_NAMES:
        return replace(member, state=OLD_STATE_NAMES[member.state])
    return member


def _mailing_list(doc: dict[str, Any]) -> MailingList:
    return MailingList(**{k: v for k, v in doc.items() if k in _LIST_FIELDS})


class Transaction:
    """The operations of one locked transaction. Obtain it from `Store.transaction()`."""

    def __init__(self, db: TinyDB, memo: dict[str, list[Member]] | None = None):
        self._db = db
        self._lists = db.table("lists")
        self._members = db.table("members")
        self._memo = memo  # members per list, shared by read snapshots of one file version

    def _raw(self, table: str) -> Iterable[dict[str, Any]]:
        # Reads of the two big tables go straight to the snapshot's documents: a TinyDB
        # query costs ~18 ms per 1,000 members, and the server reads members per message.
        return (self._db.storage.read() or {}).get(table, {}).values()

    # -- lists ---------------------------------------------------------------
    def get_list(self, address: str) -> MailingList | None:
        doc = self._lists.get(Query().address == address)
        return _mailing_list(doc) if doc else None

    def require_list(self, address: str) -> MailingList:
        found = self.get_list(address)
        if found is None:
            raise NotFound(f"There is no list {address}.")
        return found

    def lists(self) -> list[MailingList]:
        return sorted((_mailing_list(doc) for doc in self._raw("lists")), key=lambda ml: ml.address)

    def add_list(self, mailing_list: MailingList) -> None:
        if self.get_list(mailing_list.address):
            raise Conflict(f"The list {mailing_list.address} exists already.")
        self._lists.insert(mailing_list.as_dict())

    def update_list(self, mailing_list: MailingList) -> None:
        self.require_list(mailing_list.address)
        self._lists.update(mailing_list.as_dict(), Query().address == mailing_list.address)

    def delete_list(self, address: str) -> None:
        self.require_list(address)
        self._lists.remove(Query().address == address)
        self._members.remove(Query().list == address)
        self._db.table("key_changes").remove(Query().list == address)
        self._db.table("invites").remove(Query().list == address)
        self._db.table("statements").remove(Query().list == address)
        self._db.table("contacts").remove(Query().list == address)
        self.forget_events(address)

    def forget_events(self, address: str) -> None:
        """Drop a list's rejections (kept in the events store). Its seen signatures stay until
        they expire: they still guard the home's other lists, and a list made again at this
        address, against replays of its posts."""
        self._db.table("rejections").remove(Query().list == address)

    def roster(self, address: str) -> Roster:
        """The list at `address` (NotFound if none), its members and the new keys awaiting their code."""
        members = tuple(self.members(address))
        by_email = {m.email: m for m in members}
        pending = tuple(PendingKey(doc["new"], by_email[doc["email"]], doc["expires"])
                        for doc in self._raw("key_changes")
                        if doc["list"] == address and doc["state"] == AWAITING_CODE and doc["email"] in by_email)
        joining = tuple(PendingKey(doc["fingerprint"], Member(address, doc["email"], doc["fingerprint"], doc["name"]),
                                   doc["expires"]) for doc in self._raw("invites")
                        if doc["list"] == address and doc["state"] == AWAITING_CODE)  # listserv.invites
        return Roster(self.require_list(address), members, pending + joining)

    def roster_if_any(self, address: str) -> Roster | None:
        """The same, or None when the list is gone (deleted while its mail was out)."""
        return None if self.get_list(address) is None else self.roster(address)

    # -- members -------------------------------------------------------------
    def members(self, list_address: str) -> list[Member]:
        if self._memo is not None and list_address in self._memo:
            return list(self._memo[list_address])
        docs = (doc for doc in self._raw("members") if doc["list"] == list_address)
        found = sorted((_member(doc) for doc in docs), key=lambda m: m.email)
        if self._memo is not None:
            self._memo[list_address] = found
        return list(found)

    def get_member(self, list_address: str, email: str) -> Member | None:
        doc = self._members.get((Query().list == list_address) & (Query().email == email))
        return _member(doc) if doc else None

    def require_member(self, list_address: str, email: str) -> Member:
        found = self.get_member(list_address, email)
        if found is None:
            raise NotFound(f"{email} is not a member of {list_address}.")
        return found

    def member_by_fingerprint(self, list_address: str, fingerprint: str) -> Member | None:
        for doc in self._raw("members"):
            if doc["list"] == list_address and doc["fingerprint"] == fingerprint:
                return _member(doc)
        return None

    def members_pinned_to(self, fingerprints: Iterable[str]) -> list[Member]:
        """Every member of any list whose pinned key is one of `fingerprints`."""
        wanted = set(fingerprints)
        found = (_member(doc) for doc in self._raw("members") if doc["fingerprint"] in wanted)
        return sorted(found, key=lambda m: (m.list, m.email))

    def _check_fingerprint_free(self, member: Member) -> None:
        # A list's own key (its secret is on this server) must never count as a member's.
        if self._lists.get(Query().fingerprint == member.fingerprint):
            raise Conflict(f"The key {member.fingerprint} is a list's own key, not a member's.")
        holder = self.member_by_fingerprint(member.list, member.fingerprint)
        if holder and holder.email != member.email:
            raise Conflict(
                f"The key {member.fingerprint} is already pinned to another member of {member.list}."
            )

    def add_member(self, member: Member) -> None:
        ml = self.require_list(member.list)
        if self.get_member(member.list, member.email):
            raise Conflict(f"{member.email} is already a member of {member.list}.")
        self._check_fingerprint_free(member)
        probation = member.probation or ml.option("new_member_probation")  # every way in: CLI, x-add-member
        self._members.insert({**member.as_dict(), "probation": probation})

    def add_members(self, list_address: str, members: list[Member]) -> list[tuple[Member, str | None]]:
        """Add many members at once (`member import`): the same checks as add_member, with
        indexes built once and one insert, so 10,000 keys cost seconds, not an hour.
        Returns each member with None (added) or the reason it was refused."""
        probation = self.require_list(list_address).option("new_member_probation")
        mine = [doc for doc in self._raw("members") if doc["list"] == list_address]
        emails = {doc["email"] for doc in mine}
        pinned = {doc["fingerprint"] for doc in mine}
        list_keys = {doc["fingerprint"] for doc in self._raw("lists")}
        results: list[tuple[Member, str | None]] = []
        for member in members:
            if member.email in emails:
                reason = f"{member.email} is already a member of {list_address}"
            elif member.fingerprint in list_keys:
                reason = f"The key {member.fingerprint} is a list's own key, not a member's"
            elif member.fingerprint in pinned:
                reason = f"The key {member.fingerprint} is already pinned to another member of {list_address}"
            else:
                reason = None
                emails.add(member.email)
                pinned.add(member.fingerprint)
            results.append((member, reason))
        self._members.insert_multiple({**m.as_dict(), "probation": m.probation or probation}
                                      for m, reason in results if reason is None)
        return results

    def update_member(self, member: Member) -> None:
        self.require_member(member.list, member.email)
        self._check_fingerprint_free(member)
        self._members.update(
            member.as_dict(), (Query().list == member.list) & (Query().email == member.email)
        )

    def remove_member(self, list_address: str, email: str) -> Member:
        member = self.require_member(list_address, email)
        self._members.remove((Query().list == list_address) & (Query().email == email))
        return member

    def count_bounce(self, list_address: str, email: str) -> None:
        member = self.get_member(list_address, email)
        if member:
            self.update_member(replace(member, bounces=member.bounces + 1))

    def fingerprint_in_use(self, fingerprint: str) -> bool:
        """Whether a key must stay in the keyring: pinned, a list's own, or the new key of a
        pending key change (listserv.rotation)."""
        return bool(self._members.get(Query().fingerprint == fingerprint)) or bool(
            self._lists.get(Query().fingerprint == fingerprint)
        ) or any(doc["new"] == fingerprint and doc["state"] in KEY_CHANGE_PENDING for doc in self._raw("key_changes")
                 ) or any(doc.get("fingerprint") == fingerprint and doc["state"] in KEY_CHANGE_PENDING
                          for doc in self._raw("invites"))

    # -- changes to a new key (listserv.rotation): one record each, kept with the pins --------
    def key_changes(self, list_address: str | None = None) -> list[dict[str, Any]]:
        """The key changes of a list (of every list when None), oldest first."""
        docs = (doc for doc in self._raw("key_changes") if list_address is None or doc["list"] == list_address)
        return sorted((dict(doc) for doc in docs), key=lambda d: (d["requested"], d["id"]))

    def put_key_change(self, record: dict[str, Any]) -> None:
        self._db.table("key_changes").upsert(record, Query().id == record["id"])

    # -- invitations (listserv.invites): kept with the pins, as key changes are -----------
    def invites(self, list_address: str | None = None) -> list[dict[str, Any]]:
        """The invitations of a list (of every list when None), oldest first."""
        docs = (doc for doc in self._raw("invites") if list_address is None or doc["list"] == list_address)
        return sorted((dict(doc) for doc in docs), key=lambda d: (d["created"], d["id"]))

    def put_invite(self, record: dict[str, Any]) -> None:
        self._db.table("invites").upsert(record, Query().id == record["id"])

    # -- statements (listserv.statements): digests, askers and times, never the text --------
    def statements(self, list_address: str) -> list[dict[str, Any]]:
        """The list's statement rounds, oldest first."""
        docs = (dict(doc) for doc in self._raw("statements") if doc["list"] == list_address)
        return sorted(docs, key=lambda d: (d["first"], d["id"]))

    def put_statement(self, record: dict[str, Any]) -> None:
        self._db.table("statements").upsert(record, Query().id == record["id"])
    # -- contacts (listserv.contacts): outsiders a list may resend to, by pinned fingerprint ---
    def contacts(self, list_address: str) -> list[dict[str, Any]]:
        """The contacts of a list, by address: {list, address, fingerprint (None: no key), added}."""
        docs = (doc for doc in self._raw("contacts") if doc["list"] == list_address)
        return sorted((dict(doc) for doc in docs), key=lambda d: d["address"])

    def get_contact(self, list_address: str, address: str) -> dict[str, Any] | None:
        return next((c for c in self.contacts(list_address) if c["address"] == address), None)

    def add_contact(self, record: dict[str, Any]) -> None:
        if self.get_contact(record["list"], record["address"]) is not None:
            raise Conflict(f"{record['address']} is a contact of {record['list']} already.")
        self._db.table("contacts").insert(record)

    def remove_contact(self, list_address: str, address: str) -> dict[str, Any]:
        found = self.get_contact(list_address, address)
        if found is None:
            raise NotFound(f"{address} is not a contact of {list_address}.")
        self._db.table("contacts").remove((Query().list == list_address) & (Query().address == address))
        return found

    def contact_key_in_use(self, fingerprint: str) -> bool:
        """Whether a contact of any list still pins the key (it stays in the contacts keyring)."""
        return any(doc.get("fingerprint") == fingerprint for doc in self._raw("contacts"))

    # -- requests (LIST-request@): each one's outcome, kept with the changes it made ---------
    def get_request(self, qid: str) -> dict[str, Any] | None:
        doc = self._db.table("requests").get(Query().qid == qid)
        return dict(doc) if doc else None

    def requests(self, list_address: str) -> list[dict[str, Any]]:
        """The list's requests, oldest first (the last 1,000 are kept)."""
        docs = self._db.table("requests").search(Query().list == list_address)
        return [dict(doc) for doc in sorted(docs, key=lambda d: d.doc_id)]

    def add_request(self, record: dict[str, Any], keep: int = 1000) -> None:
        table = self._db.table("requests")
        table.insert(record)
        mine = sorted(table.search(Query().list == record["list"]), key=lambda d: d.doc_id)
        if len(mine) > keep:
            table.remove(doc_ids=[doc.doc_id for doc in mine[: len(mine) - keep]])

    # -- replay protection ---------------------------------------------------
    # One record per signature and list that took it: {"digest", "list", "expires"}. They are
    # looked up across lists (a signature is a replay on any list once one took it; the rule
    # is stages.authorize.replayed). Records written before that carry "seen" instead of
    # "expires": they were made per list and mean the same, "this list took it", so they
    # stay in force and expire `keep_seconds` after they were seen.
    def lists_that_took(self, digest: str, now: float, keep_seconds: float) -> frozenset[str]:
        """The lists that took the signature `digest` and still remember it. Drops every
        expired record on the way."""
        table = self._db.table("signatures")
        expired = [doc.doc_id for doc in table.all()
                   if doc.get("expires", doc.get("seen", 0) + keep_seconds) < now]
        if expired:
            table.remove(doc_ids=expired)
        return frozenset(doc["list"] for doc in table.search(Query().digest == digest))

    def record_signature(self, digest: str, list_address: str, expires: float) -> None:
        self._db.table("signatures").insert({"digest": digest, "list": list_address, "expires": expires})

    # -- rates: what LIST-owner@ forwarded, what LIST-sendkey@ answered -------
    # One record per forward or reply: {"list", "what", "key", "at"}; `key` is a keyed digest
    # of the address answered (never the address), or "" where none is counted. Kept a day.
    def rate_count(self, list_address: str, what: str, now: float, window: float, key: str | None = None) -> int:
        """How many `what` records the list has from the last `window` seconds (of `key` only,
        when given). Drops every record older than a day on the way."""
        table = self._db.table("rates")
        old = [doc.doc_id for doc in table.all() if doc["at"] < now - RATE_MEMORY]
        if old:
            table.remove(doc_ids=old)
        return sum(1 for doc in table.search((Query().list == list_address) & (Query().what == what))
                   if doc["at"] >= now - window and (key is None or doc["key"] == key))

    def rate_take(self, list_address: str, what: str, at: float, key: str = "") -> None:
        self._db.table("rates").insert({"list": list_address, "what": what, "key": key, "at": at})

    # -- rejections (for admins) ---------------------------------------------
    def add_rejection(self, rejection: Rejection, keep: int = 1000) -> None:
        table = self._db.table("rejections")
        table.insert(rejection.as_dict())
        mine = sorted(
            (doc for doc in table.search(Query().list == rejection.list)), key=lambda d: d.doc_id
        )
        if len(mine) > keep:
            table.remove(doc_ids=[doc.doc_id for doc in mine[: len(mine) - keep]])

    def rejections(self, list_address: str) -> list[Rejection]:
        docs = self._db.table("rejections").search(Query().list == list_address)
        names = {f.name for f in fields(Rejection)}
        return [Rejection(**{k: v for k, v in doc.items() if k in names}) for doc in sorted(docs, key=lambda d: d.doc_id)]

    # -- small named values (digest state and the like) ----------------------
    def get_value(self, key: str, default: Any = None) -> Any:
        doc = self._db.table("values").get(Query().key == key)
        return doc["value"] if doc else default

    def set_value(self, key: str, value: Any) -> None:
        self._db.table("values").upsert({"key": key, "value": value}, Query().key == key)


class Store:
    def __init__(self, path: Path):
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._thread_lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int], dict[str, Any], dict[str, list[Member]]] | None = None

    def _load(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StoreError(f"The database {self.path} cannot be read ({exc.strerror}).") from None
        # Never treat an empty file as an empty database: the next write would silently
        # replace every list and member. (This store never writes less than "{}".)
        try:
            data = json.loads(raw)
        except ValueError:
            raise StoreError(f"The database {self.path} is not valid JSON.") from None
        if not isinstance(data, dict):
            raise StoreError(f"The database {self.path} is not a listserv database.")
        return data

    def _remove_leftovers(self) -> None:
        # A writer killed between writing its temporary file and renaming it leaves a full
        # copy of the database behind. Under the lock no writer is running, so any is stale.
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Exclusive, all-or-nothing access: written only if the block ends without error."""
        with self._thread_lock:
            try:
                lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise StoreError(f"The database lock cannot be opened ({exc.strerror}).") from None
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                self._remove_leftovers()
                storage = _MemoryStorage(self._load())
                db = TinyDB(storage=lambda: storage)
                yield Transaction(db)
                if storage.dirty:
                    payload = json.dumps(storage.data, separators=(",", ":"), sort_keys=True)
                    try:
                        write_atomically(self.path, payload.encode())
                    except OSError as exc:
                        raise StoreError(f"The database cannot be written ({exc.strerror}).") from None
            finally:
                os.close(lock_fd)  # closing the descriptor releases the flock

    def secret(self, name: str) -> bytes:
        """A random 32-byte secret kept under `name` in the values table, made on first use
        (the VERP key: listserv.verp)."""
        value = self.read().get_value(name)
        if value is None:
            with self.transaction() as tx:
                value = tx.get_value(name)
                if value is None:
                    value = secrets.token_hex(32)
                    tx.set_value(name, value)
        return bytes.fromhex(value)

    def read(self) -> Transaction:
        """A snapshot for reading (it must not be changed). The parsed file is reused while
        the file is unchanged: every write renames a new file into place, so a new inode."""
        try:
            info = self.path.stat()
            key = (info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            key = None
        cached = self._cache
        if key is not None and cached is not None and cached[0] == key:
            _, data, memo = cached
        else:
            data, memo = self._load(), {}
            if key is not None:
                self._cache = (key, data, memo)
        storage = _MemoryStorage(data, writable=False)
        return Transaction(TinyDB(storage=lambda: storage), memo)
