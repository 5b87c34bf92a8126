"""The key watch's decisions, pure: a key walked through its last fortnight by `now` alone."""

from __future__ import annotations

from dataclasses import replace

from listserv.keyring import KeyInfo
from listserv.model import MailingList, Member, Roster, iso
from listserv.stages import expiry
from listserv.stages.expiry import DAY, Missed, Watched, count_missed, plan, remember, standing, watch_due

T0 = 1_800_000_000.0
NEWS = MailingList("news@example.org", "News", "A" * 40)
ADA = Member(NEWS.address, "ada@example.org", "B" * 40, "Ada", role="admin")
WES = Member(NEWS.address, "wes@example.org", "C" * 40, "Wes")
EVE = Member(NEWS.address, "eve@example.org", "D" * 40, "Eve")


def key(fingerprint: str, ends: float | None, **changed: object) -> KeyInfo:
    info = KeyInfo(fingerprint, ("X <x@example.org>",), True, True, False, False, iso(ends) if ends else None)
    return replace(info, **changed)


def roster(*members: Member, options: dict | None = None) -> Roster:
    return Roster(replace(NEWS, options=options or {}), (ADA, *members))


def walk(infos: dict[str, KeyInfo], times: list[float], members=(WES,), options=None) -> list[expiry.Plan]:
    """Run the watch at each of `times`, remembering as it goes, as the server does."""
    state, plans = Watched(), []
    for now in times:
        done = plan([roster(*members, options=options)], infos, state, now)
        state = remember(state, done, now)
        plans.append(done)
    return plans


def thresholds(plans: list[expiry.Plan]) -> list[list[int]]:
    return [[w.threshold for w in p.warnings] for p in plans]


def test_a_key_ending_in_ten_days_is_warned_at_fourteen_seven_and_one_each_once():
    ends = T0 + 10 * DAY
    infos = {ADA.fingerprint: key(ADA.fingerprint, None), WES.fingerprint: key(WES.fingerprint, ends)}
    times = [T0, T0 + DAY, T0 + 3.5 * DAY, T0 + 4 * DAY, T0 + 8 * DAY, T0 + 9.5 * DAY, T0 + 9.9 * DAY]
    assert thresholds(walk(infos, times)) == [[14], [], [7], [], [], [1], []]


def test_a_member_first_seen_three_days_before_gets_only_the_seven_day_warning():
    infos = {ADA.fingerprint: key(ADA.fingerprint, None), WES.fingerprint: key(WES.fingerprint, T0 + 3 * DAY)}
    assert thresholds(walk(infos, [T0, T0 + DAY])) == [[7], []]


def test_an_extended_key_is_warned_again_as_it_nears_its_new_end():
    infos = {ADA.fingerprint: key(ADA.fingerprint, None), WES.fingerprint: key(WES.fingerprint, T0 + 5 * DAY)}
    state = Watched()
    first = plan([roster(WES)], infos, state, T0)
    state = remember(state, first, T0)
    assert [w.threshold for w in first.warnings] == [7]
    extended = {**infos, WES.fingerprint: key(WES.fingerprint, T0 + 40 * DAY)}  # x-key-update
    assert plan([roster(WES)], extended, state, T0 + DAY).warnings == ()
    later = plan([roster(WES)], extended, state, T0 + 30 * DAY)
    assert [w.threshold for w in later.warnings] == [14]


def test_keys_that_never_end_or_end_far_off_get_nothing_and_an_ended_key_no_warning():
    infos = {ADA.fingerprint: key(ADA.fingerprint, None), WES.fingerprint: key(WES.fingerprint, T0 + 15 * DAY),
             EVE.fingerprint: key(EVE.fingerprint, T0 - DAY, expired=True, can_encrypt=False)}
    done = plan([roster(WES, EVE)], infos, Watched(), T0)
    assert done.warnings == ()
    # gpg judges at the real time; the watch at `now`: past the end, the key is not usable.
    assert not standing(WES, infos[WES.fingerprint], T0 + 16 * DAY).usable
    assert plan([roster(WES)], infos, Watched(), T0 + 16 * DAY).warnings == ()


