"""Joining a list by invitation, with proof (x-invite, x-join, x-confirm, x-approve-join).

The shape is rotation's (listserv.rotation), and so are its codes, their hashing and secret:

  1. An admin's `x-invite` (or `listserv invite`) makes an invitation: a one-time code, 128
     bits, good for CODE_HOURS hours, for one x-join. The admin hands it over out of band.
  2. The invitee's `x-join: CODE [address=EMAIL]`, signed by their own key, which is attached,
     encrypted to the list's key (the receive path opens it by that key, stages.join). If the
     code is good and unused and the key can be pinned, the key enters the keyring and a
     challenge goes to that key at that address: address=, or else the From of the signed
     content (the envelope sender is not kept with a submission, and anyone can write it;
     the signed From is the invitee's own word, and the challenge proves the mailbox).
  3. `x-confirm: CHALLENGE` signed by the same key (authorize lets that key send x-confirm
     only while its challenge waits: any other key is an outsider).
  4. With `join_approval = admin` (the default) the admins get a notice with an APPROVAL code
     of its own (the invitee's challenge is never shown to anyone); one admin's
     `x-approve-join: CODE` pins the member. With `none` the confirmation pins them.

The uniform answer: every x-join that does not lead to a challenge -- a wrong, expired or used
code, a second x-join for a code, a key already pinned here or that cannot encrypt, no usable
address -- gets NO mail at all, and its SMTP answer was given before the code was looked at
(the same `250 Queued` any accepted request gets). An unknown signer has no pinned address:
a reply to an address they name would make the list mail anyone, and a refusal that said why
would tell a prober which codes or keys exist. What went wrong is kept in the request record
(`listserv requests` shows it refused). A challenge answered by another key is an outsider's request: the uniform
550. Failures of x-confirm by the pending key itself are answered like rotation's, to that key
at that address: its holder already proved they know a good code.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import asdict, dataclass, replace

from .errors import Conflict, KeyProblem, UsageError
from .model import (
    AWAITING_APPROVAL,
    AWAITING_CODE,
    KEY_CHANGE_PENDING,
    MailingList,
    Member,
    check_mode,
    fingerprint_format,
    iso,
    normalise_address,
)
from .rotation import code_hash, list_secret, make_code, typed_code
from .store import Store, Transaction

log = logging.getLogger("listserv.invites")
CODE_HOURS = 72
CHALLENGE_DAYS = 3
APPROVAL_DAYS = 7
HOUR, DAY = 3600, 86400
INVITED, JOINED, EXPIRED, USED = "invited", "joined", "expired", "used"
PENDING = (INVITED, *KEY_CHANGE_PENDING)
ADMIN_KEYWORDS = ("invite", "approve-join")
# A member pinned here starts on probation when the list's new_member_probation is on
# (Transaction.add_member sets it for every way in).


@dataclass(frozen=True)
class Invitation:
    id: str
    list: str
    name: str  # the pseudonym the admin gave, or "" (then the invitee's address decides)
    mode: str
    created: float
    expires: float  # the deadline of the state it is in
    state: str  # INVITED, AWAITING_CODE, AWAITING_APPROVAL, JOINED, EXPIRED or USED
    code_hash: str
    by: str  # the inviting admin's pseudonym, or "cli"
    fingerprint: str = ""
    email: str = ""
    key_expires: str | None = None
    challenge_hash: str = ""
    approval_hash: str = ""
    ended: float | None = None
    approved_by: str = ""

    @classmethod
    def of(cls, doc: dict) -> Invitation:
        return cls(**doc)

    def as_dict(self) -> dict:
        return asdict(self)

    def state_at(self, now: float) -> str:
        return EXPIRED if self.state in PENDING and now > self.expires else self.state


def invitations(tx: Transaction, list_address: str | None = None) -> list[Invitation]:
    return [Invitation.of(doc) for doc in tx.invites(list_address)]


def invite(tx: Transaction, ml: MailingList, by: str, name: str = "", mode: str = "immediate",
           role: str = "member") -> str:
    """A new invitation; its code (shown once: only its hash is kept)."""
    if role.lower() != "member":
        raise UsageError("An invitation is for a member; make them an admin once they joined.")
    mode = check_mode(mode.lower())
    if name and any(m.name.lower() == name.lower() for m in tx.members(ml.address)):
        raise Conflict(f"The pseudonym {name} is taken on this list.")
    now, invite_id = time.time(), secrets.token_hex(8)
    code = make_code(list_secret(tx), invite_id, "invite")
    tx.put_invite(Invitation(invite_id, ml.address, name, mode, now, now + CODE_HOURS * HOUR, INVITED,
                             code_hash(code), by).as_dict())
    return code


def run(tx: Transaction, ml: MailingList, admin: Member, keyword: str, args: tuple[str, ...], keys,
        told: list) -> str:
    """An admin's x-invite or x-approve-join, inside the request's transaction."""
    if keyword == "invite":
        wanted = {}
        for pair in args:
            name, equals, value = pair.partition("=")
            if not equals or name.lower() not in ("name", "mode", "role") or name.lower() in wanted:
                raise UsageError(f"'{pair}' is not one of name=, mode=, role=.")
            wanted[name.lower()] = value
        code = invite(tx, ml, admin.name, wanted.get("name", ""), wanted.get("mode", "immediate"),
                      wanted.get("role", "member"))
        return (f"Invitation code: {code}\nIt is good for {CODE_HOURS} hours and for one x-join. Hand it to the "
                "person out of band, never by this list.")
    code = typed_code(args)
    found = next((i for i in invitations(tx, ml.address) if i.approval_hash and
                  hmac.compare_digest(i.approval_hash, code_hash(code))), None)
    if found is None or found.state_at(time.time()) != AWAITING_APPROVAL:
        raise UsageError("No invitation of this list awaits approval with that code (wrong, expired or used).")
    return _pin(tx, keys, ml, found, admin.name, told)


def join(tx: Transaction, keys, ml: MailingList, signer: str, args: tuple[str, ...], signed_from: str | None,
         told: list) -> str:
    """x-join: the invitation set to its challenge, or UsageError with the reason for the log
    only (the invitee hears nothing, see the module docstring)."""
    now = time.time()
    code = typed_code(tuple(a for a in args if "=" not in a))
    address = next((a.partition("=")[2] for a in args if a.lower().startswith("address=")), signed_from)
    found = next((i for i in invitations(tx, ml.address) if hmac.compare_digest(i.code_hash, code_hash(code))), None)
    if found is None or found.state_at(now) != INVITED:
        raise UsageError("code-unknown-expired-or-used")
    key = keys.single()
    if key.fingerprint != signer or key.problem():
        raise KeyProblem("key-unusable")
    if tx.member_by_fingerprint(ml.address, signer) is not None or any(l.fingerprint == signer for l in tx.lists()) \
            or any(i.fingerprint == signer and i.state_at(now) in PENDING for i in invitations(tx)):
        raise Conflict("key-pinned-or-pending")
    try:
        email = normalise_address(address or "", "address")
    except UsageError:
        raise UsageError("no-address") from None
    if tx.get_member(ml.address, email) is not None:
        raise Conflict("address-taken")
    challenge = make_code(list_secret(tx), found.id, "join-confirm")
    tx.put_invite(replace(found, state=AWAITING_CODE, expires=now + CHALLENGE_DAYS * DAY, fingerprint=signer,
                          email=email, key_expires=key.expires, challenge_hash=code_hash(challenge)).as_dict())
    told.append(("challenge", found.id))
    return "challenge sent"


def confirm(tx: Transaction, keys, ml: MailingList, signer: str, args: tuple[str, ...], told: list) -> str:
    """x-confirm by an invitee's key: proof that they hold it and read the address."""
    now = time.time()
    mine = [i for i in invitations(tx, ml.address) if i.fingerprint == signer and i.state in PENDING]
    found = next((i for i in mine if hmac.compare_digest(i.challenge_hash, code_hash(typed_code(args)))), None)
    if found is None:
        raise UsageError("That code is wrong: it is not the challenge sent to this key.")
    if found.state_at(now) == EXPIRED:
        raise UsageError(f"That challenge has expired (it is good for {CHALLENGE_DAYS} days); ask for a new invitation.")
    if found.state != AWAITING_CODE:
        raise UsageError("That challenge was answered already; the admins decide now.")
    if ml.option("join_approval") == "none":
        return _pin(tx, keys, ml, found, "", told)
    approval = make_code(list_secret(tx), found.id, "join-approve")
    tx.put_invite(replace(found, state=AWAITING_APPROVAL, expires=now + APPROVAL_DAYS * DAY,
                          approval_hash=code_hash(approval)).as_dict())
    told.append(("approval", found.id))
    return (f"Confirmed: you hold the key {fingerprint_format(signer)} and read this address. The list's admins "
            "have been asked to approve your joining; you will hear when they have.")


