"""Mail from the list onto the outgoing spool: a fan-out's delivery job written, or a notice
fanned out and written. The one place a delivery job is made (posts, digests, notices).

Being that one place, it is where every job's shared envelope gets the list key's Autocrypt
and OpenPGP headers (listserv.autocrypt): whatever kind of mail the list sends, now or later,
carries them, computed once per job (the key data once per key and keyring state), never per copy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import replace
from functools import cached_property

from . import autocrypt
from .errors import KeyProblem
from .keyring import Keyring
from .model import PLAIN, Kind, MailingList, Recipient
from .notices import Notice
from .spool import Outgoing, OutJob, new_queue_id
from .stages.fanout import Fanned, fan_out
from .store import Store
from .verp import SECRET_KEY


def _derived(qid: str, index: int | str) -> str:
    return hashlib.sha256(f"{qid}/{index}".encode()).hexdigest()[:12]


def derived_qid(qid: str, what: str) -> str:
    """A queue id fixed by `qid` and `what` (a resend's copy, listserv.resend): written once,
    so a rerun after a crash finds it and queues it neither again nor never."""
    return _derived(qid, what)


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
        fanned = replace(fanned, prefix=self.with_key_headers(mailing_list, fanned.prefix))
        return self.outgoing.write(qid, mailing_list.address, kind, fanned, poster, items)

    def with_key_headers(self, mailing_list: MailingList, message: bytes) -> bytes:
        """`message` (a job's envelope, from one of the list's addresses) with the list key's
        headers for its From address. Without a user id for that address (an older key the
        server could not complete), no Autocrypt header: one naming another address than the
        From would be ignored by clients, or worse, taken for the wrong address."""
        sender = autocrypt.sender(message)
        own = (mailing_list.address, mailing_list.request_address, mailing_list.owner_address,
               mailing_list.sendkey_address)
        try:
            keydata = self.keyring.minimal_key(mailing_list.fingerprint, sender) if sender in own else None
        except KeyProblem:
            keydata = None
        return autocrypt.with_headers(message, autocrypt.key_headers(sender, mailing_list.fingerprint, keydata))

    def write_plain(self, qid: str, mailing_list: MailingList, kind: Kind, message: bytes, to: str,
                    return_path: str = "") -> OutJob | None:
        """The delivery job of one message that is sent as it is (signed, not encrypted: the
        list's key to someone who has no key pinned here), under a null sender (RFC 3834)
        unless `return_path` names another."""
        if self.outgoing.exists(qid):  # queued before a crash
            return None
        plain = Fanned(shared=(), prefix=message, suffix=b"", return_path=return_path,
                       records=(Recipient(to, "", b"", PLAIN, ""),), unusable=())
        return self.write(qid, mailing_list, kind, plain)

    def notices(self, notices: Iterable[Notice | None], after: str | None = None) -> tuple[OutJob, ...]:
        """Fan out and queue each notice (None: nobody to tell), encrypted like any post. With
        `after` (the queue id of what they answer) their queue ids are fixed by it, and one
        queued before a crash is not queued again."""
        jobs = []
        for index, notice in enumerate(notices):
            qid = _derived(after, index) if after else new_queue_id()
            if notice is None or self.outgoing.exists(qid):
                continue
            fanned = fan_out(notice.composed, notice.recipients, notice.mailing_list, self.keyring, self.verp_key)
            job = self.write(qid, notice.mailing_list, Kind.NOTICE, fanned)
            if job is not None:
                jobs.append(job)
        return tuple(jobs)
