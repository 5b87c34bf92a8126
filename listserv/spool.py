"""The durable queue on disk: one directory per job, made visible by an atomic rename.

    data/spool/tmp/QID/        being written; never read; swept at start
    data/spool/incoming/QID/   accepted submissions: meta.json + submission.pgp
    data/spool/outgoing/QID/   fan-out jobs: the shared encrypted packet once, a record per
                               member (address, VERP token, PKESK, key fingerprint), an
                               append-only journal of delivery results with reason codes,
                               and in meta.json who signed a post (a fingerprint, to tell
                               them if no copy can be delivered) or a digest part's items
    data/spool/bad/QID/        jobs that failed in a way retrying cannot fix
    data/spool/relay.json      the relay's size limit as last learned (listserv.relaylimit)

A job directory is written in tmp/, every file fsynced, the directory fsynced, then renamed
into place and the parent fsynced: after a crash a job is either wholly there or absent.
Nothing here is plaintext: a submission is stored sealed to the list's own key (its outer
headers too, which may carry a Subject, addresses or IPs).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import StoreError
from .model import PRIORITY, Kind, Recipient

if TYPE_CHECKING:
    from .stages.fanout import Fanned
from .durable import fsync_directory, make_directories, write_synced

SUBMISSION = "submission.pgp"
META = "meta.json"


def new_queue_id() -> str:
    # Random, so ids say nothing about arrival order or time; 12 hex digits.
    return secrets.token_hex(6)


@dataclass(frozen=True)
class Job:
    """An accepted submission, sealed, waiting for the fan-out."""

    qid: str
    list: str
    kind: Kind
    received: float
    path: Path

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.received)

    def as_dict(self) -> dict[str, Any]:
        return {"qid": self.qid, "list": self.list, "kind": self.kind,
                "received": self.received, "state": "accepted"}


class Spool:
    def __init__(self, root: Path):
        self.root = root
        self.tmp = root / "tmp"
        self.incoming = root / "incoming"
        self.bad = root / "bad"
        self.outgoing = root / "outgoing"
        self.retry_flag = root / "retry-now"
        self.relay_file = root / "relay.json"  # what the relay takes (listserv.relaylimit)

    def prepare(self) -> None:
        """Create the folders."""
        for folder in (self.root, self.tmp, self.incoming, self.outgoing, self.bad):
            make_directories(folder)

    def sweep(self) -> None:
        """Remove half-written jobs a crash left in tmp/. Only the server does, at its start,
        holding data/serve.lock: a CLI command sweeping would take a running server's."""
        for leftover in self.tmp.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)

    def stage(self, qid: str, files: dict[str, bytes], destination: Path) -> None:
        staging = self.tmp / qid
        try:
            staging.mkdir(mode=0o700)
            for name, data in files.items():
                write_synced(staging / name, data)
            self._publish(staging, destination)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise StoreError(f"The spool cannot be written ({exc.strerror}).") from None

    def _publish(self, staging: Path, destination: Path) -> None:
        fsync_directory(staging)
        os.rename(staging, destination)
        fsync_directory(destination.parent)
        fsync_directory(self.tmp)

    def accept(self, list_address: str, kind: Kind, sealed: bytes) -> Job:
        """Store an accepted submission durably; returns once it is on disk."""
        qid = new_queue_id()
        meta = {"qid": qid, "list": list_address, "kind": kind, "received": time.time(),
                "state": "accepted"}  # "state": read by listservs before 0.11
        self.stage(qid, {SUBMISSION: sealed, META: json.dumps(meta).encode()}, self.incoming / qid)
        return Job(qid, list_address, Kind(kind), meta["received"], self.incoming / qid)

    def _job(self, folder: Path) -> Job | None:
        try:
            meta = json.loads((folder / META).read_bytes())
        except (OSError, ValueError):
            return None
        return Job(meta["qid"], meta["list"], Kind(meta["kind"]), meta["received"], folder)

    def submissions(self) -> list[Job]:
        """Accepted submissions waiting for fan-out: alerts first, then oldest first."""
        jobs = [job for folder in sorted(self.incoming.iterdir()) if (job := self._job(folder))]
        return sorted(jobs, key=lambda job: (PRIORITY[job.kind], job.received))

    def released(self) -> list[Job]:
        """Submissions an admin released from the hold queue (listserv.holds): the server's poller
        picks them up."""
        return [job for job in self.submissions() if (job.path / "released").exists()]

    def read_submission(self, job: Job) -> bytes:
        return (job.path / SUBMISSION).read_bytes()

    def remove(self, job: Job | OutJob) -> None:
        """Forget a job whose work is done, submission or delivery job (renamed away first, so
        a crash never leaves half of one)."""
        doomed = self.tmp / f"done-{job.qid}"
        os.rename(job.path, doomed)
        fsync_directory(job.path.parent)
        shutil.rmtree(doomed, ignore_errors=True)

    def quarantine(self, job: Job | OutJob) -> None:
        """Set a job aside in bad/ (submission or delivery job): retrying cannot help it."""
        os.rename(job.path, self.bad / job.qid)
        fsync_directory(self.bad)


# -- outgoing fan-out jobs ------------------------------------------------------------------

SHARED, PREFIX, SUFFIX, RECIPIENTS, JOURNAL = "shared.pgp", "prefix", "suffix", "recipients", "journal"
PENDING, SENT, DEFERRED, FAILED = "pending", "sent", "deferred", "failed"
FINAL = (SENT, FAILED)


