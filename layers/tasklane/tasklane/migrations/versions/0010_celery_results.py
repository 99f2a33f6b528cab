"""Celery's result backend on the task table: a task's Celery meta (``tasks.celery``), and Celery's
groups and chords (``celery_groups``), whose fan-in is a row lock.

``tasks.celery`` holds what Celery's result API reads beyond tasklane's own columns: the Celery
state (custom states included), traceback, children, group and parent ids, and the extended
request fields; the result itself stays in ``tasks.result`` (or, for an error, ``tasks.error``).

Online-safe: a nullable column without a default (no rewrite) and new tables; the ``ALTER``
waits for its lock at most the migrator's ``lock_timeout`` (then the migration is tried
again), so it never queues every reader of ``tasks`` behind an open transaction.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE tasks ADD COLUMN IF NOT EXISTS celery jsonb")
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS celery_groups (
            id text PRIMARY KEY,
            result jsonb NOT NULL,
            chord_size integer,
            done integer NOT NULL DEFAULT 0,
            fired_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS celery_chord_parts (
            group_id text,
            member_id text,
            PRIMARY KEY (group_id, member_id)
        )
        """
    )


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
