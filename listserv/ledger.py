"""What the pipeline writes down besides the mail itself: each post's signature claimed once,
each refusal kept for admins, each bounce counted against its member.

Called by listserv.pipeline only; the stages it applies (`replayed`, BOUNCE_NOTICE_AT) are
decided elsewhere and are pure.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace


from . import keywatch
from .deliver import Outcome
from .errors import Conflict, ListservError, RateLimited, Refusal, Unanswered, Unauthorized, UsageError
from .errors import KeyProblem
from .holds import Held, Holds
from .keyring import KeyInfo, Keyring, StagedKeys
from .keyupdate import KEY_COMMANDS, Renewals, key_command, refresh
from .revocation import Revocation
from . import contacts as contact_book, invites, rotation, statements
from .membership import key_problem, list_address_problem, require_an_admin_left, set_option, unique_pseudonym
from .model import (ACTIVE, Kind, MailingList, Member, Rejection, check_mode, check_role, fingerprint_format, iso,
                    normalise_address)
from .options import OPTIONS
from .stages.commands import Request, attached_keys, help_lines
from .stages.renew import offered_keys
from .stages.statement import Statement, read_statement
from .spool import Job, Spool
from .stages.authorize import Authorized, replayed
from .stages.open import Opened
from .stages.route import Route
from .stages.sendkey import SENDKEY_PER_DAY, KeyRequest
from .store import Store, Transaction

log = logging.getLogger("listserv.settle")
BOUNCE_NOTICE_AT = 3  # admins hear of a member's bounces when they reach this count
OWNER_PER_HOUR = 20  # messages LIST-owner@ forwards to the admins in an hour; more hear 452
HOUR, DAY = 3600, 24 * 3600


@dataclass(frozen=True)
class Counted:
    """A bounce counted against a member (their count as it now stands)."""

    member: Member
    source: str  # "verp" (a report to the VERP address) or "rcpt" (the relay refused them)
    paused: str = ""  # the status code (5.1.1, or 550) of the failure that just paused them, if it did
    at: float = 0.0  # when it was counted

    @property
    def reached(self) -> bool:
        """The count has just reached BOUNCE_NOTICE_AT: the admins are told, once."""
        return self.member.bounces == BOUNCE_NOTICE_AT


def claim_signature(events: Store, spool: Spool, job: Job, opened: Opened, sender: Authorized,
                    mailing_list: MailingList, keep: int) -> None:
    """Take the post's signature for this list once in the whole home, or undo `job`:
    Unauthorized("replay") when it was taken before (listserv.stages.authorize.replayed).
    Claimed after the job is on disk: a crash in between may deliver a post twice, never
    lose one that a client will retry (claiming first would refuse the retry)."""
    with _undone_on_error(spool, job):
        with events.transaction() as tx:
            now = time.time()
            earlier = tx.lists_that_took(opened.signature_id, now, keep)
            if replayed(earlier, mailing_list, sender.addressed):
                raise Unauthorized("replay", signer=opened.signer)
            tx.record_signature(opened.signature_id, mailing_list.address, now + keep)


def refuse_replay(events: Store, opened: Opened, sender: Authorized, mailing_list: MailingList, keep: int) -> None:
    """Unauthorized("replay") now, before any refusal that says more: a captured message sent
    again hears the one sentence every outsider hears. (claim_signature decides for good.)"""
    earlier = events.read().lists_that_took(opened.signature_id, time.time(), keep)
    if replayed(earlier, mailing_list, sender.addressed):
        raise Unauthorized("replay", signer=opened.signer)


def refuse_owner_rate(events: Store, mailing_list: MailingList) -> None:
    """RateLimited (452) when LIST-owner@ forwarded OWNER_PER_HOUR in the last hour: said
    before the message is sealed, so a flood costs no gpg run. (claim_owner_slot decides.)"""
    _owner_rate(events.read(), mailing_list, time.time())


def claim_owner_slot(events: Store, spool: Spool, job: Job, mailing_list: MailingList) -> None:
    """Count `job` against LIST-owner@'s hourly share, or undo it with RateLimited."""
    with _undone_on_error(spool, job):
        with events.transaction() as tx:
            now = time.time()
            _owner_rate(tx, mailing_list, now)
            tx.rate_take(mailing_list.address, "owner", now)


