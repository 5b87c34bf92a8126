"""Running the requests of a key not pinned yet: an invitee's x-join and x-confirm
(listserv.invites decides; this runs them as ledger.run_request runs a member's, in one store
transaction, once per queue id, all or nothing).

Called by listserv.pipeline only (answer_invitee is a piece of its answer path), for a
request whose signer is no member of the list (the receive path let only those two commands
in, stages.join and stages.authorize), or any x-join.
"""

from __future__ import annotations

import logging
import time

from . import invites, rotation
from .errors import ListservError
from .keyring import Keyring
from .ledger import _Keys
from .model import MailingList
from .notices import join_notices
from .outbox import Outbox
from .spool import Job, OutJob, Spool
from .stages.commands import Request, attached_keys, holds_only, read_request
from .stages.join import signed_from
from .stages.open import Opened
from .store import Store
from .templates import Templates

log = logging.getLogger("listserv.joining")


def key_changes(store: Store, list_address: str, events: tuple[tuple[str, str], ...]) -> tuple:
    """The notices a member's request calls for: its key-change lines' (listserv.rotation.told)
    and an admin's x-approve-join (listserv.invites.told; the two share Done.rotated, each
    keeps only its own ids)."""
    return rotation.told(store, list_address, events) + invites.told(store, list_address, events)


def is_joining(store: Store, list_address: str, opened: Opened) -> bool:
    """Whether a request was signed by no member's key nor a member's pending new key (an
    invitee's), or is an x-join by anyone (a member's meets the same answer as any bad one)."""
    roster = store.read().roster(list_address)
    signer, pending = opened.signer, roster.confirming.get(opened.signer)
    return holds_only(opened.content, "join") or (
        signer not in roster.by_fingerprint and (pending is None or pending.member.fingerprint == signer))


def answer_invitee(store: Store, keyring: Keyring, templates: Templates, outbox: Outbox, spool: Spool, job: Job,
                   opened: Opened) -> tuple[OutJob, ...]:
    """The path of such a request after the SMTP reply: run once; a join that leads to no
    challenge is answered by nothing at all (listserv.invites)."""
    ml = store.read().require_list(job.list)
    request = read_request(opened.content, ml, None)
    events, result = run_join(store, keyring, job.qid, ml, opened.signer, request, attached_keys(opened.content),
                              signed_from(opened.content))
    notices = join_notices(templates, store.read().roster(job.list), invites.told(store, job.list, events),
                           request.keywords, result, store.read().invites(job.list), opened.signer)
    replies = outbox.notices(notices, after=job.qid)
    spool.remove(job)
    return replies


def run_join(store: Store, keyring: Keyring, qid: str, ml: MailingList, signer: str, request: Request,
             attachments: tuple[bytes, ...], signed_from: str | None) -> tuple[tuple[tuple[str, str], ...], str]:
    """The events the request calls for (listserv.invites.told) and its result in words: for a
    failed x-join the reason, kept in the request log only; nobody hears it."""
    keys = _Keys(keyring, attachments)
    events: list = []
    try:
        with store.transaction() as tx:
            kept = tx.get_request(qid)
            if kept is not None:
                return tuple(tuple(e) for e in kept.get("joined", ())), kept.get("result", "")
            try:
                result = _run(tx, keys, ml, signer, request, signed_from, events)
                keys.adopt()  # the invitee's key enters the keyring with its invitation, or not at all
            except ListservError as exc:
                raise _Failed(str(exc)) from None
            tx.add_request(_record(qid, ml, signer, request, events, result, None))
    except _Failed as failed:  # the transaction is undone: only the record stays
        events, result = [], failed.reason
        with store.transaction() as tx:
            tx.add_request(_record(qid, ml, signer, request, (), result, result))
    finally:
        keys.close()
    log.info("join qid=%s list=%s signer=%s commands=%s outcome=%s", qid, ml.address, signer,
             ",".join(request.keywords) or "-", "done" if events else "refused")
    return tuple(events), result


class _Failed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _run(tx, keys: _Keys, ml: MailingList, signer: str, request: Request, signed_from: str | None,
         events: list) -> str:
    if request.refused or len(request.lines) != 1:
        raise _Failed(request.refused or "not-one-command")
    line = request.lines[0]
    if line.command.keyword == "join":
        return invites.join(tx, keys, ml, signer, line.arguments, signed_from, events)
    if line.command.keyword == "confirm":
        return invites.confirm(tx, keys, ml, signer, line.arguments, events)
    raise _Failed("not-a-join")


def _record(qid: str, ml: MailingList, signer: str, request: Request, events, result: str,
            refused: str | None) -> dict:
    return {"qid": qid, "list": ml.address, "at": time.time(), "signer": signer, "commands": list(request.keywords),
            "requester": {"name": "(invitee)"}, "results": [], "refused": refused, "attach_key": False, "left": False,
            "changes": [], "dropped": [], "suspended": False, "rotated": [], "joined": [list(e) for e in events],
            "result": result}
