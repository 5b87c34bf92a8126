"""Changing a member's pinned key to a new one, with proof (x-key-change, x-confirm, x-approve-key).

"I lost my key, here is my new one" is the impostor's classic move, so a new fingerprint is
never pinned on a member's word alone:

  1. `x-key-change`, signed by the member's CURRENT key, attaches the new public key (one
     certificate that can sign and encrypt now, not pinned to anyone else here, not a list's
     key, not one the member retired). The list sends a one-time code encrypted to the new key
     ONLY: whoever answers with it can decrypt with that key.
  2. `x-confirm: CODE`, signed by the current key or the new one, proves that. A request
     signed by the new key is not from a member yet; the receive path takes it only when the
     key is the pending new key of a member and the request holds nothing but x-confirm
     (stages.authorize), and `confirming_member` checks the same again where it runs.
  3. With `key_change_approval = admin` (the default) every admin gets a notice with an
     APPROVAL code of its own (the member's code is never shown to anyone) and one admin's
     `x-approve-key: CODE` pins the key; an admin cannot approve their own change while
     another admin could. With `none` the confirmation pins it.
  4. Pinned: the old fingerprint goes to `Member.previous_fingerprints`, the old key leaves the
     keyring unless something else pins it, every admin is told, and with
     `announce_key_changes` the other members hear "P's key changed on DATE".

The records live in the main store, not the events store: approving one changes a pin, and the
change's state and the pin must be written in one transaction (the events store is another
file), and the receive path reads the pending keys with the roster, from one snapshot.

Codes are 128 bits, written in base32 for typing. They are not stored: each is an HMAC of the
change's id under a secret kept in the store, and only its SHA-256 is kept for the lookup, so
the request log holds no code, and a rerun after a crash can still write the notice it was
going to send. A code is used once; the member's is good for CODE_DAYS days from the request,
the admins' for APPROVAL_DAYS days from the confirmation. A later x-key-change replaces a
pending one. The new key is in the keyring while its change is pending (the challenge is
encrypted to it, x-confirm may be signed by it); when the change ends any other way than
pinned, it leaves again unless something else needs it (`sweep`, and Done.dropped).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import asdict, dataclass, replace

from .errors import Conflict, CryptoError, KeyProblem, UsageError
from .keyring import Keyring
from .model import (
    ACTIVE,
    AWAITING_APPROVAL,
    AWAITING_CODE,
    KEY_CHANGE_PENDING,
    MailingList,
    Member,
    fingerprint_format,
    iso,
)
from .store import Store, Transaction

log = logging.getLogger("listserv.rotation")
CODE_DAYS = 3
APPROVAL_DAYS = 7
DAY = 86400
SECRET = "key-change-secret"  # in the store's values table
APPROVED, EXPIRED, REFUSED = "approved", "expired", "refused"
KEYWORDS = ("key-change", "confirm", "approve-key", "key-requests")
SHOWN = 50  # x-key-requests: the most recent changes shown


@dataclass(frozen=True)
class KeyChange:
    id: str
    list: str
    email: str
    name: str  # the member's pseudonym when they asked
    old: str
    new: str
    new_expires: str | None  # when the new key stops being usable (as Member.key_expires)
    requested: float
    expires: float  # the deadline of the state it is in
    state: str  # AWAITING_CODE, AWAITING_APPROVAL, APPROVED, EXPIRED or REFUSED
    code_hash: str
    approval_hash: str = ""
    confirmed: float | None = None
    ended: float | None = None
    approved_by: str = ""  # the approving admin's pseudonym ("" when no approval was needed)
    why: str = ""  # why it was refused

    @classmethod
    def of(cls, doc: dict) -> KeyChange:
        return cls(**doc)

    def as_dict(self) -> dict:
        return asdict(self)

    def state_at(self, now: float) -> str:
        """The state as it stands at `now`: a pending change past its deadline has expired,
        whether or not a sweep wrote that down yet."""
        return EXPIRED if self.state in KEY_CHANGE_PENDING and now > self.expires else self.state


@dataclass(frozen=True)
class Told:
    """What a request did to a key change, for a notice after it ran: `what` is "challenge"
    (the code to the new key), "approval" (to the admins) or "pinned"."""

    what: str
    change: KeyChange
    code: str = ""  # the code the notice carries (the member's or the admins')


def _secret(tx: Transaction) -> bytes:
    value = tx.get_value(SECRET)
    if value is None:
        value = secrets.token_hex(32)
        tx.set_value(SECRET, value)
    return bytes.fromhex(value)


def _code(secret: bytes, change_id: str, purpose: str) -> str:
    digest = hmac.new(secret, f"{change_id}/{purpose}".encode(), hashlib.sha256).digest()[:16]
    text = base64.b32encode(digest).decode().rstrip("=")
    return "-".join(text[i:i + 4] for i in range(0, len(text), 4))


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _typed(args: tuple[str, ...]) -> str:
    """A code as typed (any case, with or without its dashes, even split by spaces), in the
    form it was sent."""
    text = re.sub(r"[^A-Za-z2-7]", "", "".join(args)).upper()
    return "-".join(text[i:i + 4] for i in range(0, len(text), 4))


def changes(tx: Transaction, list_address: str | None = None) -> list[KeyChange]:
    return [KeyChange.of(doc) for doc in tx.key_changes(list_address)]


def confirming_member(tx: Transaction, list_address: str, signer: str, keywords: tuple[str, ...],
                      refused: bool) -> Member | None:
    """The member whose new key (of a key change) `signer` is, for a request that holds only
    x-confirm, or that is refused whole (nothing runs; the reply says why); None otherwise.
    The receive path let it in while the change awaited its code (stages.authorize); if the
    change moved on meanwhile, x-confirm's own reply says so. The requester as the reply sees
    them: their copy goes to the key that signed."""
    if not refused and (not keywords or set(keywords) != {"confirm"}):
        return None
    for change in reversed(changes(tx, list_address)):
        if change.new == signer:
            member = tx.get_member(list_address, change.email)
            return None if member is None else replace(member, fingerprint=signer)
    return None


def run(tx: Transaction, keys, ml: MailingList, member: Member, keyword: str, args: tuple[str, ...],
        dropped: list, told: list) -> str:
    """One key-change line of a request, inside its transaction; KeyProblem, Conflict or
    UsageError (a sentence for the reply) when it cannot run, and then nothing stays."""
    now = time.time()
    if keyword == "key-requests":
        return _shown(changes(tx, ml.address), now)
    if keyword == "key-change":
        return _request(tx, keys, ml, member, now, dropped, told)
    code = _typed(args)
    if keyword == "confirm":
        return _confirm(tx, keys, ml, member, code, now, dropped, told)
    return _approve(tx, keys, ml, member, code, now, dropped, told)


def _request(tx: Transaction, keys, ml: MailingList, member: Member, now: float, dropped: list, told: list) -> str:
    current = tx.require_member(ml.address, member.email)
    if current.fingerprint != member.fingerprint:
        raise Conflict("Send x-key-change signed by the key pinned to you now.")
    key = keys.single()
    fpr = key.fingerprint
    problem = key.problem() or (None if key.can_sign else "the key cannot sign now; a new key must sign and encrypt")
    if problem:
        raise KeyProblem(f"Refused: {problem} ({fingerprint_format(fpr)}).")
    if fpr == current.fingerprint:
        raise KeyProblem("That is the key pinned to you already; to renew it, send it with x-key-update.")
    if fpr in current.previous_fingerprints:
        raise KeyProblem(f"Refused: {fingerprint_format(fpr)} was pinned to you before; a retired key is "
                         "not pinned again by mail.")
    if any(other.fingerprint == fpr for other in tx.lists()):
        raise KeyProblem(f"Refused: {fingerprint_format(fpr)} is a list's own key.")
    if tx.member_by_fingerprint(ml.address, fpr) is not None:
        raise Conflict(f"Refused: the key {fingerprint_format(fpr)} is pinned to another member of this list.")
    pending = [c for c in changes(tx, ml.address) if c.state_at(now) in KEY_CHANGE_PENDING]
    if any(c.new == fpr and c.email != current.email for c in pending):
        raise Conflict(f"Refused: the key {fingerprint_format(fpr)} is offered in another member's key change.")
    for earlier in (c for c in pending if c.email == current.email):  # the later replaces the earlier
        tx.put_key_change(replace(earlier, state=REFUSED, ended=now, why="replaced by a later x-key-change").as_dict())
        dropped.append(earlier.new)
    change_id = secrets.token_hex(8)
    code = _code(_secret(tx), change_id, "confirm")
    change = KeyChange(change_id, ml.address, current.email, current.name, current.fingerprint, fpr, key.expires,
                       now, now + CODE_DAYS * DAY, AWAITING_CODE, _hash(code))
    tx.put_key_change(change.as_dict())
    told.append(("challenge", change_id))
    return (f"A code was sent to you encrypted to the new key {fingerprint_format(fpr)} only. Answer with "
            f"x-confirm: CODE within {CODE_DAYS} days, signed by this key or the new one.")


def _confirm(tx: Transaction, keys, ml: MailingList, member: Member, code: str, now: float, dropped: list,
             told: list) -> str:
    mine = [c for c in changes(tx, ml.address) if c.email == member.email]
    found = next((c for c in mine if hmac.compare_digest(c.code_hash, _hash(code))), None)
    if found is None:
        raise UsageError("That code is wrong: no key change of yours has it.")
    state = found.state_at(now)
    if state == EXPIRED:
        raise UsageError(f"That code has expired (a code is good for {CODE_DAYS} days); send x-key-change again.")
    if state != AWAITING_CODE:
        raise UsageError("That code was used already, or its key change was replaced.")
    confirmed = replace(found, confirmed=now)
    if ml.option("key_change_approval") == "none":
        return _pin(tx, keys, confirmed, "", now, dropped, told)
    approval = _code(_secret(tx), found.id, "approve")
    tx.put_key_change(replace(confirmed, state=AWAITING_APPROVAL, expires=now + APPROVAL_DAYS * DAY,
                              approval_hash=_hash(approval)).as_dict())
    told.append(("approval", found.id))
    return (f"Confirmed: you hold the key {fingerprint_format(found.new)}. The list's admins have been asked to "
            "approve the change; until then your current key stays pinned.")


def _approve(tx: Transaction, keys, ml: MailingList, admin: Member, code: str, now: float, dropped: list,
             told: list) -> str:
    found = next((c for c in changes(tx, ml.address) if c.approval_hash and
                  hmac.compare_digest(c.approval_hash, _hash(code))), None)
    if found is None:
        raise UsageError("No key change of this list has that approval code.")
    state = found.state_at(now)
    if state == EXPIRED:
        raise UsageError(f"That approval code has expired (it is good for {APPROVAL_DAYS} days); the member must "
                         "send x-key-change again.")
    if state != AWAITING_APPROVAL:
        raise UsageError("That approval code was used already.")
    if found.email == admin.email and any(m.role == "admin" and m.state == ACTIVE and m.email != admin.email
                                          for m in tx.members(ml.address)):
        raise Conflict("You cannot approve a change of your own key; another admin must.")
    return _pin(tx, keys, found, admin.name, now, dropped, told)


def _pin(tx: Transaction, keys, change: KeyChange, approver: str, now: float, dropped: list, told: list) -> str:
    member = tx.get_member(change.list, change.email)
    if member is None or member.fingerprint != change.old:
        raise Conflict("The member's pinned key is no longer the one the change was asked with; nothing is pinned.")
    if member.state != ACTIVE:
        raise Conflict(f"{member.name} is {member.state}; only an admin re-pins their key (`listserv member set --key`).")
    key = keys.keyring.key_infos([change.new]).get(change.new)  # as it stands now: it may have expired
    problem = "the key is not in the keyring" if key is None else key.problem()
    if problem:
        raise KeyProblem(f"The new key cannot be pinned: {problem}.")
    tx.update_member(replace(member, fingerprint=change.new, key_expires=key.expires,
                             previous_fingerprints=(*member.previous_fingerprints, change.old)))
    tx.put_key_change(replace(change, state=APPROVED, ended=now, approved_by=approver).as_dict())
    dropped.append(change.old)
    told.append(("pinned", change.id))
    return f"{member.name}'s key is now {fingerprint_format(change.new)} (was {fingerprint_format(change.old)})."


def _shown(found: list[KeyChange], now: float) -> str:
    lines = []
    for c in reversed(found[-SHOWN:]):
        state = c.state_at(now)
        when = f" until {iso(c.expires)}" if state in KEY_CHANGE_PENDING else f" {iso(c.ended or c.expires)}"
        extra = f", by {c.approved_by}" if c.approved_by else f" ({c.why})" if c.why else ""
        lines.append(f"{iso(c.requested)}  {c.name} <{c.email}>  {fingerprint_format(c.old)} -> "
                     f"{fingerprint_format(c.new)}  {state}{when}{extra}")
    return "\n".join(lines) or "No key changes."


def told(store: Store, list_address: str, events: tuple[tuple[str, str], ...]) -> tuple[Told, ...]:
    """The notices a request's key-change lines call for, with the codes they carry."""
    if not events:
        return ()
    snapshot = store.read()
    by_id = {c.id: c for c in changes(snapshot, list_address)}
    secret = bytes.fromhex(snapshot.get_value(SECRET, ""))
    purpose = {"challenge": "confirm", "approval": "approve"}
    return tuple(Told(what, by_id[change_id], _code(secret, change_id, purpose[what]) if what in purpose else "")
                 for what, change_id in events if change_id in by_id)


