"""Each task's attempts, kept: when each started and ended, how, with what error, where it ran;
and when a task that failed an attempt is due to try again.

- ``attempt_started_at``: the current attempt's start (``started_at`` is the first one's).
- ``history``: one JSON object per attempt, oldest first, the last 50 kept; appended by the
  same statement that records the attempt's outcome (no extra round trip), kept across a
  manual retry.
- ``retry_at``: when a task ``queued`` after a failed attempt will be delivered again (its
  message's visibility); null otherwise. Backlog figures leave such tasks out until then.

Online-safe: nullable columns without a default are catalog-only; the ``ALTER`` waits for its
lock at most the migrator's ``lock_timeout``, and is tried again.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE tasks ADD COLUMN IF NOT EXISTS attempt_started_at timestamptz, "
        "ADD COLUMN IF NOT EXISTS history jsonb, "
        "ADD COLUMN IF NOT EXISTS retry_at timestamptz"
    )


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
