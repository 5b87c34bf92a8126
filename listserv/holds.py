"""The held messages: posts that wait for an admin (probation), and their decisions.

    data/held/LIST/QID/   a held submission, moved whole out of spool/incoming/: its meta.json
                          and submission.pgp (sealed to the list key, as in the spool) and
                          hold.json (id, kind, signer's fingerprint and pseudonym, reason, when)

Every move is one rename on the same disk, so a crash leaves a post either held or not. A
hold tells the admins first (a notice whose queue id is fixed by the post's), then moves the
post: a crash in between holds it again and tells nobody twice. Approving writes a `released`
mark into the folder, then renames it back into spool/incoming/ under its own queue id: the
distributor sends it exactly once (its signature was judged at arrival), and never holds a
released post again. Rejecting and discarding rename it away. The id of a held post is its
queue id (random; logs carry it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .durable import fsync_directory, make_directories, write_synced
from .errors import UsageError
from .model import Kind, Member, Roster
from .spool import Job, Spool
from .stages.hold import held_for

log = logging.getLogger("listserv.holds")
HOLD, RELEASED = "hold.json", "released"


@dataclass(frozen=True)
class Held:
    id: str
    list: str
    kind: Kind
    signer: str  # the fingerprint
    pseudonym: str
    reason: str
    at: float
    path: Path

    def as_dict(self) -> dict:
        return {"id": self.id, "list": self.list, "kind": str(self.kind), "pseudonym": self.pseudonym,
                "reason": self.reason, "at": self.at}


class Holds:
    def __init__(self, root: Path, spool: Spool):
        self.root, self.spool = root, spool

    def folder(self, list_address: str) -> Path:
        return self.root / list_address

    def keep(self, job: Job, reason: str | None, member: Member | None,
             tell: Callable[[], object]) -> Held | None:
        """Hold `job` for `reason` (None, or a post an admin released: not held). `tell` queues
        the admins' notice; it runs before the move."""
        if reason is None or member is None or (job.path / RELEASED).exists():
            return None
        held = Held(job.qid, job.list, job.kind, member.fingerprint, member.name, reason, time.time(),
                    self.folder(job.list) / job.qid)
        write_synced(job.path / HOLD, json.dumps({**held.as_dict(), "signer": held.signer}).encode())
        tell()
        make_directories(held.path.parent)
        os.rename(job.path, held.path)
        fsync_directory(held.path.parent)
        fsync_directory(job.path.parent)
        log.info("held qid=%s list=%s signer=%s reason=%s", job.qid, job.list, member.fingerprint, reason)
        return held

    def waiting(self, list_address: str) -> list[Held]:
        """What waits for a decision, oldest first."""
        folder = self.folder(list_address)
        found = []
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            try:
                meta = json.loads((path / HOLD).read_bytes())
            except (OSError, ValueError):
                continue
            found.append(Held(meta["id"], meta["list"], Kind(meta["kind"]), meta["signer"], meta["pseudonym"],
                              meta["reason"], meta["at"], path))
        return sorted(found, key=lambda h: h.at)

    def get(self, list_address: str, held_id: str) -> Held:
        for held in self.waiting(list_address):
            if held.id == held_id.lower():
                return held
        raise UsageError(f"No held message has the id {held_id} (it may have been decided already).")

    def released(self, held_id: str) -> bool:
        """Whether `held_id` was approved already (and is in the spool or out): a rerun after a crash."""
        return (self.spool.incoming / held_id).is_dir() or (self.spool.outgoing / held_id).is_dir()

    def approve(self, held: Held) -> None:
        """Back into the spool under its queue id, marked so it is not held again."""
        write_synced(held.path / RELEASED, b"")
        os.rename(held.path, self.spool.incoming / held.id)
        fsync_directory(self.spool.incoming)
        fsync_directory(held.path.parent)
        log.info("released qid=%s list=%s", held.id, held.list)

    def drop(self, held: Held, why: str) -> None:
        """Rejected or discarded: gone, renamed away first so a crash never leaves half of it."""
        doomed = self.spool.tmp / f"done-{held.id}"
        os.rename(held.path, doomed)
        fsync_directory(held.path.parent)
        shutil.rmtree(doomed, ignore_errors=True)
        log.info("%s qid=%s list=%s", why, held.id, held.list)

    def expired(self, list_address: str, days: int, now: float) -> list[Held]:
        return [h for h in self.waiting(list_address) if now - h.at > days * 86400]


def keep_post(holds: Holds, outbox, templates, roster: Roster, job: Job, opened) -> Held | None:
    """The worker's hold: a post listserv.stages.hold says must wait is kept, the admins told
    (the notice, with the post attached, is built only then)."""
    signer = roster.by_fingerprint.get(opened.signer)
    reason = held_for(signer, job.kind, roster.mailing_list)
    if reason is None:
        return None
    from .notices import held  # the fan-out machinery, only for a post that is held

    return holds.keep(job, reason, signer,
                      lambda: outbox.notices([held(templates, roster, job, signer, opened.content, reason)],
                                                     after=job.qid))
