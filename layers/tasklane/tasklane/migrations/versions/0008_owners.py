"""Who submitted each task and workflow (``owner``): callers see only their own; idempotency
keys become each owner's own.

Online-safe: the columns are ``NOT NULL DEFAULT ''``, which PostgreSQL records in the catalog
without rewriting the table (11 and later); the indexes are built ``CONCURRENTLY`` and
``IF NOT EXISTS`` (writes go on; an interrupted run can be run again); the per-owner unique
index exists before the old global one is dropped, so keys stay unique throughout.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("tasks", "workflows"):
        op.add_column(table, sa.Column("owner", sa.Text(), nullable=False, server_default=""))
    with op.get_context().autocommit_block():
        op.execute("COMMIT")  # see 0007: pg8000 opened a transaction reading the isolation level
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_tasks_owner_created_id "
            "ON tasks (owner, created_at DESC, id DESC)"
        )
        op.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix_tasks_owner_idempotency_key "
            "ON tasks (owner, idempotency_key)"
        )
        op.execute("ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_idempotency_key_key")


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