def sweep(store: Store, keyring: Keyring, now: float | None = None) -> list[str]:
    """Write down the pending changes past their deadline as expired, and take their new keys
    out of the keyring unless something else needs them; the fingerprints removed."""
    now = time.time() if now is None else now
    with store.transaction() as tx:
        ended = [c for c in changes(tx) if c.state in KEY_CHANGE_PENDING and c.state_at(now) == EXPIRED]
        for change in ended:
            tx.put_key_change(replace(change, state=EXPIRED, ended=now).as_dict())
    snapshot = store.read()
    removed = []
    for change in ended:
        log.info("key-change expired list=%s new=%s", change.list, change.new)
    for fingerprint in dict.fromkeys(c.new for c in ended):
        if not snapshot.fingerprint_in_use(fingerprint):
            try:
                keyring.delete(fingerprint)
            except CryptoError:  # gone already (removed by hand): what matters is that it is not there
                continue
            removed.append(fingerprint)
    return removed


def rows(store: Store, list_address: str, now: float | None = None) -> list[dict]:
    """`listserv keys pending`: every key change of the list, most recent first."""
    now = time.time() if now is None else now
    found = changes(store.read(), list_address)
    return [{"id": c.id, "email": c.email, "pseudonym": c.name, "old": c.old, "new": c.new, "state": c.state_at(now),
             "requested": iso(c.requested), "until": iso(c.expires) if c.state_at(now) in KEY_CHANGE_PENDING else None,
             "confirmed": iso(c.confirmed) if c.confirmed else None, "ended": iso(c.ended) if c.ended else None,
             "approved_by": c.approved_by or None, "why": c.why or None} for c in reversed(found)]


# Shared with listserv.invites, whose codes are made, typed and kept the same way.
def list_secret(tx, create: bool = True) -> bytes:
    """The store's code secret; made on first use (not in a read-only snapshot: `create=False`)."""
    return _secret(tx) if create else bytes.fromhex(tx.get_value(SECRET, ""))


make_code, code_hash, typed_code = _code, _hash, _typed
