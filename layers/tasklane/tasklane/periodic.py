"""Periodic tasks: schedules declared next to the task, each tick fired exactly once.

::

    @task(name="reports.nightly", schedule="cron(0 3 * * ? *)")       # EventBridge syntax
    def nightly(payload): ...

    @task(name="cache.warm", schedule=Schedule("rate(5 minutes)", payload={"all": True}))
    def warm(payload): ...

No beat process, no singleton. Whoever runs the scheduled pass (the reconciler function, every
minute; the local stack's) turns each tick due within SQS's 15-minute delay into a task whose
``run_at`` is the tick, sent delayed so that it runs on time. Every tick's task has a key of its
own (``periodic:<name>:<tick>``), and Postgres keeps keys unique: however many passes run side
by side, a tick fires once. After downtime, the ticks missed are coalesced into one run by
default (``catch_up=True`` runs each of them).

This module is pure: the expressions and their ticks. The store and the service do the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tasklane.errors import ConfigurationError

_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.+)\)$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: EventBridge numbers days of the week 1 (SUN) to 7 (SAT); cron 0 (SUN) to 6 (SAT).
_DOW = re.compile(r"(?<![#\w])([1-7])")
#: EventBridge's years.
_FIRST_YEAR, _LAST_YEAR = 1970, 2199
_YEAR_PART = re.compile(r"^(\*|\d{4})(?:-(\d{4}))?(?:/(\d+))?$")
#: The most ticks a pass reads of one schedule: a schedule that catches up on a long outage
#: does so over several passes, each of bounded work.
MAX_TICKS = 2000


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a task runs by itself: an EventBridge ``rate(...)`` or ``cron(...)`` expression (in
    UTC), the fixed payload each run gets, and whether missed ticks all run (``catch_up``) or
    coalesce into one."""

    expression: str
    payload: Any = None
    catch_up: bool = False

    def __post_init__(self) -> None:
        # refused when the task is defined, never at a tick (where it would stop the pass)
        parse(self.expression)
        from tasklane.errors import InvalidRequest
        from tasklane.payloads import dumps

        try:
            dumps(self.payload, "the schedule's payload")
        except InvalidRequest as exc:
            raise ConfigurationError(f"schedule {self.expression!r}: {exc}") from None

    def ticks(self, after: datetime, until: datetime) -> list[datetime]:
        """The ticks in ``(after, until]``, in order (at most ``MAX_TICKS``)."""
        return ticks(self.expression, after, until)

    def due(self, after: datetime, now: datetime, until: datetime) -> list[datetime]:
        """The ticks a pass at ``now`` considers, after the last one fired (``after``) and up
        to ``until``. Without ``catch_up`` only the last past tick can fire: the ticks before it
        are skipped at once, so a long outage costs a pass no more than a short one."""
        if not self.catch_up and (last := last_tick(self.expression, now)) is not None:
            after = max(after, last - timedelta(microseconds=1))
        return ticks(self.expression, after, until)


def parse(expression: str) -> tuple[str, Any]:
    """``("rate", seconds)`` or ``("cron", (croniter expression, year field))``."""
    expression = expression.strip()
    if match := _RATE.match(expression):
        count, unit = int(match.group(1)), match.group(2).rstrip("s")
        if count < 1 or (count == 1) != (match.group(2) == unit):
            raise ConfigurationError(
                f"schedule {expression!r}: say rate(1 {unit}), rate(2 {unit}s), ..."
            )
        return "rate", count * _UNITS[unit]
    if match := _CRON.match(expression):
        fields = match.group(1).split()
        if len(fields) != 6:
            raise ConfigurationError(
                f"schedule {expression!r}: EventBridge cron has six fields: "
                "minutes hours day-of-month month day-of-week year"
            )
        minute, hour, dom, month, dow, year = fields
        if "W" in dom:
            raise ConfigurationError(
                f"schedule {expression!r}: W (nearest weekday) is not supported"
            )
        if "?" not in (dom, dow):
            raise ConfigurationError(
                f"schedule {expression!r}: one of day-of-month and day-of-week must be ?"
            )
        dow = _DOW.sub(lambda m: str(int(m.group(1)) - 1), dow)  # to cron's numbering
        cron = " ".join(
            (minute, hour, "*" if dom == "?" else dom, month, "*" if dow == "?" else dow)
        )
        from croniter import croniter

        if not croniter.is_valid(cron):
            raise ConfigurationError(f"schedule {expression!r} is not a valid cron expression")
        return "cron", (cron, _years(year, expression))
    raise ConfigurationError(
        f"schedule {expression!r}: write rate(5 minutes) or cron(0 3 * * ? *) (EventBridge)"
    )


