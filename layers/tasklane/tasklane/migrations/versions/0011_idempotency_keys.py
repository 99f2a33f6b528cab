"""Idempotency keys of requests that create more than one row: a batch of tasks, a workflow.

``POST /tasks`` keeps its key on the task's own row; a batch or a workflow records its key here,
in the transaction that stores its rows: the key, the request's hash, and the ids it created
(the tasks of a batch, in order; a workflow's id). Kept as long as finished tasks
(``RETENTION_DAYS``).

Online-safe: new tables only.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS idempotency_keys (
            owner text NOT NULL DEFAULT '',
            kind text NOT NULL,
            key text NOT NULL,
            request_hash text NOT NULL,
            ids uuid[] NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (owner, kind, key)
        )
        """
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_idempotency_keys_created_at ON idempotency_keys (created_at)"
    )


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