def _owner_rate(tx: Transaction, mailing_list: MailingList, now: float) -> None:
    if tx.rate_count(mailing_list.address, "owner", now, HOUR) >= OWNER_PER_HOUR:
        raise RateLimited("owner-rate")


def refuse_key_rate(events: Store, request: KeyRequest, mailing_list: MailingList) -> None:
    """Unanswered when this address had the key in the last day, or the list sent
    SENDKEY_PER_DAY keys in it. (claim_key_reply decides.)"""
    _key_rate(events.read(), request, mailing_list, time.time())


def claim_key_reply(events: Store, spool: Spool, job: Job, request: KeyRequest, mailing_list: MailingList) -> None:
    """Count `job` against the sender's and the list's daily replies, or undo it with Unanswered."""
    with _undone_on_error(spool, job):
        with events.transaction() as tx:
            now = time.time()
            _key_rate(tx, request, mailing_list, now)
            tx.rate_take(mailing_list.address, "sendkey", now, request.digest)


def _key_rate(tx: Transaction, request: KeyRequest, mailing_list: MailingList, now: float) -> None:
    if tx.rate_count(mailing_list.address, "sendkey", now, DAY, request.digest):
        raise Unanswered("sendkey-sender-rate")
    if tx.rate_count(mailing_list.address, "sendkey", now, DAY) >= SENDKEY_PER_DAY:
        raise Unanswered("sendkey-list-rate")


@contextlib.contextmanager
def _undone_on_error(spool: Spool, job: Job) -> Iterator[None]:
    try:
        yield
    except BaseException:
        spool.remove(job)  # the client hears 451 or the refusal: keep no copy
        raise


def record_rejection(events: Store, store: Store, refusal: Refusal, route: Route) -> None:
    """Keep the specific reason where admins can read it (`listserv rejections`); the sender
    heard only the reply. Not for a list that does not exist, and never at the cost of the reply."""
    with contextlib.suppress(ListservError):
        if store.read().get_list(route.list) is None:
            return
        with events.transaction() as tx:
            tx.add_rejection(Rejection(route.list, time.time(), route.kind, refusal.reason,
                                       f"{refusal.code} {refusal.status}", refusal.signer, refusal.ref))


def count_missed(events: Store, mailing_list: MailingList, unusable: tuple[str, ...]) -> None:
    """One more post missed by each member the fan-out found without a usable key (the key
    watch tells them, listserv.keywatch). Never at the cost of the post: a store that cannot
    be written loses the count, not the copies."""
    if not unusable:
        return
    with contextlib.suppress(ListservError), events.transaction() as tx:
        keywatch.count_missed(tx, mailing_list.address, unusable, time.time())


def count_bounce(store: Store, list_address: str, member: Member | None, source: str,
                 permanent: str = "") -> Counted | None:
    """One more bounce for `member`: None when there is none (an unknown VERP token), or they
    left meanwhile. `permanent`: the status code when their mailbox refused for good (5.x.x);
    with the list's option bounce_pause that pauses them (Member.bounce_paused), in the same
    transaction, and the Counted says so -- once: a member already paused is only counted."""
    if member is None:
        return None
    with store.transaction() as tx:
        if tx.get_member(list_address, member.email) is None:
            return None
        tx.count_bounce(list_address, member.email)
        current = tx.require_member(list_address, member.email)
        pause = bool(permanent) and not current.bounce_paused and \
            tx.require_list(list_address).option("bounce_pause")
        if pause:
            current = replace(current, bounce_paused=True)
            tx.update_member(current)
            log.info("bounce-paused list=%s member=%s source=%s status=%s", list_address, current.fingerprint,
                     source, permanent)
        return Counted(current, source, permanent if pause else "", time.time())


