"""When a task's stock Celery message said it expires (``expires``), kept when its ``eta`` defers
it: the message that runs it later is tasklane's own, which carries no such header.

Online-safe: a nullable column without a default (no rewrite).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("expires_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
