"""The schema's migrations: online-safe on a table with data, repeatable, and what the code's
table definitions say."""

from __future__ import annotations

import uuid

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from tasklane import migrate
from tasklane.store import metadata


def revisions() -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def table_file(engine) -> int:
    """The tasks table's file on disk: a migration that rewrites the table changes it."""
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT relfilenode FROM pg_class WHERE relname = 'tasks'")
        ).scalar_one()


def test_each_migration_keeps_the_rows_and_never_rewrites_the_table(fresh_database):
    fresh = fresh_database
    first, *later = revisions()
    migrate.upgrade(fresh, first)
    task_id = uuid.uuid4()
    with fresh.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (id, task, lane, status, payload) "
                "VALUES (:id, 'text.wordcount', 'lambda', 'queued', '{\"text\": \"kept\"}')"
            ),
            {"id": task_id},
        )
    before = table_file(fresh)
    for revision in later:  # one at a time, as deploys would apply them
        migrate.upgrade(fresh, revision)
        assert table_file(fresh) == before, f"{revision} rewrote the tasks table"
    with fresh.connect() as conn:
        row = conn.execute(
            text("SELECT status, payload FROM tasks WHERE id = :id"), {"id": task_id}
        ).one()
        invalid = conn.execute(
            text(
                "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                "WHERE c.relname = 'tasks' AND NOT i.indisvalid"
            )
        ).scalar_one()
    assert row.status == "queued" and row.payload == {"text": "kept"}
    assert invalid == 0  # every index built concurrently finished


def test_migrating_again_changes_nothing_and_matches_the_code(fresh_database):
    fresh = fresh_database
    migrate.upgrade(fresh)
    migrate.upgrade(fresh)  # every deploy runs it
    with fresh.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == revisions()[-1]
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
