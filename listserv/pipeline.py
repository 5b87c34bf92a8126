"""The order of the stages, and nothing else.

accept():  open -> authorize -> seal -> spool -> replay check   (before the SMTP reply)
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from .errors import ListservError, Refusal, TooLarge, Unauthorized
from .keyring import Keyring
from .spool import Spool
from .stages.authorize import authorize, option, replay_window
from .stages.open import open_message
from .stages.route import Route
from .store import Store


@dataclass(frozen=True)
class Services:
    store: Store
    keyring: Keyring
    spool: Spool


@dataclass(frozen=True)
class Accepted:
    qid: str
    list: str
    kind: str
    signer: str


def accept(raw: bytes, route: Route, services: Services) -> Accepted:
    """Check a submission and store it durably; raises a Refusal (with .signer when known)."""
    signer = None
    try:
        snapshot = services.store.read()
        mailing_list = snapshot.require_list(route.list)
        if len(raw) > option(mailing_list, "max_message_size_kb") * 1024:
            raise TooLarge("too-large")
        opened = open_message(raw, services.keyring)
        signer = opened.signer
        members = {m.fingerprint: m for m in snapshot.members(mailing_list.address)}
        authorize(opened, route, mailing_list, members, time.time())
        sealed = services.keyring.seal(mailing_list.fingerprint, raw)
        job = services.spool.accept(mailing_list.address, route.kind, sealed)
        # Claimed after the job is on disk: a crash in between may deliver a post twice,
        # never lose one that a client will retry (claiming first would refuse the retry).
        with services.store.transaction() as tx:
            fresh = tx.claim_signature(mailing_list.address, opened.signature_id, time.time(),
                                       replay_window(mailing_list))
        if not fresh:
            services.spool.remove(job)
            raise Unauthorized("replay")
        return Accepted(job.qid, mailing_list.address, route.kind, opened.signer)
    except Refusal as refusal:
        refusal.signer = signer
        _record(refusal, route, services)
        raise


def _record(refusal: Refusal, route: Route, services: Services) -> None:
    """Keep the specific reason where admins can read it (`listserv rejections`)."""
    with contextlib.suppress(ListservError):
        with services.store.transaction() as tx:
            if tx.get_list(route.list):
                tx.add_rejection({
                    "list": route.list, "at": time.time(), "kind": route.kind,
                    "reason": refusal.reason, "reply": f"{refusal.code} {refusal.status}",
                    "signer": refusal.signer, "ref": refusal.ref,
                })
