"""Schedules (pure): EventBridge expressions, their ticks, coalescing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tasklane.errors import ConfigurationError
from tasklane.periodic import Schedule, coalesced, ticks

T0 = datetime(2026, 11, 29, 8, 2, 30, tzinfo=UTC)  # a Sunday


def test_rate_ticks_are_a_fixed_grid_every_scheduler_finds():
    got = ticks("rate(5 minutes)", T0, T0 + timedelta(minutes=12))
    assert [t.strftime("%H:%M") for t in got] == ["08:05", "08:10"]
    assert ticks("rate(1 hour)", T0, T0 + timedelta(hours=2))[0] == datetime(
        2026, 11, 29, 9, tzinfo=UTC
    )
    assert ticks("rate(2 days)", T0, T0) == []


@pytest.mark.parametrize(
    ("expression", "first"),
    [
        ("cron(0 3 * * ? *)", "2026-11-30 03:00 Mon"),
        ("cron(15 12 ? * 2 *)", "2026-11-30 12:15 Mon"),  # EventBridge: 1 is SUN, 2 is MON
        ("cron(0 12 ? * MON-FRI *)", "2026-11-30 12:00 Mon"),
        ("cron(0 9 ? * 3#2 *)", "2026-12-08 09:00 Tue"),  # the second Tuesday
        ("cron(0 0 L * ? *)", "2026-11-30 00:00 Mon"),  # the month's last day
        ("cron(0 0 1 1 ? 2028)", "2028-01-01 00:00 Sat"),  # a year of its own
    ],
)
def test_cron_ticks_read_eventbridge_fields(expression, first):
    (tick, *_) = ticks(expression, T0, T0 + timedelta(days=800))
    assert tick.strftime("%Y-%m-%d %H:%M %a") == first and tick.tzinfo is not None


@pytest.mark.parametrize(
    "expression",
    [
        "every 5 minutes",
        "rate(0 minutes)",
        "rate(1 minutes)",
        "rate(5 minute)",
        "cron(0 3 * * *)",  # five fields: a Unix cron, not EventBridge's
        "cron(0 3 1 * MON *)",  # neither day field is ?
        "cron(0 3 15W * ? *)",
        "cron(61 3 * * ? *)",
    ],
)
def test_a_bad_schedule_is_refused_when_the_task_is_defined(expression):
    with pytest.raises(ConfigurationError):
        Schedule(expression)


def test_missed_ticks_coalesce_into_one_run_unless_catching_up():
    due = ticks("rate(5 minutes)", T0 - timedelta(hours=1), T0 + timedelta(minutes=15))
    fire = coalesced(due, T0, catch_up=False)
    assert [t for t in fire if t <= T0] == [datetime(2026, 11, 29, 8, 0, tzinfo=UTC)]
    assert len([t for t in fire if t > T0]) == 3
    assert len(coalesced(due, T0, catch_up=True)) == len(due) == 15