def count_refused(store: Store, outcome: Outcome) -> dict[int, Counted]:
    """A member the relay refused at RCPT (5xx) bounced, as if their server had reported it to
    the VERP address -- not when the relay refused every recipient of a job of several: that
    is the relay, not the members. By the copy's index in the job."""
    if outcome.job.kind in (Kind.SENDKEY, Kind.RESEND):  # to someone who is no member: no member bounced
        return {}
    refused = [f for f in outcome.failures if f.reason.startswith("rcpt-5")]
    if outcome.sent == 0 and outcome.copies > 1 and len(refused) == outcome.copies:
        return {}
    counted = {}
    for failure in refused:
        found = count_bounce(store, outcome.job.list, _by_email(store, outcome.job.list, failure.email), "rcpt",
                             _reply_status(failure.reason))
        if found is not None:
            counted[failure.index] = found
            log.info("bounce list=%s member=%s source=rcpt qid=%s", outcome.job.list, found.member.fingerprint,
                     outcome.job.qid)
    return counted


def _reply_status(reason: str) -> str:
    """rcpt-550-5.1.1 -> 5.1.1; rcpt-550 (no enhanced code) -> 550."""
    parts = reason.split("-")
    return parts[2] if len(parts) > 2 else parts[1]


def _by_email(store: Store, list_address: str, email: str) -> Member | None:
    return store.read().get_member(list_address, email)


@dataclass(frozen=True)
class Done:
    """A request's outcome, as kept with it: who asked, each line's result, what follows."""

    requester: Member  # as they were when the request ran
    results: tuple[tuple[str, str], ...]  # (the line as written, its result in words)
    refused: str | None  # why nothing ran; None: every line ran
    attach_key: bool = False  # x-get-listkey: the reply carries the list's key
    left: bool = False  # x-leave: the requester is gone; the admins are told
    changes: tuple[str, ...] = ()  # what admin commands changed: every admin is told
    dropped: tuple[str, ...] = ()  # fingerprints of members gone: their keys may leave the keyring
    suspended: bool = False  # the request revoked the requester's key: no reply can be encrypted to it
    rotated: tuple[tuple[str, str], ...] = ()  # (what, key change id): notices listserv.rotation.told makes
    rejected: tuple[tuple[str, str], ...] = ()  # (poster's fingerprint, reason): held posts rejected
    signed_for: tuple[str, ...] = ()  # x-sign-this met its quorum: the pseudonyms who get the statement
    signed: tuple[tuple[str, str, bytes], ...] = field(default=(), compare=False)  # its files; never kept

    @classmethod
    def of(cls, record: dict) -> Done:
        return cls(Member(**record["requester"]), tuple(tuple(r) for r in record["results"]), record["refused"],
                   record["attach_key"], record["left"], tuple(record.get("changes", ())),
                   tuple(record.get("dropped", ())), record.get("suspended", False),
                   tuple(tuple(r) for r in record.get("rotated", ())),
                   tuple(tuple(r) for r in record.get("rejected", ())), tuple(record.get("signed_for", ())))

    def record(self, qid: str, list_address: str, keywords: tuple[str, ...]) -> dict:
        return {"qid": qid, "list": list_address, "at": time.time(), "signer": self.requester.fingerprint,
                "commands": list(keywords), "requester": asdict(self.requester),
                "results": [list(r) for r in self.results], "refused": self.refused,
                "attach_key": self.attach_key, "left": self.left, "changes": list(self.changes),
                "dropped": list(self.dropped), "suspended": self.suspended,
                "rotated": [list(r) for r in self.rotated], "rejected": [list(r) for r in self.rejected],
                "signed_for": list(self.signed_for)}


