"""Running tasks by when their lease ends: the reconciler's look for runs whose consumer died.

The reconciler asks each minute for ``running`` tasks whose lease expired. Through
``(status, updated_at)`` that read every running task (long runs keep their lease by
heartbeat, so an old claim is no sign of a dead consumer), and on a table of ten million those
rows lie on more pages: the scan took 1.7 times as long as on ten thousand. This index holds the
running tasks only, ordered by lease end, so the question reads just the expired ones. It is
small (a task leaves it when its run ends), and the statements that claim and settle tasks
change ``status`` already, so they were not heap-only updates before it either.

Online-safe and safe to run again, as 0008.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from alembic import op
from tasklane.migrations.online import create_indexes

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_tasks_running_lease": "CREATE INDEX CONCURRENTLY IF NOT EXISTS "
    "ix_tasks_running_lease ON tasks (lease_until) WHERE status = 'running'",
}


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("COMMIT")  # see 0007: pg8000 opened a transaction reading the isolation level
        create_indexes(INDEXES)


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
