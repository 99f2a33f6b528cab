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


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a task runs by itself: an EventBridge ``rate(...)`` or ``cron(...)`` expression (in
    UTC), the fixed payload each run gets, and whether missed ticks all run (``catch_up``) or
    coalesce into one."""

    expression: str
    payload: Any = None
    catch_up: bool = False

    def __post_init__(self) -> None:
        parse(self.expression)  # refused when the task is defined, not at the first tick

    def ticks(self, after: datetime, until: datetime) -> list[datetime]:
        """The ticks in ``(after, until]``, in order."""
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
        return "cron", (cron, year)
    raise ConfigurationError(
        f"schedule {expression!r}: write rate(5 minutes) or cron(0 3 * * ? *) (EventBridge)"
    )


def ticks(expression: str, after: datetime, until: datetime) -> list[datetime]:
    """The moments in ``(after, until]`` that ``expression`` fires (UTC)."""
    kind, spec = parse(expression)
    out: list[datetime] = []
    if kind == "rate":  # a fixed grid from the epoch: every scheduler finds the same ticks
        step = timedelta(seconds=spec)
        tick = _EPOCH + step * ((after - _EPOCH) // step + 1)
        while tick <= until:
            out.append(tick)
            tick += step
        return out
    from croniter import croniter

    cron, year = spec
    years = _years(year)
    moments = croniter(cron, after.astimezone(UTC))
    while (tick := moments.get_next(datetime)) <= until:
        if years is None or tick.year in years:
            out.append(tick.astimezone(UTC))
    return out


def _years(field: str) -> set[int] | None:
    if field in ("*", "?"):
        return None
    years: set[int] = set()
    for part in field.split(","):
        low, _, high = part.partition("-")
        years.update(range(int(low), int(high or low) + 1))
    return years


def coalesced(due: list[datetime], now: datetime, catch_up: bool) -> list[datetime]:
    """The ticks to fire: the future ones, and of those already past, the last only (missed
    ticks coalesce into one run) unless ``catch_up``."""
    past = [t for t in due if t <= now]
    future = [t for t in due if t > now]
    return (past if catch_up else past[-1:]) + future
