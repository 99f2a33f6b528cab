"""The reconciler's pass: what is due is sent, what was left behind is sent again, each
periodic task's ticks fire; and, on its own schedule, the retention prune.

A pass is made of phases (each schedule, the due sends, the stale rescue), each isolated:
one that fails is logged and counted, and the others go on. No phase has a fixed cap: each
claims and sends in batches until nothing is left or the pass's time is spent.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from tasklane import broker, metrics, payloads, periodic, registry
from tasklane.config import Settings, settings
from tasklane.lanes import Lane, high_queue_url, queue_url
from tasklane.lifecycle import Status
from tasklane.logs import logger
from tasklane.sending import send
from tasklane.service import Submission, new_task
from tasklane.store import TaskRecord, TaskStore, default_store


def fire_schedules(
    *, store: TaskStore | None = None, config: Settings | None = None, now: datetime | None = None
) -> list[TaskRecord]:
    """Fire the periodic tasks' ticks due within SQS's delay limit (:mod:`tasklane.periodic`):
    a task per tick, sent delayed to run at its tick; missed ticks coalesced unless the
    schedule catches up. Each tick's task is keyed by schedule and tick, so passes side by side
    fire it once. ``now``: the clock (a test's)."""
    store = store or default_store()
    now = now or datetime.now(UTC)
    fired: list[TaskRecord] = []
    for spec in registry.all_tasks():
        if spec.schedule is not None:
            with phase(f"schedule {spec.name}"):
                fired += _fire_schedule(spec.name, spec.schedule, store, now)
    if fired:
        logger.info("periodic ticks fired", extra={"count": len(fired)})
    return send(fired, store, config or settings()) if fired else []


def _fire_schedule(
    name: str, schedule: periodic.Schedule, store: TaskStore, now: datetime
) -> list[TaskRecord]:
    """One schedule's ticks now due: a task each (coalesced unless it catches up)."""
    seen = store.schedule_last_tick(name, schedule.expression, now)
    due = schedule.due(seen, now, now + timedelta(seconds=broker.MAX_DELAY_S))
    if not due:
        return []
    fired = []
    payload_json = payloads.dumps(schedule.payload)
    for tick in periodic.coalesced(due, now, schedule.catch_up):
        sub = Submission(name, payload_json, tick, f"at:{tick.isoformat()}")
        record, _, created = store.insert_idempotent(
            new_task(sub),
            f"periodic:{name}:{tick.isoformat()}",
            sub.request_hash,
            broker.MAX_DELAY_S,
        )
        if created:
            fired.append(record)
    store.advance_schedule(name, seen, due[-1])
    return fired


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """One phase of a reconciler pass (a schedule, the due sends, the stale rescue): its
    failure is logged with its name and counted (``ReconcilerErrors``, alarmed in the
    template), and the pass goes on with the next phase."""
    try:
        yield
    except Exception:
        logger.exception("reconciler phase failed", extra={"phase": name})
        metrics.count(metrics.RECONCILER_ERRORS, "all")


#: Tasks claimed and sent at a time by a reconciler pass (one transaction, SQS batches of ten).
RECONCILE_BATCH = 500
#: What a pass may take unless told (the reconciler's Lambda gives its own time left).
RECONCILE_BUDGET_S = 50.0


def reconcile(
    *,
    store: TaskStore | None = None,
    config: Settings | None = None,
    limit: int = RECONCILE_BATCH,
    budget_s: float = RECONCILE_BUDGET_S,
) -> list[TaskRecord]:
    """The scheduled pass: fire the periodic tasks' ticks, send the ``scheduled`` tasks now due
    within SQS's delay limit, and again the tasks whose message may be missing (the outbox
    relay): left ``pending``, ``running`` under a lease long expired, or ``queued`` with no
    delivery for too long in a lane whose queue is empty; and the first task of an ordered
    key's line left waiting with nothing of the line on its way.

    No cap on what is due: each phase claims and sends ``limit`` tasks at a time until none
    is left or ``budget_s`` is spent; what is left then goes to the passes already running
    beside it (the schedule starts one a minute; ``FOR UPDATE SKIP LOCKED`` shares the rows)."""
    store = store or default_store()
    config = config or settings()
    deadline = time.monotonic() + budget_s
    with phase("schedules"):
        fire_schedules(store=store, config=config)
    due: list[TaskRecord] = []
    stale: list[TaskRecord] = []
    with phase("due sends"):
        due = _in_batches(
            lambda: store.claim_due(broker.MAX_DELAY_S, limit), limit, deadline, store, config
        )
    with phase("stale rescue"):
        lanes = quiet_lanes(config)
        stale = _in_batches(
            lambda: store.claim_stale(
                config.pending_grace_seconds, config.queued_grace_seconds, lanes, limit
            ),
            limit,
            deadline,
            store,
            config,
        )
    with phase("ordered lines"):
        released = _in_batches(
            lambda: store.release_stalled(config.pending_grace_seconds, limit),
            limit,
            deadline,
            store,
            config,
        )
    if not due and not stale and not released:
        return []
    records = due + stale + released
    logger.info(
        "reconciled tasks",
        extra={
            "due": len(due),
            "stale": len(stale),
            "released": len(released),
            "queued": sum(r.status is Status.QUEUED for r in records),
        },
    )
    return records


def _in_batches(
    claim: Callable[[], list[TaskRecord]],
    limit: int,
    deadline: float,
    store: TaskStore,
    config: Settings,
) -> list[TaskRecord]:
    """Claim and send batch after batch, until a batch comes short or the time is spent."""
    done: list[TaskRecord] = []
    while True:
        batch = claim()
        done += send(batch, store, config) if batch else []
        if len(batch) < limit or time.monotonic() >= deadline:
            return done


def prune(
    older_than: timedelta | None = None,
    payloads_older_than: timedelta | None = None,
    *,
    dry_run: bool = False,
    store: TaskStore | None = None,
    config: Settings | None = None,
) -> dict[str, int]:
    """Retention: delete tasks finished more than ``older_than`` ago (``RETENTION_DAYS``) and
    drop the payloads of tasks succeeded more than ``payloads_older_than`` ago
    (``PAYLOAD_RETENTION_DAYS``); never an unfinished task. What was removed, by kind."""
    config = config or settings()
    now = datetime.now(UTC)
    older_than = older_than or timedelta(days=config.retention_days)
    payloads_older_than = payloads_older_than or timedelta(days=config.payload_retention_days)
    counts = (store or default_store()).prune(
        now - older_than, now - payloads_older_than, dry_run=dry_run
    )
    if not dry_run:
        logger.info("pruned", extra=counts)
        metrics.count(metrics.PRUNED, "all", counts["tasks"])
    return counts


def quiet_lanes(config: Settings) -> list[str | tuple[str, bool]]:
    """Queues with no message waiting: a task ``queued`` there for long has lost its message,
    rather than waiting its turn behind a backlog. A lane without a high-priority queue is its
    name (every priority); a lane with one, ``(lane, high)`` for each of its quiet queues, so a
    backlog in one does not hold back a lost message of the other."""
    quiet: list[str | tuple[str, bool]] = []
    for lane in Lane:
        high = high_queue_url(lane, config)
        for is_high in (False, True) if high else (False,):
            try:
                url = high if is_high else queue_url(lane, config)
                if broker.waiting_messages(url) == 0:
                    quiet.append((lane.value, is_high) if high else lane.value)
            except Exception as exc:  # unknown depth: assume busy, resend nothing queued there
                logger.warning(
                    "queue depth unknown", extra={"lane": lane, "high": is_high, "error": str(exc)}
                )
    return quiet
