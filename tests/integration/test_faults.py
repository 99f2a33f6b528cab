"""A small run of the fault-injection suite (tests/faultsuite.py; a larger one runs as a script)."""

from __future__ import annotations

import pytest
from tasklane.config import settings

from tests.faultsuite import Environment, run


@pytest.mark.slow
def test_no_task_is_lost_and_none_runs_twice_under_faults(stack, pg_cluster, monkeypatch):
    monkeypatch.setenv("PENDING_GRACE_SECONDS", "1")  # the reconciler re-sends failed sends soon
    settings.cache_clear()
    env = stack.env | {"PENDING_GRACE_SECONDS": "1"}
    report = run(Environment(env, stack.urls, stack.sqs, pg_cluster), tasks=60, timeout=240)
    assert report.submitted >= 58
    assert report.lost == 0, report.problems
    assert report.executed_more_than_once == 0, report.problems
    assert report.succeeded + report.failed_as_expected == report.submitted
    assert report.failed_as_expected >= 4  # the permanent failures did fail
    assert report.injected["duplicate deliveries"] > 0
    assert report.injected["poison messages"] == 6
    assert report.injected["celery worker SIGKILLed mid-task"] == 1
    if pg_cluster is not None:
        assert report.injected["postgres restarts"] == 1
