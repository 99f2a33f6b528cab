"""Cancel, and periodic schedules.

- ``cancelled``: a task stopped before it ran (or that stopped when asked, or whose message
  expired); Celery reports it ``REVOKED``.
- ``cancel_requested_at``: when a running task was asked to stop.
- ``schedules``: each periodic task's last tick fired (a tick's own task row, keyed by
  schedule and tick, is what makes it fire once).

Online-safe: a nullable column, a new table, and the status check added NOT VALID, then
validated.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STATUSES = (
    "status IN ('pending', 'scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled')"
)


def upgrade() -> None:
    op.add_column("tasks", sa.Column("cancel_requested_at", sa.DateTime(timezone=True)))
    op.drop_constraint("ck_tasks_status", "tasks", type_="check")
    op.create_check_constraint("ck_tasks_status", "tasks", STATUSES, postgresql_not_valid=True)
    op.execute("ALTER TABLE tasks VALIDATE CONSTRAINT ck_tasks_status")
    op.create_table(
        "schedules",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("expression", sa.Text(), nullable=False),
        sa.Column("last_tick", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
