"""Alembic environment: migrations run on tasklane's own engine (DATABASE_URL or the secret)."""

from __future__ import annotations

from alembic import context

from tasklane.store import metadata

#: One migrator at a time (deploys may overlap).
LOCK = 7216384501


def run_migrations_online() -> None:
    engine = context.config.attributes.get("engine")
    if engine is None:
        from tasklane.database import engine as tasklane_engine

        engine = tasklane_engine()
    with engine.connect() as connection:
        _run(connection)


def _run(connection) -> None:
    # A session-level advisory lock: it holds across the commits of a migration that builds an
    # index concurrently (outside a transaction), where a transaction-scoped one would not.
    connection.exec_driver_sql(f"SELECT pg_advisory_lock({LOCK})")
    connection.commit()
    try:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            compare_type=True,
            transaction_per_migration=True,  # an autocommit block commits what came before
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.exec_driver_sql(f"SELECT pg_advisory_unlock({LOCK})")
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("tasklane migrations run online only: tasklane migrate")
run_migrations_online()