@dataclass
class Progress:
    state: str = PENDING
    attempts: int = 0
    next_try: float = 0.0
    reason: str = ""  # of the last failure or deferral: a code such as rcpt-550 (never reply text)


@dataclass(frozen=True)
class OutJob:
    """A delivery job: a fan-out's shared packets, one record per member, and the journal."""

    qid: str
    list: str
    kind: Kind
    created: float
    return_path: str  # envelope sender with {token} to fill in
    batches: int  # shared packets: one per gpg batch
    path: Path
    # Who is told when no copy can be delivered: the fingerprint of the member who signed a
    # post or alert (None for digests and notices). A fingerprint, like the log's, not an address.
    poster: str | None = None
    items: tuple[str, ...] = ()  # a digest part: the backlog items it carries (file names)

    def as_dict(self) -> dict[str, Any]:
        return {"qid": self.qid, "list": self.list, "kind": self.kind, "created": self.created}


def _encode_recipients(recipients: list[Recipient]) -> bytes:
    lines = (f"{r.email} {r.token} {r.batch} {base64.b64encode(r.pkesk).decode()} {r.fingerprint or '-'}"
             for r in recipients)
    return ("\n".join(lines) + "\n").encode()


def _decode_recipients(data: bytes) -> list[Recipient]:
    result = []
    for line in data.decode().splitlines():
        fields = line.split(" ")
        if len(fields) == 4:  # written before records carried the fingerprint
            fields.append("-")
        try:
            email, token, batch, pkesk, fingerprint = fields
            result.append(Recipient(email, token, base64.b64decode(pkesk, validate=True), int(batch),
                                    "" if fingerprint == "-" else fingerprint))
        except ValueError:  # binascii.Error too: one plain error for whatever a disk left
            raise ValueError("A recipient record is damaged.") from None
    return result


class Outgoing:
    """Fan-out jobs: written once, then only the journal grows (one fsynced line per result)."""

    def __init__(self, spool: Spool):
        self.spool = spool

    def write(self, qid: str, list_address: str, kind: Kind, fanned: Fanned,
              poster: str | None = None, items: tuple[str, ...] = ()) -> OutJob:
        """Write the job a fan-out made (listserv.stages.fanout.Fanned), all of it or nothing."""
        shared, recipients = fanned.shared, list(fanned.records)
        meta = {"qid": qid, "list": list_address, "kind": kind, "created": time.time(),
                "return_path": fanned.return_path, "batches": len(shared)}
        if poster:
            meta["poster"] = poster
        if items:
            meta["items"] = list(items)
        destination = self.spool.outgoing / qid
        files = {f"{SHARED}.{index}": packet for index, packet in enumerate(shared)}
        self.spool.stage(qid, {**files, PREFIX: fanned.prefix, SUFFIX: fanned.suffix,
                                RECIPIENTS: _encode_recipients(recipients), JOURNAL: b"",
                                META: json.dumps(meta).encode()}, destination)
        return self._job(destination)

    def exists(self, qid: str) -> bool:
        return (self.spool.outgoing / qid).is_dir()

    def _job(self, folder: Path) -> OutJob:
        meta = json.loads((folder / META).read_bytes())
        return OutJob(meta["qid"], meta["list"], Kind(meta["kind"]), meta["created"],
                      meta["return_path"], meta["batches"], folder, meta.get("poster"),
                      tuple(meta.get("items", ())))

    def jobs(self) -> list[OutJob]:
        found = []
        for folder in sorted(self.spool.outgoing.iterdir()):
            try:
                found.append(self._job(folder))
            except (OSError, ValueError, KeyError):
                continue
        return sorted(found, key=lambda job: (PRIORITY[job.kind], job.created))

    def recipients(self, job: OutJob) -> list[Recipient]:
        return _decode_recipients((job.path / RECIPIENTS).read_bytes())

    def envelope(self, job: OutJob) -> tuple[bytes, bytes]:
        """The outer message around each copy's armored ciphertext: (prefix, suffix)."""
        return (job.path / PREFIX).read_bytes(), (job.path / SUFFIX).read_bytes()

    def shared(self, job: OutJob) -> list[bytes]:
        return [(job.path / f"{SHARED}.{index}").read_bytes() for index in range(job.batches)]

    def progress(self, job: OutJob, count: int, repair: bool = True) -> list[Progress]:
        """Each member's state, replayed from the journal (a torn last line is ignored).
        The server (repair=True) closes a torn line before appending; readers leave it."""
        states = [Progress() for _ in range(count)]
        journal = (job.path / JOURNAL).read_bytes()
        if repair and journal and not journal.endswith(b"\n"):  # a crash tore the last line
            with open(job.path / JOURNAL, "ab") as handle:
                handle.write(b"\n")
        for line in journal.split(b"\n"):
            parts = line.split()
            if len(parts) not in (4, 5):  # 4: written before results carried a reason
                continue
            index, state, attempts, next_try = int(parts[0]), parts[1].decode(), int(parts[2]), float(parts[3])
            reason = parts[4].decode() if len(parts) == 5 and parts[4] != b"-" else ""
            if 0 <= index < count:
                states[index] = Progress(state, attempts, next_try, reason)
        return states

    def record(self, job: OutJob, index: int, progress: Progress) -> None:
        """Append one result and fsync before anything else happens to that member."""
        line = (f"{index} {progress.state} {progress.attempts} {progress.next_try:.3f} "
                f"{progress.reason or '-'}\n").encode()
        fd = os.open(job.path / JOURNAL, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)
            os.fdatasync(fd)
        finally:
            os.close(fd)
