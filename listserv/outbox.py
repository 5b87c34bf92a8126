"""Mail from the list onto the outgoing spool: a fan-out's delivery job written, or a notice
fanned out and written. The one place a delivery job is made (posts, digests, notices).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property

from .keyring import Keyring
from .model import Kind, MailingList
from .notices import Notice
from .spool import Outgoing, OutJob, new_queue_id
from .stages.fanout import Fanned, fan_out
from .store import Store
from .verp import SECRET_KEY


class Outbox:
    def __init__(self, keyring: Keyring, outgoing: Outgoing, store: Store):
        self.keyring = keyring
        self.outgoing = outgoing
        self._store = store  # where the VERP key is kept

    @cached_property
    def verp_key(self) -> bytes:
        return self._store.secret(SECRET_KEY)

    def write(self, qid: str, mailing_list: MailingList, kind: Kind, fanned: Fanned,
              poster: str | None = None, items: tuple[str, ...] = ()) -> OutJob | None:
        """The delivery job of `fanned`; None when nobody gets a copy (no job is written)."""
        if not fanned.records:
            return None
        return self.outgoing.write(qid, mailing_list.address, kind, fanned, poster, items)

    def notices(self, notices: Iterable[Notice | None]) -> tuple[OutJob, ...]:
        """Fan out and queue each notice (None: nobody to tell), encrypted like any post."""
        jobs = []
        for notice in notices:
            if notice is None:
                continue
            fanned = fan_out(notice.composed, notice.recipients, notice.mailing_list, self.keyring, self.verp_key)
            job = self.write(new_queue_id(), notice.mailing_list, Kind.NOTICE, fanned)
            if job is not None:
                jobs.append(job)
        return tuple(jobs)
