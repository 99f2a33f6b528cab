"""Claims held by a delivery, dead-letter counts, and run_at for tasks due later.

- ``claimed_by``: the delivery (``<SQS message id>#<random>``) that holds or last held the claim.
  Outcomes are written only by that delivery, and a dead letter fails a task only when it is the
  message that carried the task's attempts.
- ``dead_letters``: dead letters of a task that never got to run; bounds how often it is put
  back to pending.
- ``run_at``: when a task is due (eta/countdown); status ``scheduled`` until it is sent.

Online-safe on a large table: nullable columns and a constant default are catalog-only changes,
and the new status check is added NOT VALID, then validated without blocking writes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STATUSES = "status IN ('pending', 'scheduled', 'queued', 'running', 'succeeded', 'failed')"


def upgrade() -> None:
    op.add_column("tasks", sa.Column("claimed_by", sa.Text()))
    op.add_column(
        "tasks", sa.Column("dead_letters", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("tasks", sa.Column("run_at", sa.DateTime(timezone=True)))
    op.drop_constraint("ck_tasks_status", "tasks", type_="check")
    op.create_check_constraint("ck_tasks_status", "tasks", STATUSES, postgresql_not_valid=True)
    op.execute("ALTER TABLE tasks VALIDATE CONSTRAINT ck_tasks_status")


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
