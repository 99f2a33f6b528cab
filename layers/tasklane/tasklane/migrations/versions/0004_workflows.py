"""Workflows: chain, group and chord.

- ``workflows``: one row per workflow: its members in order, and where its result comes from.
- ``tasks.workflow_id``: the workflow a task belongs to. Not indexed: a workflow's tasks are
  found through its ``members`` by primary key.
- ``tasks.step``: a workflow task's place in it: the tasks whose results it takes (``after``,
  and how they nest, ``input``), whether it has a payload of its own (``bound``), and the tasks
  that wait for it (``then``).
- status ``waiting``: a step whose predecessors have not all succeeded.

Online-safe: nullable columns without defaults (no rewrite), a new table, and the status check
added NOT VALID, then validated (which locks no writes out).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

STATUSES = (
    "status IN ('waiting', 'pending', 'scheduled', 'queued', 'running', 'succeeded', 'failed', "
    "'cancelled')"
)


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("members", sa.ARRAY(UUID(as_uuid=True)), nullable=False),
        sa.Column("output", JSONB(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.add_column("tasks", sa.Column("workflow_id", UUID(as_uuid=True)))
    op.add_column("tasks", sa.Column("step", JSONB()))
    op.drop_constraint("ck_tasks_status", "tasks", type_="check")
    op.create_check_constraint("ck_tasks_status", "tasks", STATUSES, postgresql_not_valid=True)
    op.execute("ALTER TABLE tasks VALIDATE CONSTRAINT ck_tasks_status")


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
