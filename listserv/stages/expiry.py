"""The key watch's decisions (pure): given each member's pinned key as the keyring has it now,
what the watch sent before, and `now`, who is warned, which admins get a summary, who hears
of the posts they missed, and what the watch remembers afterwards.

Nothing here reads a clock: `now` (a Unix time) is always a parameter, so a test can walk a
key through its last fortnight in a few calls. listserv.keywatch does the I/O around it.

A key's end is KeyInfo.expires: when it stops being usable for encryption, the earlier of
the primary key's expiry and the latest expiry among its usable encryption subkeys. A warning
is remembered per (list, key, that end, threshold), so a key extended and later nearing its
new end is warned again; only the nearest threshold already reached is sent, so a member first
seen 3 days before the end gets the 7-day warning alone, not the 14- and 7-day ones at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..keyring import KeyInfo
from ..model import ACTIVE, Member, Roster, iso, parse_iso

DAY = 24 * 3600
THRESHOLDS = (14, 7, 1)  # days before a key's end at which its member is warned
SUMMARY_WITHIN = 14 * DAY  # admins hear of keys that end within this
SUMMARY_EVERY = 7 * DAY  # ... and again this often while any does
MISSED_EVERY = DAY  # a member without a usable key hears of missed posts at most this often
RUN_EVERY = DAY  # how often `serve` runs the watch
FORGET_AFTER = 30 * DAY  # a warning's record is dropped this long after the key's end


@dataclass(frozen=True)
class Standing:
    """A member's pinned key as the keyring has it at `now`."""

    member: Member
    usable_until: float | None  # when it stops encrypting; None: never (or not in the keyring)
    usable: bool  # can be encrypted to at `now`
    revoked: bool

    @property
    def until_iso(self) -> str | None:
        return iso(self.usable_until) if self.usable_until is not None else None

    def days_left(self, now: float) -> int | None:
        """Whole days until the key's end (0: less than a day); None when it never ends."""
        if self.usable_until is None:
            return None
        return max(0, int((self.usable_until - now) // DAY))


def standing(member: Member, info: KeyInfo | None, now: float) -> Standing:
    """`member`'s key at `now`: usable when gpg can encrypt to it and its end is after `now`
    (gpg judges at the real time; the watch at `now`). A key missing from the keyring is unusable."""
    if info is None:
        return Standing(member, None, False, False)
    until = parse_iso(info.expires).timestamp() if info.expires else None
    usable = info.can_encrypt and not info.expired and not info.revoked and (until is None or until > now)
    return Standing(member, until, usable, info.revoked)


@dataclass(frozen=True)
class Missed:
    """The posts a member without a usable key did not get: how many since when, and how many
    of them the last notice (at `told_at`) counted."""

    count: int
    since: float
    told: int = 0
    told_at: float | None = None

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Missed:
        return cls(int(doc["count"]), float(doc["since"]), int(doc.get("told", 0)), doc.get("told_at"))

    def as_doc(self) -> dict[str, Any]:
        return {"count": self.count, "since": self.since, "told": self.told, "told_at": self.told_at}


@dataclass(frozen=True)
class Watched:
    """What the watch remembers between runs (kept in the events store)."""

    warned: frozenset[tuple[str, str, int, int]] = frozenset()  # (list, fingerprint, end, threshold)
    summaries: dict[str, tuple[float, frozenset[tuple[str, int]]]] = field(default_factory=dict)  # list: (at, keys)
    missed: dict[tuple[str, str], Missed] = field(default_factory=dict)  # (list, fingerprint)


def count_missed(docs: dict[str, Any], list_address: str, fingerprints: tuple[str, ...], now: float) -> dict[str, Any]:
    """The events store's record of missed posts (list: fingerprint: Missed.as_doc) with one
    more post missed by each of `fingerprints` on `list_address`."""
    mine = dict(docs.get(list_address, {}))
    for fingerprint in fingerprints:
        kept = Missed.of(mine[fingerprint]) if fingerprint in mine else Missed(0, now)
        mine[fingerprint] = Missed(kept.count + 1, kept.since, kept.told, kept.told_at).as_doc()
    return {**docs, list_address: mine}


@dataclass(frozen=True)
class Warning:
    standing: Standing
    threshold: int  # 14, 7 or 1

    @property
    def record(self) -> tuple[str, str, int, int]:
        member = self.standing.member
        return (member.list, member.fingerprint, int(self.standing.usable_until or 0), self.threshold)


@dataclass(frozen=True)
class Summary:
    roster: Roster
    near: tuple[Standing, ...]  # members whose key ends within SUMMARY_WITHIN, or has ended


@dataclass(frozen=True)
class MissedNotice:
    member: Member
    missed: Missed


@dataclass(frozen=True)
class Plan:
    warnings: tuple[Warning, ...]
    summaries: tuple[Summary, ...]
    missed: tuple[MissedNotice, ...]
    reset: tuple[tuple[str, str], ...]  # (list, fingerprint) whose missed count starts again
    revoked: tuple[str, ...]  # fingerprints found revoked: for listserv.revocation


def warning_due(st: Standing, warned: frozenset[tuple[str, str, int, int]], now: float) -> Warning | None:
    """The warning `st`'s member is due at `now`: the nearest threshold reached, unless that
    one (or a nearer one) was sent for this key and this end."""
    if not st.usable or st.usable_until is None:
        return None
    left = st.usable_until - now
    reached = [t for t in THRESHOLDS if left <= t * DAY]
    if not reached:
        return None
    due = min(reached)
    key = (st.member.list, st.member.fingerprint, int(st.usable_until))
    if any(record[:3] == key and record[3] <= due for record in warned):
        return None
    return Warning(st, due)


def near(st: Standing, now: float) -> bool:
    """The key has ended, or ends within SUMMARY_WITHIN."""
    return not st.usable or (st.usable_until is not None and st.usable_until - now <= SUMMARY_WITHIN)


def summary_due(roster: Roster, standings: tuple[Standing, ...], last: tuple[float, frozenset] | None,
                now: float) -> Summary | None:
    """The admins' summary at `now`: when any key is near its end, and the last summary is a
    week old, or did not name one of these keys (a key that just came near is not kept from
    the admins for a week)."""
    close = tuple(st for st in standings if near(st, now))
    if not close:
        return None
    keys = frozenset((st.member.fingerprint, int(st.usable_until or 0)) for st in close)
    if last is not None and 0 <= now - last[0] < SUMMARY_EVERY and keys <= last[1]:
        return None
    return Summary(roster, close)


def missed_due(st: Standing, missed: Missed | None, now: float) -> bool:
    """A notice of missed posts is due: the key is unusable, posts were missed since the last
    notice (a quiet list does not nag every day), and that notice is a day old."""
    if st.usable or missed is None or missed.count <= missed.told:
        return False
    return missed.told_at is None or not 0 <= now - missed.told_at < MISSED_EVERY


def plan(rosters: list[Roster], infos: dict[str, KeyInfo], state: Watched, now: float) -> Plan:
    """Everything the watch does at `now`. Only active members are watched: a suspended one
    gets nothing from the list, and a key found revoked goes to the revocation path instead."""
    warnings, summaries, missed, reset, revoked = [], [], [], [], []
    for roster in rosters:
        standings = tuple(standing(m, infos.get(m.fingerprint), now) for m in roster.members if m.state == ACTIVE)
        revoked += [st.member.fingerprint for st in standings if st.revoked]
        watched = tuple(st for st in standings if not st.revoked)
        warnings += [w for w in (warning_due(st, state.warned, now) for st in watched) if w is not None]
        summary = summary_due(roster, watched, state.summaries.get(roster.mailing_list.address), now)
        if summary is not None and roster.admins:
            summaries.append(summary)
        for st in watched:
            key = (roster.mailing_list.address, st.member.fingerprint)
            if st.usable and key in state.missed:
                reset.append(key)
            elif roster.mailing_list.option("missed_notice") and missed_due(st, state.missed.get(key), now):
                missed.append(MissedNotice(st.member, state.missed[key]))
    watched_keys = {(r.mailing_list.address, m.fingerprint) for r in rosters for m in r.members if m.state == ACTIVE}
    reset += [key for key in state.missed if key not in watched_keys]  # left, re-pinned or suspended
    return Plan(tuple(warnings), tuple(summaries), tuple(missed), tuple(reset), tuple(sorted(set(revoked))))


def watch_due(last: float | None, now: float) -> bool:
    """`serve` runs the watch when it never ran, ran a day ago or more, or its record is in
    the future (a clock that was set wrong must not stop the watch for good)."""
    return last is None or now - last >= RUN_EVERY or now < last


def remember(state: Watched, done: Plan, now: float) -> Watched:
    """The state after `done` was sent at `now` (its missed counts as `done` saw them; the
    store merges them with posts missed meanwhile: listserv.keywatch). Warnings for keys whose
    end is long past are forgotten."""
    warned = {r for r in state.warned if r[2] > now - FORGET_AFTER} | {w.record for w in done.warnings}
    summaries = dict(state.summaries)
    for summary in done.summaries:
        keys = frozenset((st.member.fingerprint, int(st.usable_until or 0)) for st in summary.near)
        summaries[summary.roster.mailing_list.address] = (now, keys)
    missed = {k: v for k, v in state.missed.items() if k not in done.reset}
    for notice in done.missed:
        key = (notice.member.list, notice.member.fingerprint)
        missed[key] = Missed(notice.missed.count, notice.missed.since, notice.missed.count, now)
    return Watched(frozenset(warned), summaries, missed)
