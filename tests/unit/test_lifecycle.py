from __future__ import annotations

import pytest
from tasklane.lifecycle import (
    TERMINAL,
    Status,
    can_transition,
    retry_delay_seconds,
)


def test_terminal_statuses_allow_only_a_retry_of_failed():
    assert {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED} == TERMINAL
    assert not any(can_transition(Status.CANCELLED, s) for s in Status)
    assert not any(can_transition(Status.SUCCEEDED, s) for s in Status)
    assert [s for s in Status if can_transition(Status.FAILED, s)] == [Status.PENDING]


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        (Status.PENDING, Status.QUEUED, True),
        (Status.PENDING, Status.RUNNING, True),  # consumer may beat the producer's queued update
        (Status.QUEUED, Status.RUNNING, True),
        (Status.RUNNING, Status.RUNNING, True),  # an expired lease re-claimed
        (Status.RUNNING, Status.QUEUED, True),  # a failed attempt that will be retried
        (Status.QUEUED, Status.SUCCEEDED, False),  # only a claim holder finishes a task
        (Status.SUCCEEDED, Status.RUNNING, False),
        (Status.QUEUED, Status.SCHEDULED, True),  # a stock message whose eta is far off
        (Status.SCHEDULED, Status.PENDING, True),  # due: the scheduler sends it
        (Status.SCHEDULED, Status.RUNNING, False),  # never claimed before it is due
        (Status.WAITING, Status.PENDING, True),  # a workflow step whose predecessors succeeded
        (Status.WAITING, Status.RUNNING, False),  # it has no message before that
    ],
)
def test_transitions(current, target, allowed):
    assert can_transition(current, target) is allowed


def test_back_off_grows_and_is_capped():
    delays = [retry_delay_seconds(n) for n in range(1, 12)]
    assert delays[:4] == [2, 4, 8, 16]
    assert delays == sorted(delays)
    assert max(delays) == 300
