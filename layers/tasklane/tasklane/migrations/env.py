"""Alembic environment: migrations run on tasklane's own engine (DATABASE_URL or the secret)."""

from __future__ import annotations

from alembic import context

from tasklane.store import metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        from tasklane.database import engine

        with engine().connect() as connection:
            _run(connection)
    else:
        _run(connection)


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        # One migrator at a time (deploys may overlap): a transaction-scoped advisory lock.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7216384501)")
        context.run_migrations()
    connection.commit()


if context.is_offline_mode():
    raise SystemExit("tasklane migrations run online only: tasklane migrate")
run_migrations_online()
