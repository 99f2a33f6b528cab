"""The reconciler's and the scheduler's indexes hold the live tasks only.

Each minute the reconciler asks for ``running`` tasks whose lease expired and for ``pending``
and ``queued`` tasks untouched for a while; the scheduler asks for ``scheduled`` tasks coming
due. Those are a few thousand rows in a table of millions, and each question was answered from
an index over the whole table, or by reading every task of the status: every running task
(long runs keep their lease by heartbeat, so an old claim is no sign of a dead consumer), every
scheduled task however far off. On ten million tasks the reconciler's scan took 1.7 times as
long as on ten thousand. These partial indexes hold just the rows each question is about, in
the order it asks for them:

- ``ix_tasks_running_lease``: running tasks by lease end;
- ``ix_tasks_scheduled_run_at``: scheduled tasks by when they are due;
- ``ix_tasks_waiting_updated_at``: pending and queued tasks by last write. It replaces
  ``ix_tasks_status_updated_at``, which held every task (finished ones too, read by nothing)
  and was written by every insert and outcome.

A task leaves these indexes when its run ends. Claims and outcomes change ``status`` already,
so they were not heap-only (HOT) updates before either. A Celery-lane heartbeat was: it moves
``lease_until`` only, which is now indexed, so each heartbeat writes index entries. A review
measured 48 µs of server time a heartbeat against 25 µs before (300k tasks, 20k running). A
running task beats every third of the queue's visibility timeout (20 minutes by default), so
this costs about what the reconciler's minutely read of every long run cost; at the shortest
timeout (60 s) it costs more, a few tens of milliseconds a minute per thousand runs.

Online-safe and safe to run again, as 0008: the new indexes are built ``CONCURRENTLY`` (an
interrupted build's INVALID leftover is built again), and the old one is dropped only after.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from alembic import op
from tasklane.migrations.online import create_indexes, require_valid

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_tasks_running_lease": "CREATE INDEX CONCURRENTLY IF NOT EXISTS "
    "ix_tasks_running_lease ON tasks (lease_until) WHERE status = 'running'",
    "ix_tasks_scheduled_run_at": "CREATE INDEX CONCURRENTLY IF NOT EXISTS "
    "ix_tasks_scheduled_run_at ON tasks (run_at) WHERE status = 'scheduled'",
    "ix_tasks_waiting_updated_at": "CREATE INDEX CONCURRENTLY IF NOT EXISTS "
    "ix_tasks_waiting_updated_at ON tasks (status, updated_at) "
    "WHERE status IN ('pending', 'queued')",
}


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("COMMIT")  # see 0007: pg8000 opened a transaction reading the isolation level
        create_indexes(INDEXES)
        require_valid(list(INDEXES))  # the old index goes only once its successors serve
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_tasks_status_updated_at")


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