class _LineFailed(Exception):
    def __init__(self, sentence: str):
        super().__init__(sentence)
        self.sentence = sentence


def run_request(store: Store, events: Store, keyring: Keyring, qid: str, mailing_list: MailingList,
                signer: str, request: Request, content: bytes = b"", revoked: tuple[Revocation, ...] = (),
                holds: Holds | None = None, contacts: Keyring | None = None) -> Done:
    """Run a request's commands, all of them or none, in one store transaction, once per queue
    id: run again after a crash it gives the outcome it had (a leaver is gone by then). The
    signer must still be a member in good standing, as for a post -- unless the request itself
    carried the revocation of their key (`revoked`, taken in before): then nothing runs, and
    the Done says so. `content`: the request's signed content, for its attached keys, the key
    data it offers (attached, or in an Autocrypt header) for x-key-update -- or, without that
    command, taken quietly if it renews the signer's key -- and x-sign-this's statement, signed
    after the transaction (again on a rerun: the signed files are never kept)."""
    member, offered, attachments = None, offered_keys(content), attached_keys(content)
    statement = _statement(request, content)
    renewals = Renewals(keyring, offered)
    book = contact_book.RequestContacts(contacts, attachments)  # x-add-contact's key: the contacts keyring
    try:
        with store.transaction() as tx:
            kept = tx.get_request(qid)
            if kept is not None:
                return _signed(Done.of(kept), keyring, mailing_list, statement)
            member = tx.member_by_fingerprint(mailing_list.address, signer) or \
                rotation.confirming_member(tx, mailing_list.address, signer, request.keywords, bool(request.refused))
            if member is None:
                raise Unauthorized("sender-removed", signer=signer)
            if member.state != ACTIVE and signer not in {r.fingerprint for r in revoked}:
                raise Unauthorized("key-revoked", signer=signer)
            if member.state != ACTIVE:
                done = Done(member, (), None, suspended=True)
            elif request.refused:
                done = Done(member, (), request.refused)
            else:
                done = _run(tx, events, _Keys(keyring, attachments), renewals, mailing_list, member, request, holds,
                            book, statement)
            tx.add_request(done.record(qid, mailing_list.address, request.keywords))
    except _LineFailed as failed:  # the transaction is undone: nothing of the request stays
        done = Done(member, (), failed.sentence)
        with store.transaction() as tx:
            tx.add_request(done.record(qid, mailing_list.address, request.keywords))
    finally:
        renewals.close()
        book.close()
    if "remove-contact" in request.keywords and not done.refused:
        book.sweep(store.read())
    log.info("request qid=%s list=%s signer=%s commands=%s outcome=%s", qid, mailing_list.address, signer,
             ",".join(request.keywords) or "-", "refused" if done.refused else "done")
    if "key-update" not in request.keywords and not (done.left or done.suspended):
        refresh(store, keyring, done.requester, offered)  # a renewed key along with other commands
    return _signed(done, keyring, mailing_list, statement)


def _statement(request: Request, content: bytes) -> Statement | UsageError | None:
    """x-sign-this's statement, or why there is none to sign (its line says so when it runs)."""
    if "sign-this" not in request.keywords or request.refused:
        return None
    if request.keywords.count("sign-this") > 1:
        return UsageError("A request may ask for one statement only.")
    try:
        return read_statement(content)
    except UsageError as exc:
        return exc


def _signed(done: Done, keyring: Keyring, mailing_list: MailingList, statement) -> Done:
    if not done.signed_for or not isinstance(statement, Statement):
        return done
    return replace(done, signed=statements.sign(keyring, mailing_list, statement))


