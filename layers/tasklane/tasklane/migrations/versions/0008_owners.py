"""Who submitted each task and workflow (``owner``): callers see only their own; idempotency
keys become each owner's own.

Online-safe: the columns are ``NOT NULL DEFAULT ''``, which PostgreSQL records in the catalog
without rewriting the table (11 and later); the indexes are built ``CONCURRENTLY`` (writes go
on), and the per-owner unique index is checked valid before the old global one is dropped, so
keys stay unique throughout. The unique index holds only the tasks that have a key: most have
none, and every index on the table is written by every insert.

Safe to run again after an interruption (a build waits for every older transaction, and the
migrator may time out first): columns are added only if missing, and an index an interrupted
``CREATE INDEX CONCURRENTLY`` left behind INVALID is dropped and built again.

Deploying it: the functions update after the migration (``DependsOn: SchemaMigration``), but
functions of the previous release still running at that moment cannot submit with an
Idempotency-Key (their ``ON CONFLICT`` names the dropped constraint), nor can they after a
rollback past this migration: roll forward.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from alembic import op
from tasklane.migrations.online import create_indexes, require_valid

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_tasks_owner_created_id": "CREATE INDEX CONCURRENTLY IF NOT EXISTS "
    "ix_tasks_owner_created_id ON tasks (owner, created_at DESC, id DESC)",
    "ix_tasks_owner_idempotency_key": "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "
    "ix_tasks_owner_idempotency_key ON tasks (owner, idempotency_key) "
    "WHERE idempotency_key IS NOT NULL",
}


def upgrade() -> None:
    for table in ("tasks", "workflows"):
        op.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS owner text NOT NULL DEFAULT ''")
    with op.get_context().autocommit_block():
        op.execute("COMMIT")  # see 0007: pg8000 opened a transaction reading the isolation level
        create_indexes(INDEXES)
        require_valid(["ix_tasks_owner_idempotency_key"])
        op.execute("ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_idempotency_key_key")


def downgrade() -> None:
    raise RuntimeError("tasklane migrations only move forward")
