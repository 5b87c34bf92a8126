"""Digest schedules in UTC: 'daily HH:MM', 'weekly DAY HH:MM' and five-field cron."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from listserv.errors import UsageError
from listserv.schedule import parse_schedule


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)


def fires(schedule: str, after: str, count: int = 1) -> list[str]:
    parsed, moment, out = parse_schedule(schedule), at(after), []
    for _ in range(count):
        moment = parsed.next_after(moment)
        out.append(moment.strftime("%Y-%m-%d %H:%M %a"))
    return out


def test_daily():
    assert fires("daily 18:00", "2024-03-01 09:00", 2) == ["2024-03-01 18:00 Fri", "2024-03-02 18:00 Sat"]
    # Strictly after: at the very minute it fires, the next one is tomorrow.
    assert fires("daily 18:00", "2024-03-01 18:00") == ["2024-03-02 18:00 Sat"]
    assert fires("daily 00:00", "2024-12-31 23:59") == ["2025-01-01 00:00 Wed"]


def test_seconds_are_ignored_and_other_zones_converted():
    parsed = parse_schedule("daily 18:00")
    assert parsed.next_after(at("2024-03-01 17:59") + timedelta(seconds=59)) == at("2024-03-01 18:00")
    berlin = timezone(timedelta(hours=1))
    assert parsed.next_after(datetime(2024, 3, 1, 18, 30, tzinfo=berlin)) == at("2024-03-01 18:00")


@pytest.mark.parametrize("day", ["mon", "Monday", "MON"])
def test_weekly(day):
    assert fires(f"weekly {day} 09:00", "2024-02-28 12:00", 2) == [
        "2024-03-04 09:00 Mon", "2024-03-11 09:00 Mon"]


def test_weekly_sunday_and_leap_day():
    assert fires("weekly sun 23:59", "2024-02-25 23:59") == ["2024-03-03 23:59 Sun"]
    assert fires("0 12 29 2 *", "2024-03-01 00:00") == ["2028-02-29 12:00 Tue"]


def test_cron_ranges_steps_and_lists():
    assert fires("*/20 9-10 * * *", "2024-03-01 08:00", 7) == [
        "2024-03-01 09:00 Fri", "2024-03-01 09:20 Fri", "2024-03-01 09:40 Fri",
        "2024-03-01 10:00 Fri", "2024-03-01 10:20 Fri", "2024-03-01 10:40 Fri",
        "2024-03-02 09:00 Sat"]
    assert fires("0 8,17 * * 1-5", "2024-03-01 17:00", 2) == ["2024-03-04 08:00 Mon", "2024-03-04 17:00 Mon"]
    assert fires("5/30 0 1 1 *", "2024-06-01 00:00", 2) == ["2025-01-01 00:05 Wed", "2025-01-01 00:35 Wed"]


def test_cron_day_of_week_names_and_sunday_as_0_or_7():
    for spec in ("0", "7", "sun"):
        assert fires(f"30 6 * * {spec}", "2024-03-01 00:00") == ["2024-03-03 06:30 Sun"]
    assert fires("0 9 * * fri", "2024-03-01 09:00") == ["2024-03-08 09:00 Fri"]


def test_cron_day_of_month_or_day_of_week():
    """When both day fields are restricted, cron fires on either (the 13th, and every Friday)."""
    assert fires("0 0 13 * 5", "2024-09-01 00:00", 4) == [
        "2024-09-06 00:00 Fri", "2024-09-13 00:00 Fri", "2024-09-20 00:00 Fri", "2024-09-27 00:00 Fri"]
    assert fires("0 0 13 * 1", "2024-09-10 00:00", 2) == ["2024-09-13 00:00 Fri", "2024-09-16 00:00 Mon"]


def test_cron_star_step_day_of_month_still_ands_with_day_of_week():
    """As in Vixie cron and cronie, a day field starting with '*' is unrestricted for that rule:
    '*/2' with Monday means Mondays on odd days, not every odd day and every Monday."""
    assert fires("0 0 */2 * mon", "2024-09-01 00:00", 3) == [
        "2024-09-09 00:00 Mon", "2024-09-23 00:00 Mon", "2024-10-07 00:00 Mon"]


def test_cron_month_restriction():
    assert fires("0 0 1 */3 *", "2024-02-15 00:00", 2) == ["2024-04-01 00:00 Mon", "2024-07-01 00:00 Mon"]


@pytest.mark.parametrize("text", [
    "", "daily", "daily 24:00", "daily 12:60", "daily noon", "weekly 09:00", "weekly funday 09:00",
    "weekly monkey 09:00", "hourly 5", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *",
    "* * 0 * *", "* * 32 * *", "* * * 13 *", "* * * * 8", "*/0 * * * *", "5-1 * * * *", "a * * * *",
    "1,,2 * * * *",
])
def test_bad_schedules_are_refused(text):
    with pytest.raises(UsageError):
        parse_schedule(text)


def test_a_schedule_that_never_fires_says_so():
    with pytest.raises(UsageError, match="never fires"):
        parse_schedule("0 0 30 2 *").next_after(at("2024-01-01 00:00"))