class _Keys:
    """The keys attached to a request, staged (once, when x-add-member first asks); the ones
    pinned go into the keyring only once every line has run (`adopt`), inside the store
    transaction, so a request that fails leaves no key behind."""

    def __init__(self, keyring: Keyring, attachments: tuple[bytes, ...]):
        self.keyring, self.attachments = keyring, attachments
        self.staged: list[StagedKeys] | None = None
        self.pinned: list[tuple[StagedKeys, str]] = []

    def _all(self) -> list[StagedKeys]:
        if self.staged is None:
            self.staged = []
            for data in self.attachments:
                self.staged.append(self.keyring.stage(data))
        return self.staged

    def one(self, wanted: str | None) -> KeyInfo:
        candidates = [(staged, key) for staged in self._all() for key in staged.keys]
        if wanted:
            candidates = [(s, k) for s, k in candidates if k.fingerprint == wanted.upper()]
        if len(candidates) != 1:
            raise KeyProblem(f"The request holds {len(candidates)} matching keys; attach exactly one, or say key=FINGERPRINT.")
        staged, key = candidates[0]
        # A copy sent without the revocation the keyring holds is no less revoked.
        held = {k.fingerprint for k in self.keyring.listed([key.fingerprint]) if k.validity == "r"}
        problem = key_problem(key, held)
        if problem:
            raise KeyProblem(f"Refused: {problem} ({key.fingerprint}).")
        self.pinned.append((staged, key.fingerprint))
        return key

    def single(self) -> KeyInfo:
        """The one certificate attached (x-key-change), kept for adoption; the caller judges it."""
        candidates = [(staged, key) for staged in self._all() for key in staged.keys]
        if len(candidates) != 1:
            raise KeyProblem(f"Attach exactly one certificate, your new public key; this request holds "
                             f"{len(candidates)}.")
        self.pinned.append((candidates[0][0], candidates[0][1].fingerprint))
        return candidates[0][1]

    def adopt(self) -> None:
        for staged, fingerprint in self.pinned:
            staged.adopt([fingerprint])

    def close(self) -> None:
        for staged in self.staged or ():
            staged.close()


def _run(tx, events: Store, keys: _Keys, renewals: Renewals, mailing_list: MailingList, member: Member,
         request: Request, holds: Holds | None = None, book: contact_book.RequestContacts | None = None,
         statement=None) -> Done:
    results, changes, dropped, rotated, signed_for = [], [], [], [], []
    decisions = _Decisions(holds)
    try:
        for index, line in enumerate(request.lines):
            try:
                if line.command.keyword in KEY_COMMANDS:
                    result = key_command(tx, renewals, member, line)
                elif line.command.keyword == "sign-this":
                    result = _sign_this(tx, mailing_list, member, statement, changes, signed_for)
                else:
                    result = _one(tx, events, keys, mailing_list, member, line,
                                  last=index == len(request.lines) - 1, changes=changes, dropped=dropped,
                                  rotated=rotated, decisions=decisions, book=book)
            except ListservError as exc:
                raise _LineFailed(f"Line {line.number} ({line.text}): {exc} Nothing was done.") from None
            results.append((line.text, result))
        keys.adopt()  # inside the transaction: if a key cannot be copied, no member is stored
        if book is not None:
            book.adopt()  # a contact's key, into the contacts keyring: likewise
        renewals.adopt()
        decisions.apply()  # the held posts move last: a line that failed moved none
    finally:
        keys.close()
    keywords = request.keywords
    requester = member
    if any(what == "pinned" for what, _ in rotated):  # the requester's own new key may be pinned now: reply to it
        requester = tx.get_member(mailing_list.address, member.email) or member
    return Done(requester, tuple(results), None, "get-listkey" in keywords, "leave" in keywords,
                tuple(changes), tuple(dropped), rotated=tuple(rotated), rejected=tuple(decisions.rejected),
                signed_for=tuple(signed_for))


def _sign_this(tx, ml: MailingList, member: Member, statement, changes: list, signed_for: list) -> str:
    if not isinstance(statement, Statement):
        raise statement
    asked = statements.ask(tx, tx.require_list(ml.address), member, statement, time.time())
    changes.append(asked.change)
    signed_for.extend(asked.signed_for)
    return asked.result


