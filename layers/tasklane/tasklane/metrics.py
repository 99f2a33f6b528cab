"""Task counts per lane as CloudWatch metrics (Powertools' embedded metric format on stdout).

Emitted only where ``POWERTOOLS_METRICS_NAMESPACE`` is set (the template sets it), so local runs
and tests print no metric lines. Each call flushes at once: no state survives between requests,
which matters in a long-running Celery worker.
"""

from __future__ import annotations

import os

SUBMITTED = "TasksSubmitted"
SUCCEEDED = "TasksSucceeded"
FAILED = "TasksFailed"
ATTEMPTS_FAILED = "TaskAttemptsFailed"
#: Finished tasks deleted by the retention prune (lane "all").
PRUNED = "TasksPruned"
#: Reconciler phases that failed, each logged with its name (lane "all").
RECONCILER_ERRORS = "ReconcilerErrors"


def count(name: str, lane: str, value: int = 1) -> None:
    if value <= 0 or not os.environ.get("POWERTOOLS_METRICS_NAMESPACE"):
        return
    from aws_lambda_powertools import single_metric
    from aws_lambda_powertools.metrics import MetricUnit

    with single_metric(name=name, unit=MetricUnit.Count, value=value) as metric:
        metric.add_dimension(name="lane", value=lane)
