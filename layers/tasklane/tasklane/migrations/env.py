"""Alembic environment: migrations run on the engine given, or on tasklane's own database
(DATABASE_URL or the secret) through a connection without a socket timeout."""

from __future__ import annotations

import itertools
import time

from alembic import context
from sqlalchemy.exc import DBAPIError

from tasklane.logs import logger
from tasklane.migrate import LOCK_NOT_AVAILABLE, LOCK_TIMEOUT_MS, connect, lock_backoff_s
from tasklane.store import metadata, sqlstate

#: One migrator at a time (deploys may overlap).
LOCK = 7216384501


def run_migrations_online() -> None:
    with connect(context.config.attributes.get("engine")) as connection:
        _run(connection)


def _run(connection) -> None:
    limit_ms = context.config.attributes.get("statement_timeout_ms")
    if limit_ms:
        # the server cancels a statement that would outlast the migrator (the wait for the
        # lock too): an index build stopped there is INVALID, and the next run builds it again
        connection.exec_driver_sql(f"SET statement_timeout = {int(limit_ms)}")
        connection.commit()
    try:
        _migrate(connection)
    finally:
        if limit_ms:
            connection.rollback()
            connection.exec_driver_sql("RESET statement_timeout")
            connection.commit()


def _migrate(connection) -> None:
    # A session-level advisory lock: it holds across the commits of a migration that builds an
    # index concurrently (outside a transaction), where a transaction-scoped one would not.
    connection.exec_driver_sql(f"SELECT pg_advisory_lock({LOCK})")
    # Every statement of every migration, past and future, waits for a lock only briefly: the
    # application's statements queue behind a waiting ALTER TABLE, never for long.
    connection.exec_driver_sql(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
    connection.commit()
    try:
        for attempt in itertools.count(1):
            try:
                _run_pending(connection)
                return
            except DBAPIError as exc:
                wait = lock_backoff_s(attempt, context.config.attributes.get("deadline"))
                if sqlstate(exc) != LOCK_NOT_AVAILABLE or wait is None:
                    raise
                connection.rollback()  # the migration's transaction: it runs again whole
                logger.warning(
                    "a migration waited too long for a lock; trying again",
                    extra={"attempt": attempt, "wait_s": wait},
                )
                time.sleep(wait)
    finally:
        connection.rollback()
        connection.exec_driver_sql("RESET lock_timeout")
        connection.exec_driver_sql(f"SELECT pg_advisory_unlock({LOCK})")
        connection.commit()


def _run_pending(connection) -> None:
    """The migrations from the database's revision to the target, each in a transaction."""
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        transaction_per_migration=True,  # an autocommit block commits what came before
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()


if context.is_offline_mode():
    raise SystemExit("tasklane migrations run online only: tasklane migrate")
run_migrations_online()
