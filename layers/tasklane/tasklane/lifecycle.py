"""The task state machine: statuses and the transitions between them. Pure; no I/O.

                       waiting (a workflow's step, until its predecessors succeed)
                          │
                          ▼
    scheduled ──due──▶ pending ──send──▶ queued ──claim──▶ running ──▶ succeeded
                          │                ▲                  │  └───▶ failed ──retry──▶ pending
                          └──claim─────────┼──────────────────┘            ▲
                                           └── attempt failed, retryable ◀─┘ (last attempt,
                                                                              or dead letter)

``scheduled`` waits for its ``run_at`` (later than a queue's delay allows); ``pending`` means
stored but not yet confirmed on SQS (the reconciler sends those); ``running`` is held by one
delivery under a lease, so a crashed consumer's task can be claimed again once it expires.
``waiting`` is a workflow's step whose predecessors have not all succeeded (it has no message
yet; the last of them makes it ``pending``). Any task not yet finished can end ``cancelled``:
at once if it is waiting, when its run stops if it is running (asked, it sees the request).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    WAITING = "waiting"
    PENDING = "pending"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})

#: Statuses from which a delivery may claim the task (``running`` only once its lease expired).
CLAIMABLE = frozenset({Status.PENDING, Status.QUEUED})

#: Statuses with a message on its way (or being sent): a dead letter may concern them.
IN_FLIGHT = frozenset({Status.PENDING, Status.QUEUED, Status.RUNNING})

#: Statuses of a task not finished: to run, or running.
LIVE_STATUSES = frozenset(Status) - TERMINAL

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.WAITING: frozenset({Status.PENDING, Status.CANCELLED}),
    Status.SCHEDULED: frozenset({Status.PENDING, Status.CANCELLED}),
    Status.PENDING: frozenset({Status.QUEUED, Status.RUNNING, Status.FAILED, Status.CANCELLED}),
    Status.QUEUED: frozenset({Status.SCHEDULED, Status.RUNNING, Status.FAILED, Status.CANCELLED}),
    Status.RUNNING: frozenset(
        {Status.RUNNING, Status.SUCCEEDED, Status.QUEUED, Status.FAILED, Status.CANCELLED}
    ),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset({Status.PENDING}),
    Status.CANCELLED: frozenset(),
}


def can_transition(current: Status, target: Status) -> bool:
    """Whether ``current → target`` is allowed; the store's conditional updates encode the same."""
    return target in TRANSITIONS[current]


#: The longest a failed attempt's message waits before it is delivered again.
MAX_BACKOFF_S = 300


def retry_delay_seconds(attempts: int, *, base: int = 2, cap: int = MAX_BACKOFF_S) -> int:
    """Exponential back-off for the message's visibility after a failed attempt (capped)."""
    return min(cap, base ** max(1, min(attempts, 32)))
