"""Celery workers' heartbeats: each running worker's name, host, pid, queues, concurrency, the
tasks it is running and when it last said so (the operator's workers view).

Online-safe: a new table, nothing else is touched.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE IF NOT EXISTS workers ("
        "name text PRIMARY KEY, host text NOT NULL, pid integer NOT NULL, "
        "queues text NOT NULL DEFAULT '', concurrency integer, active jsonb, "
        "started_at timestamptz NOT NULL DEFAULT now(), "
        "last_seen timestamptz NOT NULL DEFAULT now())"
    )


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
