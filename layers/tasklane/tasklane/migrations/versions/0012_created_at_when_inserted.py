"""A task's (and a workflow's) ``created_at`` is when its insert ran, not when its transaction
began.

``now()`` is the transaction's start: a task enqueued with ``connection=`` in a transaction that
ran for minutes got that start as ``created_at``, and landed behind the listing pages a client
had already read (they are newest first, by ``created_at``). ``statement_timestamp()`` is the
insert's own time. (A transaction that commits long after its insert still lands behind pages
read in between: a listing sees rows as they commit.)

Online-safe: a column default is catalog-only; the ``ALTER`` waits for its lock at most the
migrator's ``lock_timeout``, and is tried again.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("tasks", "workflows"):
        op.execute(f"ALTER TABLE {table} ALTER COLUMN created_at SET DEFAULT statement_timestamp()")


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