def _one(tx, events: Store, keys: _Keys, ml: MailingList, member: Member, line, last: bool, changes: list,
         dropped: list, rotated: list, decisions: _Decisions | None = None,
         book: contact_book.RequestContacts | None = None) -> str:
    keyword, args = line.command.keyword, line.arguments
    if keyword in contact_book.KEYWORDS and book is not None:
        return book.run(tx, ml.address, keyword, args, changes)
    if keyword in HOLD_COMMANDS and decisions is not None:
        return decisions.run(tx, ml, keyword, args, line.rest, changes)
    if keyword in rotation.KEYWORDS:
        return rotation.run(tx, keys, ml, member, keyword, args, dropped, rotated)
    if keyword in invites.ADMIN_KEYWORDS:  # its events share `rotated`: each told() keeps only its own ids
        return invites.run(tx, ml, member, keyword, args, keys, rotated)
    if keyword == "help":
        return "\n".join(help_lines(member, tx.require_list(ml.address)))
    if keyword == "status":
        return _status(tx.require_member(ml.address, member.email))
    if keyword == "statements":
        return "\n".join(statements.shown(tx.statements(ml.address))) or "No statements."
    if keyword == "get-listkey":
        return f"The list's key ({fingerprint_format(ml.fingerprint)}) is attached."
    if keyword == "mode":
        current = tx.require_member(ml.address, member.email)
        mode = check_mode(args[0].lower())
        tx.update_member(replace(current, mode=mode))
        return f"Your mode is {mode}." + ("" if current.mode != mode else " (It was already.)")
    if keyword in ("pause", "resume"):
        current = tx.require_member(ml.address, member.email)
        if keyword == "pause":
            tx.update_member(replace(current, paused=True))
            return "You are paused: no posts or digests come to you until x-resume; urgent alerts still do."
        # Signed by their pinned key: proof enough that the one who holds it has the mailbox
        # back after a bounce paused them (docs/moderation.md).
        tx.update_member(replace(current, paused=False, bounce_paused=False))
        if current.bounce_paused:
            log.info("bounce-resumed list=%s member=%s by=member", ml.address, current.fingerprint)
            return "You get posts again: delivery was paused because your mailbox refused mail."
        return "You get posts again." + ("" if current.paused else " (You were not paused.)")
    if keyword == "resume-member":
        target = tx.require_member(ml.address, normalise_address(args[0], "member address"))
        tx.update_member(replace(target, paused=False, bounce_paused=False))
        if target.bounce_paused:
            log.info("bounce-resumed list=%s member=%s by=%s", ml.address, target.fingerprint, member.fingerprint)
        changes.append(f"resumed {target.name} <{target.email}>")
        was = "" if target.paused or target.bounce_paused else " (They were not paused.)"
        return f"{target.name} <{target.email}> gets posts again.{was}"
    if keyword == "leave":
        if not last:
            raise UsageError("x-leave must be the last command of a request.")
        try:
            require_an_admin_left(tx, ml.address, member)
        except Conflict:
            raise Conflict("You are the list's last admin, who cannot leave; make another member an admin first.") from None
        tx.remove_member(ml.address, member.email)
        dropped.append(member.fingerprint)
        return f"You have left {ml.address}. This is the last message you get from it."
    if keyword == "list-members":
        return "\n".join(_shown_member(m) for m in tx.members(ml.address)) or "The list has no members."
    if keyword == "show-options":
        mailing_list = tx.require_list(ml.address)
        return "\n".join(f"{name} = {mailing_list.option(name)!r}" for name in OPTIONS)
    if keyword == "rejections":
        if args and not (args[0].isdigit() and 0 < int(args[0]) <= 1000):
            raise UsageError(f"'{args[0]}' is not a number from 1 to 1000.")
        shown = events.read().rejections(ml.address)[-(int(args[0]) if args else 20):]
        return "\n".join(f"{iso(r.at)}  ref {r.ref}  {r.kind}  {r.reply}  {r.reason}  signer {r.signer or '-'}"
                         for r in shown) or "No refused submissions."
    if keyword == "add-member":
        email = normalise_address(args[0], "member address")
        problem = list_address_problem(email, [m.address for m in tx.lists()])
        if problem:
            raise UsageError(f"{problem}.")
        wanted = _pairs(args[1:], ("name", "mode", "role", "key"))
        key = keys.one(wanted.get("key"))
        added = Member(ml.address, email, key.fingerprint, unique_pseudonym(tx, ml.address, wanted.get("name"), email),
                       mode=check_mode(wanted.get("mode", "immediate").lower()),
                       role=check_role(wanted.get("role", "member").lower()), key_expires=key.expires, added=iso())
        tx.add_member(added)
        changes.append(f"added {added.name} <{email}>, key {fingerprint_format(key.fingerprint)}, "
                       f"mode {added.mode}, role {added.role}")
        return f"Added {added.name} <{email}> with the key {fingerprint_format(key.fingerprint)}."
    if keyword == "remove-member":
        target = tx.require_member(ml.address, normalise_address(args[0], "member address"))
        require_an_admin_left(tx, ml.address, target)
        tx.remove_member(ml.address, target.email)
        dropped.append(target.fingerprint)
        changes.append(f"removed {target.name} <{target.email}>")
        return f"Removed {target.name} <{target.email}>."
    if keyword == "set-member":
        target = tx.require_member(ml.address, normalise_address(args[0], "member address"))
        wanted = _pairs(args[1:], ("name", "mode", "role", "key"))
        changed = replace(
            target,
            name=unique_pseudonym(tx, ml.address, wanted["name"], target.email) if "name" in wanted else target.name,
            mode=check_mode(wanted.get("mode", target.mode).lower()),
            role=check_role(wanted.get("role", target.role).lower()))
        if target.role == "admin" and changed.role != "admin":
            require_an_admin_left(tx, ml.address, target)
        if "key" in wanted:  # an admin re-pins, after checking out of band (docs/keys.md)
            key = keys.one(wanted["key"])
            changed = replace(changed, fingerprint=key.fingerprint, key_expires=key.expires, state=ACTIVE)
            if key.fingerprint != target.fingerprint:
                dropped.append(target.fingerprint)
        tx.update_member(changed)
        pinned = f", key {fingerprint_format(changed.fingerprint)}" if "key" in wanted else ""
        changes.append(f"set {target.name} <{target.email}>: name {changed.name}, mode {changed.mode}, "
                       f"role {changed.role}{pinned}")
        return f"{changed.name} <{changed.email}>: mode {changed.mode}, role {changed.role}{pinned}."
    if keyword == "emergency":
        wanted = args[0].lower() == "on"
        if bool(tx.require_list(ml.address).option("emergency")) == wanted:
            raise UsageError(f"The emergency is already {args[0].lower()}.")
        set_option(tx, ml.address, "emergency", args[0].lower())
        changes.append(f"switched the emergency {'on: every post is held' if wanted else 'off'}")
        return (f"The emergency is on: every post to {ml.address} is held for the admins; admins' urgent alerts "
                "still go out at once." if wanted else f"The emergency is off: posts to {ml.address} go out again.")
    if keyword == "set-option":
        option, _, value = line.rest.partition(" ")
        option = option.strip().rstrip(",").lower()
        _, parsed = set_option(tx, ml.address, option, value.strip())
        changes.append(f"set {option} to {parsed!r}")
        return f"{option} = {parsed!r}"
    raise UsageError(f"x-{keyword} cannot be run here.")