def _pin(tx: Transaction, keys, ml: MailingList, found: Invitation, approver: str, told: list) -> str:
    from .membership import (
        unique_pseudonym,  # membership imports the store helpers this module needs too
    )
    if tx.member_by_fingerprint(ml.address, found.fingerprint) or tx.get_member(ml.address, found.email):
        raise Conflict("That key or address was pinned meanwhile; nothing is pinned.")
    key = keys.keyring.key_infos([found.fingerprint]).get(found.fingerprint)
    problem = "the key is not in the keyring" if key is None else key.problem()
    if problem:
        raise KeyProblem(f"The invitee's key cannot be pinned: {problem}.")
    member = Member(ml.address, found.email, found.fingerprint,
                    unique_pseudonym(tx, ml.address, found.name or None, found.email), mode=found.mode,
                    key_expires=key.expires, added=iso())
    tx.add_member(member)  # on probation when the list says so (Transaction.add_member)
    tx.put_invite(replace(found, state=JOINED, ended=time.time(), approved_by=approver).as_dict())
    told.append(("pinned", found.id))
    return f"{member.name} joined {ml.address} with the key {fingerprint_format(found.fingerprint)}."


@dataclass(frozen=True)
class Told:
    """What a join step tells whom: "challenge" (to the invitee's key), "approval" (to the
    admins), "pinned" (the new member and the admins)."""

    what: str
    invitation: Invitation
    code: str = ""


