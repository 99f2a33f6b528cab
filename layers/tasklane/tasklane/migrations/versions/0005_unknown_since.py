"""When consumers first met a task none of them knew (a deploy in progress, or rolled back).

``tasks.unknown_since``: set by the first consumer that does not know the task, cleared by the
claim of one that does. How long it has been unknown decides when to stop offering it again:
the row's ``updated_at`` cannot, since the reconciler touches it.

Online-safe: a nullable column without a default (no rewrite).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("unknown_since", sa.DateTime(timezone=True)))


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
