"""A small run of the fault-injection suite (tests/faultsuite.py; a larger one runs as a script)."""

from __future__ import annotations

import pytest
from tasklane.config import settings

from tests.faultsuite import Environment, run


@pytest.mark.slow
def test_no_task_is_lost_and_none_runs_again_without_a_fault_under_faults(
    stack, pg_cluster, monkeypatch
):
    monkeypatch.setenv("PENDING_GRACE_SECONDS", "1")  # the reconciler re-sends failed sends soon
    monkeypatch.setenv("QUEUED_GRACE_SECONDS", "30")
    settings.cache_clear()
    env = stack.env | {"PENDING_GRACE_SECONDS": "1", "QUEUED_GRACE_SECONDS": "30"}
    report = run(Environment(env, stack.urls, stack.sqs, pg_cluster), tasks=60, timeout=300)
    print("\n".join(report.explained))
    assert report.submitted >= 59
    assert report.lost == 0, report.problems
    assert report.executed_more_than_once == 0, report.problems
    assert report.transactional_tasks >= 10 and report.transactional_effects_doubled == 0
    assert report.succeeded + report.failed_as_expected == report.submitted
    assert report.failed_as_expected >= 5  # the permanent failures, and the unloadable payload
    injected = report.injected
    assert injected["duplicate deliveries"] > 0 and injected["lost commit replies"] > 0
    assert injected["poison messages"] == 6 and injected["payloads refused at the API"] == 2
    assert injected["unloadable payloads stored"] == 1
    assert injected["pool process SIGKILLed mid-task"] == 1, report.problems
    assert injected["celery worker SIGKILLed mid-task"] == 1
    assert injected["worker partitioned from SQS"] == 1
    assert injected["worker with a lagging registry"] == 1
    if pg_cluster is not None:
        assert injected["postgres restarts"] == 1
