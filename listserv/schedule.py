"""Digest schedules, in UTC: 'daily 18:00', 'weekly mon 09:00', a five-field cron expression,
or 'every 6h' (an interval: s, m, h, d or w).

A calendar schedule is a set of minutes; `next_after(t)` is the first minute of the set
strictly after t. An interval's `next_after(t)` is t plus the interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .errors import UsageError

_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# cron counts Sunday as 0 (and 7); Python's weekday() counts Monday as 0.
_CRON_DAY_NAMES = {name: (index + 1) % 7 for index, name in enumerate(_DAYS)}


@dataclass(frozen=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]  # day of month, 1-31
    months: frozenset[int]
    weekdays: frozenset[int]  # cron numbering: 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def _day_matches(self, moment: datetime) -> bool:
        by_day = moment.day in self.days
        by_weekday = (moment.weekday() + 1) % 7 in self.weekdays
        # cron's rule: when both fields are restricted, either may match.
        if self.days_restricted and self.weekdays_restricted:
            return by_day or by_weekday
        return by_day and by_weekday

    def next_after(self, moment: datetime) -> datetime:
        moment = moment.astimezone(timezone.utc).replace(second=0, microsecond=0)
        candidate = moment + timedelta(minutes=1)
        limit = candidate + timedelta(days=366 * 5)
        while candidate < limit:
            if candidate.month not in self.months or not self._day_matches(candidate):
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if candidate.hour not in self.hours:
                candidate = (candidate + timedelta(hours=1)).replace(minute=0)
                continue
            if candidate.minute in self.minutes:
                return candidate
            candidate += timedelta(minutes=1)
        raise UsageError("The schedule never fires.")


@dataclass(frozen=True)
class Every:
    seconds: int

    def next_after(self, moment: datetime) -> datetime:
        return moment.astimezone(timezone.utc) + timedelta(seconds=self.seconds)


UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}  # of intervals and durations


def _interval(text: str) -> Every:
    number, unit = text[:-1], text[-1:]
    if not number.isdigit() or unit not in UNIT_SECONDS or int(number) == 0:
        raise UsageError(f"'{text}' is not an interval such as 30m, 6h or 1d.")
    return Every(int(number) * UNIT_SECONDS[unit])


def _hhmm(text: str) -> tuple[int, int]:
    try:
        hour_text, minute_text = text.split(":")
        hour, minute = int(hour_text), int(minute_text)
    except ValueError:
        raise UsageError(f"'{text}' is not a time such as 18:00.") from None
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise UsageError(f"'{text}' is not a time such as 18:00.")
    return hour, minute


def _cron_field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise UsageError(f"'{text}' is not a valid cron field.")
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            first, last = part.split("-", 1)
            start, end = _cron_value(first, names), _cron_value(last, names)
        else:
            start = end = _cron_value(part, names)
            if step != 1:
                end = high
        if not (low <= start <= high and low <= end <= high and start <= end):
            raise UsageError(f"'{text}' is out of range {low}-{high}.")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _cron_value(text: str, names: dict[str, int] | None) -> int:
    if names and text in names:
        return names[text]
    if not text.isdigit():
        raise UsageError(f"'{text}' is not a number.")
    return int(text)


def parse_schedule(text: str) -> Schedule | Every:
    words = text.split()
    if len(words) == 2 and words[0] == "every":
        return _interval(words[1])
    everything = frozenset(range(1, 32)), frozenset(range(1, 13)), frozenset(range(7))
    if len(words) == 2 and words[0] == "daily":
        hour, minute = _hhmm(words[1])
        return Schedule(frozenset([minute]), frozenset([hour]), *everything, False, False)
    if len(words) == 3 and words[0] == "weekly":
        day = words[1].lower()
        full_names = {datetime(2024, 1, 1 + i).strftime("%A").lower(): d for i, d in enumerate(_DAYS)}
        day = full_names.get(day, day)  # 'monday' or 'mon', but not 'monkey'
        if day not in _DAYS:
            raise UsageError(f"'{words[1]}' is not a day of the week.")
        hour, minute = _hhmm(words[2])
        return Schedule(frozenset([minute]), frozenset([hour]), everything[0], everything[1],
                        frozenset([_CRON_DAY_NAMES[day]]), False, True)
    if len(words) == 5:
        minute, hour, day, month, weekday = words
        weekdays = _cron_field(weekday, 0, 7, _CRON_DAY_NAMES)
        weekdays = frozenset(w % 7 for w in weekdays)
        return Schedule(
            _cron_field(minute, 0, 59), _cron_field(hour, 0, 23), _cron_field(day, 1, 31),
            # As in Vixie cron and cronie: a field that starts with '*' (also '*/2') counts as
            # unrestricted for the day-of-month / day-of-week OR rule.
            _cron_field(month, 1, 12), weekdays, not day.startswith("*"), not weekday.startswith("*"),
        )
    raise UsageError(
        f"'{text}' is not a schedule; use 'daily 18:00', 'weekly mon 09:00', 'every 6h' or a cron expression."
    )
