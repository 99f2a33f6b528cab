"""Schedules (pure): EventBridge expressions, their ticks, coalescing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tasklane.errors import ConfigurationError
from tasklane.periodic import MAX_TICKS, Schedule, coalesced, ticks

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


@pytest.mark.parametrize(
    ("expression", "years"),
    [
        ("cron(0 12 1 1 ? 2027/2)", [2027, 2029, 2031]),  # a step: EventBridge allows it
        ("cron(0 12 1 1 ? 2027-2028,2031)", [2027, 2028, 2031]),
        ("cron(0 12 1 1 ? */100)", [2070]),  # every 100 years from 1970
    ],
)
def test_every_year_field_eventbridge_allows_is_read(expression, years):
    got = ticks(expression, T0, datetime(2032, 1, 1, tzinfo=UTC))
    assert [t.year for t in got] == [y for y in years if y < 2032]


@pytest.mark.parametrize(
    "expression",
    [
        "cron(0 12 1 1 ? 2027/0)",
        "cron(0 12 1 1 ? 1969)",
        "cron(0 12 1 1 ? 20x7)",
        "cron(0 0 * * ? 2200)",
    ],
)
def test_a_bad_year_field_is_refused_when_the_task_is_defined(expression):
    with pytest.raises(ConfigurationError, match="year"):
        Schedule(expression)


def test_a_schedules_payload_that_is_not_json_is_refused_when_the_task_is_defined():
    with pytest.raises(ConfigurationError, match="not JSON"):
        Schedule("rate(5 minutes)", payload={"day": T0.date()})


def test_a_pass_does_bounded_work_whatever_the_schedule_says():
    """A cron bounded to years past, or a long outage, costs a pass no walk of every minute."""
    assert ticks("cron(* * * * ? 2020)", T0, T0 + timedelta(days=3000)) == []
    assert len(ticks("cron(* * * * ? 2020)", T0 - timedelta(days=3000), T0)) == MAX_TICKS
    every_minute = Schedule("cron(* * * * ? *)")
    due = every_minute.due(T0 - timedelta(days=365), T0, T0 + timedelta(minutes=15))
    assert len(due) == 16 and due[0] <= T0 < due[1]  # the last past tick, then the next 15
    caught_up = Schedule("cron(* * * * ? *)", catch_up=True)
    assert len(caught_up.due(T0 - timedelta(days=365), T0, T0)) == MAX_TICKS  # one chunk a pass
