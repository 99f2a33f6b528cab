"""Priorities: a task's ``priority`` (0 to 9, :mod:`tasklane.lanes`), kept so that every later
send of it (a retry, the reconciler's, a release) goes by the same queue as the first.

Online-safe and safe to run again: a nullable column without a default is catalog-only (null
reads as 0).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE tasks ADD COLUMN IF NOT EXISTS priority smallint")


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