HOLD_COMMANDS = ("held", "approve", "reject", "discard", "release")


class _Decisions:
    """Decisions on held posts (listserv.holds), checked as their lines run and carried out
    only once every line of the request has run, inside its transaction."""

    def __init__(self, holds: Holds | None):
        self.holds = holds
        self.todo: list[tuple[str, Held, str]] = []
        self.rejected: list[tuple[str, str]] = []

    def run(self, tx, ml: MailingList, keyword: str, args: tuple[str, ...], rest: str, changes: list) -> str:
        if keyword == "release":
            target = tx.require_member(ml.address, normalise_address(args[0], "member address"))
            tx.update_member(replace(target, probation=False))
            changes.append(f"released {target.name} from probation")
            return f"{target.name} is no longer on probation." + ("" if target.probation else " (They were not.)")
        if self.holds is None:
            raise UsageError(f"x-{keyword} cannot be run here.")
        if keyword == "held":
            shown = [f"{h.id}  {h.kind}  {h.pseudonym}  {h.reason}  since {iso(h.at)}" for h in self.holds.waiting(ml.address)]
            return "\n".join(shown) or "Nothing is held."
        if keyword == "approve" and self.holds.released(args[0].lower()):  # run again after a crash
            return f"{args[0]} was approved; it goes out to the list."
        held = self.holds.get(ml.address, args[0])
        if held.id in {h.id for _, h, _ in self.todo}:
            raise UsageError(f"The request decides on {held.id} twice.")
        poster = tx.member_by_fingerprint(ml.address, held.signer)
        if keyword == "approve" and (poster is None or not poster.active):
            raise Conflict(f"Its sender ({held.pseudonym}) is no longer a member in good standing; it cannot go out. "
                           "Reject or discard it.")
        reason = rest.partition(" ")[2].strip() if keyword == "reject" else ""
        self.todo.append((keyword, held, reason))
        if keyword == "reject" and poster is not None:
            self.rejected.append((held.signer, reason))
        changes.append(f"{keyword} held {held.id} by {held.pseudonym}")
        return {"approve": f"{held.id} is approved; it goes out to the list.",
                "reject": f"{held.id} is rejected; {held.pseudonym} is told.",
                "discard": f"{held.id} is discarded."}[keyword]

    def apply(self) -> None:
        for keyword, held, _ in self.todo:
            if keyword == "approve":
                self.holds.approve(held)
            else:
                self.holds.drop(held, keyword + "ed" if keyword == "discard" else "rejected")


