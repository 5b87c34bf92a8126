"""The durable queue on disk: one directory per job, made visible by an atomic rename.

    data/spool/tmp/QID/        being written; never read; swept at start
    data/spool/incoming/QID/   accepted submissions: meta.json + submission.pgp
    data/spool/bad/QID/        jobs that failed in a way retrying cannot fix

A job directory is written in tmp/, every file fsynced, the directory fsynced, then renamed
into place and the parent fsynced: after a crash a job is either wholly there or absent.
Nothing here is plaintext: a submission is stored sealed to the list's own key (its outer
headers too, which may carry a Subject, addresses or IPs).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import StoreError
from .store import fsync_directory

SUBMISSION = "submission.pgp"
META = "meta.json"
KINDS = ("alert", "post")  # in priority order: alerts jump the queue


def new_queue_id() -> str:
    # Random, so ids say nothing about arrival order or time; 12 hex digits.
    return secrets.token_hex(6)


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Job:
    qid: str
    list: str
    kind: str
    received: float
    state: str
    path: Path

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.received)

    def as_dict(self) -> dict[str, Any]:
        return {"qid": self.qid, "list": self.list, "kind": self.kind,
                "received": self.received, "state": self.state}


class Spool:
    def __init__(self, root: Path):
        self.root = root
        self.tmp = root / "tmp"
        self.incoming = root / "incoming"
        self.bad = root / "bad"

    def prepare(self) -> None:
        """Create the folders and sweep half-written jobs left by a crash."""
        for folder in (self.root, self.tmp, self.incoming, self.bad):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)

    def _publish(self, staging: Path, destination: Path) -> None:
        fsync_directory(staging)
        os.rename(staging, destination)
        fsync_directory(destination.parent)
        fsync_directory(self.tmp)

    def accept(self, list_address: str, kind: str, sealed: bytes) -> Job:
        """Store an accepted submission durably; returns once it is on disk."""
        qid = new_queue_id()
        staging = self.tmp / qid
        meta = {"qid": qid, "list": list_address, "kind": kind, "received": time.time(),
                "state": "accepted"}
        try:
            staging.mkdir(mode=0o700)
            _write_synced(staging / SUBMISSION, sealed)
            _write_synced(staging / META, json.dumps(meta).encode())
            self._publish(staging, self.incoming / qid)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise StoreError(f"The spool cannot be written ({exc.strerror}).") from None
        return Job(qid, list_address, kind, meta["received"], meta["state"], self.incoming / qid)

    def _job(self, folder: Path) -> Job | None:
        try:
            meta = json.loads((folder / META).read_bytes())
        except (OSError, ValueError):
            return None
        return Job(meta["qid"], meta["list"], meta["kind"], meta["received"], meta["state"], folder)

    def submissions(self) -> list[Job]:
        """Accepted submissions waiting for fan-out: alerts first, then oldest first."""
        jobs = [job for folder in sorted(self.incoming.iterdir()) if (job := self._job(folder))]
        return sorted(jobs, key=lambda job: (KINDS.index(job.kind), job.received))

    def read_submission(self, job: Job) -> bytes:
        return (job.path / SUBMISSION).read_bytes()

    def remove(self, job: Job) -> None:
        """Forget a job whose work is done (rename away first, so a crash never leaves half)."""
        doomed = self.tmp / f"done-{job.qid}"
        os.rename(job.path, doomed)
        fsync_directory(job.path.parent)
        shutil.rmtree(doomed, ignore_errors=True)

    def quarantine(self, job: Job) -> None:
        os.rename(job.path, self.bad / job.qid)
        fsync_directory(self.bad)
