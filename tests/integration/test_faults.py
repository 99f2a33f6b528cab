"""A small run of the fault-injection suite (tests/faultsuite.py; a larger one runs as a script)."""

from __future__ import annotations

import pytest
from tasklane.config import settings

from tests.conftest import queue_specs
from tests.faultsuite import MAX_RECEIVES, Environment, run


@pytest.mark.slow
def test_no_task_is_lost_and_none_runs_again_without_a_fault_under_faults(
    stack, pg_cluster, monkeypatch
):
    from tasklane.local.sqs import create_queues

    urls = create_queues(stack.sqs, queue_specs("faults", MAX_RECEIVES))
    env = stack.env | {
        "PENDING_GRACE_SECONDS": "1",  # the reconciler re-sends failed sends soon
        "QUEUED_GRACE_SECONDS": "30",
        "LAMBDA_QUEUE_URL": urls["LambdaQueue"],
        "CELERY_QUEUE_URL": urls["CeleryQueue"],
        "LAMBDA_DLQ_URL": urls["LambdaDeadLetterQueue"],
        "CELERY_DLQ_URL": urls["CeleryDeadLetterQueue"],
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings.cache_clear()
    report = run(Environment(env, urls, stack.sqs, pg_cluster), tasks=60, timeout=300)
    print("\n".join(report.explained + report.problems))
    assert report.submitted >= 59
    assert report.lost == 0, report.problems
    assert report.executed_more_than_once == 0, report.problems
    assert report.transactional_tasks >= 10 and report.transactional_effects_doubled == 0
    assert report.workflows >= 2 and report.workflows_unfinished == 0, report.problems
    assert report.bodies_before_members == 0, report.problems
    assert report.succeeded + report.failed_as_expected + report.cancelled_as_asked == (
        report.submitted
    )
    assert report.cancelled_as_asked == 1, report.problems  # the cancel during a deadlock
    assert report.failed_as_expected >= 5  # the permanent failures, and the unloadable payload
    injected = report.injected
    assert injected["duplicate deliveries"] > 0 and injected["lost commit replies"] > 0
    assert injected["poison messages"] == 6 and injected["payloads refused at the API"] == 2
    assert injected["unloadable payloads stored"] == 1
    assert injected["pool process SIGKILLed mid-task"] == 1, report.problems
    assert injected["celery worker SIGKILLed mid-task"] == 1
    assert injected["worker partitioned from SQS"] == 1
    assert injected["worker with a lagging registry"] == 1
    assert injected["cancel, then a deadlock"] == 1
    assert injected["a migration behind an open transaction"] == 1
    assert injected["a schedule broken at run time"] == 1
    assert not [p for p in report.problems if p.startswith(("schedule", "migration"))]
    if pg_cluster is not None:
        assert injected["postgres restarts"] == 1