def _pairs(args: tuple[str, ...], allowed: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for pair in args:
        name, equals, value = pair.partition("=")
        if not equals or name.lower() not in allowed or name.lower() in found:
            raise UsageError(f"'{pair}' is not one of {', '.join(a + '=' for a in allowed)}.")
        found[name.lower()] = value
    return found


def _shown_member(m: Member) -> str:
    usable = m.key_expires or "no expiry"
    return (f"{m.name} <{m.email}>  {fingerprint_format(m.fingerprint)}  {m.mode}{', paused' if m.paused else ''}"
            f"{', bounce-paused' if m.bounce_paused else ''}, "
            f"{m.role}, {m.state}, "
            f"key usable until {usable}")


def _status(member: Member) -> str:
    expires = member.key_expires or "no expiry"
    paused = ", paused" if member.paused else ""
    if member.bounce_paused:
        paused += ", paused because your mailbox refused mail (x-resume restarts delivery)"
    return (f"You are {member.name}, mode {member.mode}{paused}, role {member.role}; your key "
            f"{fingerprint_format(member.fingerprint)} is usable until {expires}.")


def forget_keys(store: Store, keyring: Keyring, done: Done) -> None:
    """The keys of members a request removed (a leaver's too, after their last reply was
    encrypted to it) leave the keyring, unless another membership still pins them."""
    snapshot = store.read()
    for fingerprint in done.dropped:
        if not snapshot.fingerprint_in_use(fingerprint):
            keyring.forget(fingerprint)
    rotation.sweep(store, keyring)  # key changes past their deadline: their new keys leave too
    invites.sweep(store, keyring)  # invitations past their deadline: an invitee's key leaves too