def test_admins_get_a_summary_when_a_key_is_near_and_weekly_while_it_is_or_sooner_for_a_new_one():
    infos = {ADA.fingerprint: key(ADA.fingerprint, None), WES.fingerprint: key(WES.fingerprint, T0 + 13 * DAY),
             EVE.fingerprint: key(EVE.fingerprint, T0 + 30 * DAY)}
    times = [T0, T0 + DAY, T0 + 6.9 * DAY, T0 + 7 * DAY, T0 + 8 * DAY, T0 + 16.5 * DAY, T0 + 20 * DAY]
    plans = walk(infos, times, members=(WES, EVE))
    named = [[sorted(st.member.name for st in s.near) for s in p.summaries] for p in plans]
    # Eve's key comes within 14 days at T0+16: a summary before the week is out.
    assert named == [[["Wes"]], [], [], [["Wes"]], [], [["Eve", "Wes"]], []]


def test_no_summary_without_an_admin_in_good_standing_and_none_when_all_keys_are_far():
    infos = {ADA.fingerprint: key(ADA.fingerprint, None), WES.fingerprint: key(WES.fingerprint, T0 + 3 * DAY)}
    assert plan([roster()], infos, Watched(), T0).summaries == ()
    orphan = Roster(NEWS, (replace(ADA, state="suspended"), WES))  # any state but active
    done = plan([orphan], infos, Watched(), T0)
    assert done.summaries == () and [w.threshold for w in done.warnings] == [7]


def test_missed_posts_are_told_once_a_day_only_when_more_were_missed_and_forgotten_when_usable():
    ended = {ADA.fingerprint: key(ADA.fingerprint, None),
             EVE.fingerprint: key(EVE.fingerprint, T0 - DAY, expired=True, can_encrypt=False)}
    docs = count_missed(count_missed({}, NEWS.address, (EVE.fingerprint,), T0), NEWS.address, (EVE.fingerprint,), T0)
    state = Watched(missed={(NEWS.address, EVE.fingerprint): Missed.of(docs[NEWS.address][EVE.fingerprint])})
    first = plan([roster(EVE)], ended, state, T0 + 60)
    assert [(n.member.name, n.missed.count) for n in first.missed] == [("Eve", 2)]
    assert [st.member.name for st in first.summaries[0].near] == ["Eve"]  # the admins hear of her too
    state = remember(state, first, T0 + 60)
    assert plan([roster(EVE)], ended, state, T0 + 3600).missed == ()  # nothing new
    one_more = Watched(state.warned, state.summaries,
                       {k: replace(v, count=v.count + 1) for k, v in state.missed.items()})
    assert plan([roster(EVE)], ended, one_more, T0 + 3600).missed == ()  # within the day
    assert [n.missed.count for n in plan([roster(EVE)], ended, one_more, T0 + 60 + DAY).missed] == [3]
    off = plan([roster(EVE, options={"missed_notice": False})], ended, one_more, T0 + 2 * DAY)
    assert off.missed == ()
    renewed = {**ended, EVE.fingerprint: key(EVE.fingerprint, T0 + 400 * DAY)}
    done = plan([roster(EVE)], renewed, one_more, T0 + 2 * DAY)
    assert done.reset == ((NEWS.address, EVE.fingerprint),) and done.missed == ()
    assert remember(one_more, done, T0 + 2 * DAY).missed == {}
    gone = plan([Roster(NEWS, (ADA,))], renewed, one_more, T0 + 2 * DAY)  # Eve left the list
    assert gone.reset == ((NEWS.address, EVE.fingerprint),)


def test_a_revoked_pinned_key_goes_to_revocation_not_to_warnings_and_a_missing_key_is_unusable():
    infos = {ADA.fingerprint: key(ADA.fingerprint, None),
             WES.fingerprint: key(WES.fingerprint, T0 + 3 * DAY, revoked=True, can_encrypt=False)}
    done = plan([roster(WES)], infos, Watched(), T0)
    assert done.revoked == (WES.fingerprint,) and done.warnings == ()
    assert not standing(EVE, None, T0).usable


def test_the_watch_is_due_once_a_day_and_after_a_clock_that_was_ahead():
    assert watch_due(None, T0)
    assert not watch_due(T0, T0 + DAY - 1)
    assert watch_due(T0, T0 + DAY)
    assert watch_due(T0, T0 + 5 * DAY)  # down for days: one run
    assert watch_due(T0 + 3 * DAY, T0)


def test_old_warnings_are_forgotten_a_month_after_the_key_ended():
    infos = {ADA.fingerprint: key(ADA.fingerprint, None), WES.fingerprint: key(WES.fingerprint, T0 + 2 * DAY)}
    state = remember(Watched(), plan([roster(WES)], infos, Watched(), T0), T0)
    assert len(state.warned) == 1
    assert remember(state, plan([roster()], {}, state, T0 + 40 * DAY), T0 + 40 * DAY).warned == frozenset()