def ticks(expression: str, after: datetime, until: datetime) -> list[datetime]:
    """The moments in ``(after, until]`` that ``expression`` fires (UTC), at most
    ``MAX_TICKS`` of them (the first ones)."""
    kind, spec = parse(expression)
    out: list[datetime] = []
    if kind == "rate":  # a fixed grid from the epoch: every scheduler finds the same ticks
        step = timedelta(seconds=spec)
        tick = _EPOCH + step * ((after - _EPOCH) // step + 1)
        while tick <= until and len(out) < MAX_TICKS:
            out.append(tick)
            tick += step
        return out
    from croniter import croniter

    cron, years = spec
    if years is not None:  # skip the years it does not fire in, without walking them
        ahead = sorted(y for y in years if y >= after.year)
        if not ahead or ahead[0] > until.year:
            return []
        if ahead[0] > after.year:
            after = datetime(ahead[0], 1, 1, tzinfo=UTC) - timedelta(microseconds=1)
    moments = croniter(cron, after.astimezone(UTC))
    while len(out) < MAX_TICKS and (tick := moments.get_next(datetime)) <= until:
        if years is None or tick.year in years:
            out.append(tick.astimezone(UTC))
        elif not any(y >= tick.year for y in years):
            break
    return out


def last_tick(expression: str, moment: datetime) -> datetime | None:
    """The latest moment at or before ``moment`` that ``expression`` fires (None: none in the
    years it allows)."""
    kind, spec = parse(expression)
    if kind == "rate":
        step = timedelta(seconds=spec)
        return _EPOCH + step * ((moment - _EPOCH) // step)
    from croniter import croniter

    cron, years = spec
    if years is not None:
        behind = [y for y in years if y <= moment.year]
        if not behind:
            return None
        if max(behind) < moment.year:
            moment = datetime(max(behind) + 1, 1, 1, tzinfo=UTC)
    moments = croniter(cron, moment.astimezone(UTC) + timedelta(microseconds=1))
    for _ in range(MAX_TICKS):
        tick = moments.get_prev(datetime).astimezone(UTC)
        if years is None or tick.year in years:
            return tick
        if tick.year < min(years):
            return None
    return None


def _years(field: str, expression: str) -> frozenset[int] | None:
    """EventBridge's year field (``*``, ``2027``, ``2027-2030``, ``2027/2``, ``*/2``, lists):
    the years it allows, or None for every year. Refused here when it is not one."""
    if field in ("*", "?"):
        return None
    years: set[int] = set()
    for part in field.split(","):
        match = _YEAR_PART.match(part)
        if not match:
            raise ConfigurationError(f"schedule {expression!r}: year field {field!r} not valid")
        low = _FIRST_YEAR if match.group(1) == "*" else int(match.group(1))
        high = int(
            match.group(2) or (_LAST_YEAR if match.group(3) or match.group(1) == "*" else low)
        )
        step = int(match.group(3) or 1)
        if not _FIRST_YEAR <= low <= high <= _LAST_YEAR or step < 1:
            raise ConfigurationError(
                f"schedule {expression!r}: years run from {_FIRST_YEAR} to {_LAST_YEAR}"
            )
        years.update(range(low, high + 1, step))
    return frozenset(years)


def coalesced(due: list[datetime], now: datetime, catch_up: bool) -> list[datetime]:
    """The ticks to fire: the future ones, and of those already past, the last only (missed
    ticks coalesce into one run) unless ``catch_up``."""
    past = [t for t in due if t <= now]
    future = [t for t in due if t > now]
    return (past if catch_up else past[-1:]) + future
