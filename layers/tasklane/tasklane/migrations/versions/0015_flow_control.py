"""Flow control: unique tasks, concurrency and rate limits, ordered keys.

- ``unique_key`` (:mod:`tasklane.unique`), ``unique_until`` (until when the key stays taken
  whatever the task's status: its ``unique_for``), and an index of the tasks that have a key,
  by name, key and newest first: a unique submission reads the newest namesake with its key;
- ``concurrency_key``: the key a concurrency limit counts running tasks by
  (:mod:`tasklane.limits`), and ``waiting_on``: why a task that could be delivered waits;
- ``rate_key``, ``rate_slot`` (the turn a rate limit gave a task) and the ``rate_buckets``
  table: each rate-limited name and key, with when its next start is free;
- ``ordering_key``, ``ordering_pos`` (its place in its batch), and the index of each key's
  line: its live tasks, oldest first.

Online-safe and safe to run again, as 0009: nullable columns without a default are
catalog-only, and the table is new; the index holds only tasks with a key and is built
``CONCURRENTLY`` (an interrupted build's INVALID leftover is built again).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from alembic import op
from tasklane.migrations.online import create_indexes, require_valid

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_tasks_task_unique_key": "CREATE INDEX CONCURRENTLY IF NOT EXISTS "
    "ix_tasks_task_unique_key ON tasks (task, unique_key, created_at DESC) "
    "WHERE unique_key IS NOT NULL",
    "ix_tasks_ordering_line": "CREATE INDEX CONCURRENTLY IF NOT EXISTS "
    "ix_tasks_ordering_line ON tasks (task, ordering_key, created_at, ordering_pos) "
    "WHERE ordering_key IS NOT NULL "
    "AND status IN ('waiting', 'pending', 'scheduled', 'queued', 'running')",
}


def upgrade() -> None:
    op.execute(
        "ALTER TABLE tasks ADD COLUMN IF NOT EXISTS unique_key text, "
        "ADD COLUMN IF NOT EXISTS unique_until timestamptz, "
        "ADD COLUMN IF NOT EXISTS concurrency_key text, "
        "ADD COLUMN IF NOT EXISTS rate_key text, "
        "ADD COLUMN IF NOT EXISTS rate_slot timestamptz, "
        "ADD COLUMN IF NOT EXISTS ordering_key text, "
        "ADD COLUMN IF NOT EXISTS ordering_pos integer, "
        "ADD COLUMN IF NOT EXISTS waiting_on text"
    )
    op.execute(
        "CREATE TABLE IF NOT EXISTS rate_buckets ("
        "name text PRIMARY KEY, next_free timestamptz NOT NULL)"
    )
    with op.get_context().autocommit_block():
        op.execute("COMMIT")  # see 0007: pg8000 opened a transaction reading the isolation level
        create_indexes(INDEXES)
        require_valid(list(INDEXES))


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