def told(store: Store, list_address: str, events: tuple[tuple[str, str], ...]) -> tuple[Told, ...]:
    if not events:
        return ()
    snapshot = store.read()
    by_id = {i.id: i for i in invitations(snapshot, list_address)}
    secret = list_secret(snapshot, create=False)
    purpose = {"challenge": "join-confirm", "approval": "join-approve"}
    return tuple(Told(what, by_id[i], make_code(secret, i, purpose[what]) if what in purpose else "")
                 for what, i in events if i in by_id)


def sweep(store: Store, keyring, now: float | None = None) -> list[str]:
    """Pending invitations past their deadline written down as expired; the keys of those that
    had one leave the keyring unless something else needs them."""
    now = time.time() if now is None else now
    with store.transaction() as tx:
        ended = [i for i in invitations(tx) if i.state in PENDING and i.state_at(now) == EXPIRED]
        for found in ended:
            tx.put_invite(replace(found, state=EXPIRED, ended=now).as_dict())
    snapshot, removed = store.read(), []
    for fingerprint in dict.fromkeys(i.fingerprint for i in ended if i.fingerprint):
        if not snapshot.fingerprint_in_use(fingerprint):
            keyring.forget(fingerprint)
            removed.append(fingerprint)
    for found in ended:
        log.info("invitation expired list=%s id=%s", found.list, found.id)
    return removed
