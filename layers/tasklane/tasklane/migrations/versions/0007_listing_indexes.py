"""Indexes for finding tasks: newest first, by status or by task name, in pages; and by when
they finished.

``GET /tasks`` pages newest first on ``(created_at, id)`` (keyset pagination: stable while
tasks arrive, every page an index range scan however deep). Filtered by status or by task
name, the same order comes from these composite indexes. They replace the index on
``created_at`` alone.

Online-safe: built ``CONCURRENTLY`` (writes go on while they build), outside a transaction,
and ``IF NOT EXISTS``, so a migration interrupted half way can be run again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from alembic import op
from tasklane.migrations.online import create_indexes

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_tasks_created_id": "(created_at DESC, id DESC)",
    "ix_tasks_status_created_id": "(status, created_at DESC, id DESC)",
    "ix_tasks_task_created_id": "(task, created_at DESC, id DESC)",
    # recent completions (GET /stats) and old finished tasks (pruning)
    "ix_tasks_finished_at": "(finished_at) WHERE finished_at IS NOT NULL",
}


def upgrade() -> None:
    with op.get_context().autocommit_block():
        # Entering the block, Alembic reads the isolation level, which pg8000 (not yet in
        # autocommit) wraps in a transaction of its own: end it, or CONCURRENTLY refuses to run.
        op.execute("COMMIT")
        create_indexes(
            {
                name: f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON tasks {columns}"
                for name, columns in INDEXES.items()
            }
        )
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_tasks_created_at")


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
