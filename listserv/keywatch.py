"""The key watch: once a day inside `serve` (listserv.server.watch_keys), every member's pinned
key read afresh from the keyring, and what listserv.stages.expiry decides is sent and
remembered.

- A member whose key ends within 14, 7 or 1 days gets a warning encrypted to that key (a notice,
  like any other), saying how to extend it and send the update to LIST-request@.
- A list's admins get one summary (pseudonym, fingerprint, when each key stops) when any key is
  near its end, and again weekly while one is.
- A member whose key stopped working misses posts (the fan-out skips them; listserv.ledger
  counts each one here, in the events store); at most once a day they get one notice saying
  how many, signed by the list and not encrypted -- it cannot be encrypted to that key -- with
  nothing of any post in it. The list option `missed_notice` turns it off.
- A pinned key found revoked goes to listserv.revocation, as if the revocation had been sent.

What was sent is remembered in the events store, written after the notices are queued: a crash
in between may send a warning twice (each notice's queue id is fixed by what it warns of, so
not while the first is still queued), never lose one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from .keyring import Keyring
from .model import ACTIVE, Kind, MailingList, Roster, iso
from .notices import Notice, notice
from .outbox import Outbox
from .revocation import Revocation, take_in
from .spool import OutJob
from .stages import expiry
from .stages.expiry import Missed, Plan, Watched
from .stages.sendkey import list_signed
from .store import Store, Transaction
from .templates import Templates

STATE = "keywatch"  # events store value: last run, warnings sent, admins' summaries
MISSED = "keywatch-missed"  # events store value: posts missed, by list and fingerprint


@dataclass(frozen=True)
class Report:
    """What one run did: for the log line (counts only) and the server's deliverer."""

    warnings: int
    summaries: int
    missed: int
    revocations: tuple[Revocation, ...]
    jobs: tuple[OutJob, ...]


def last_run(events: Store) -> float | None:
    return (events.read().get_value(STATE) or {}).get("last_run")


def load(tx: Transaction) -> Watched:
    kept = tx.get_value(STATE) or {}
    missed = tx.get_value(MISSED) or {}
    return Watched(
        frozenset(tuple(record) for record in kept.get("warned", [])),
        {address: (doc["at"], frozenset(tuple(key) for key in doc["keys"]))
         for address, doc in kept.get("summaries", {}).items()},
        {(address, fingerprint): Missed.of(doc)
         for address, members in missed.items() for fingerprint, doc in members.items()},
    )


def _save(tx: Transaction, state: Watched, done: Plan, now: float) -> None:
    """Write `state` back; missed counts are merged with what the store holds now, since posts
    were counted while the notices were made."""
    tx.set_value(STATE, {
        "last_run": now,
        "warned": sorted(list(record) for record in state.warned),
        "summaries": {address: {"at": at, "keys": sorted(list(key) for key in keys)}
                      for address, (at, keys) in sorted(state.summaries.items())},
    })
    missed: dict[str, Any] = {address: dict(members) for address, members in (tx.get_value(MISSED) or {}).items()}
    for address, fingerprint in done.reset:
        missed.get(address, {}).pop(fingerprint, None)
    for told in done.missed:
        current = missed.get(told.member.list, {}).get(told.member.fingerprint)
        if current is not None:
            kept = state.missed[(told.member.list, told.member.fingerprint)]
            missed[told.member.list][told.member.fingerprint] = {**current, "told": kept.told, "told_at": kept.told_at}
    tx.set_value(MISSED, {address: members for address, members in missed.items() if members})


def count_missed(tx: Transaction, list_address: str, fingerprints: tuple[str, ...], now: float) -> None:
    """One more post missed by each member pinned to `fingerprints` (the fan-out's unusable)."""
    tx.set_value(MISSED, expiry.count_missed(tx.get_value(MISSED) or {}, list_address, fingerprints, now))


def _qid(*parts: object) -> str:
    """A notice's queue id, fixed by what it is about: one queued before a crash is not queued again."""
    return hashlib.sha256("/".join(map(str, ("keywatch", *parts))).encode()).hexdigest()[:12]


def _warning(templates: Templates, roster: Roster, warning: expiry.Warning, now: float) -> Notice | None:
    st = warning.standing
    return notice(templates, roster.mailing_list, (st.member,), "notice-key-expiring.txt.j2",
                  automatic="auto-generated", member=st.member, fingerprint=st.member.fingerprint,
                  until=st.until_iso, days=st.days_left(now), threshold=warning.threshold)


def _summary(templates: Templates, summary: expiry.Summary, now: float) -> Notice | None:
    rows = [{"name": st.member.name, "fingerprint": st.member.fingerprint, "until": st.until_iso,
             "days": st.days_left(now), "stopped": not st.usable} for st in summary.near]
    return notice(templates, summary.roster.mailing_list, summary.roster.admins, "notice-keys-expiring.txt.j2",
                  automatic="auto-generated", rows=rows)


def _missed(templates: Templates, keyring: Keyring, ml: MailingList, told: expiry.MissedNotice) -> bytes:
    text = templates.render("notice-missed-posts.txt.j2", list=ml, count=told.missed.count)
    return list_signed(text, ml, keyring, ml.request_address, told.member.email, automatic="auto-generated")


def _revoked(store: Store, keyring: Keyring, fingerprints: tuple[str, ...]) -> tuple[Revocation, ...]:
    """Pinned keys the keyring holds revoked, taken in by listserv.revocation (members suspended)."""
    if not fingerprints:
        return ()
    data = keyring.export_public(list(fingerprints))  # from the keyring itself: no size to guard
    with keyring.stage(data, limit=len(data), known=fingerprints) as staged:
        return take_in(store, staged)


def watch(store: Store, events: Store, keyring: Keyring, outbox: Outbox, templates: Templates,
          now: float) -> Report:
    """One run of the watch at `now`, over every list in the home."""
    snapshot = store.read()
    rosters = {ml.address: snapshot.roster(ml.address) for ml in snapshot.lists()}
    infos = keyring.key_infos([m.fingerprint for r in rosters.values() for m in r.members if m.state == ACTIVE])
    done = expiry.plan(list(rosters.values()), infos, load(events.read()), now)
    revocations = _revoked(store, keyring, done.revoked)
    jobs: list[OutJob] = []
    for warning in done.warnings:
        roster = rosters[warning.standing.member.list]
        jobs += outbox.notices([_warning(templates, roster, warning, now)], after=_qid(*warning.record))
    for summary in done.summaries:
        jobs += outbox.notices([_summary(templates, summary, now)],
                               after=_qid(summary.roster.mailing_list.address, iso(now)))
    for told in done.missed:
        ml = rosters[told.member.list].mailing_list
        job = outbox.write_plain(_qid(ml.address, told.member.fingerprint, told.missed.count), ml, Kind.NOTICE,
                                 _missed(templates, keyring, ml, told), told.member.email)
        jobs += [job] if job is not None else []
    with events.transaction() as tx:
        _save(tx, expiry.remember(load(tx), done, now), done, now)
    return Report(len(done.warnings), len(done.summaries), len(done.missed), revocations, tuple(jobs))
