"""Schema migrations (Alembic): ``tasklane migrate`` and the deploy-time custom resource."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Alembic is imported when a migration runs, not when the function loads
    from alembic.config import Config
    from sqlalchemy import Connection, Engine


#: How long any statement of a migration waits for a lock before it gives up: the application
#: waits behind it at most that long.
LOCK_TIMEOUT_MS = 2000
#: Tries of a migration whose statement gave up waiting for a lock (55P03), backing off
#: 1, 2, 4, 8 then 15 s between tries.
LOCK_ATTEMPTS = 10
#: SQLSTATE lock_not_available: a statement waited ``lock_timeout`` for a lock.
LOCK_NOT_AVAILABLE = "55P03"

#: What the deploy-time migrator keeps of its function's time to report to CloudFormation
#: (its PUT may take up to 30 s).
REPORT_MARGIN_S = 40


def alembic_config(engine: Engine | None = None, time_limit_s: float | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "tasklane:migrations")
    if engine is not None:
        config.attributes["engine"] = engine
    if time_limit_s is not None:
        config.attributes["statement_timeout_ms"] = max(1, int(time_limit_s * 1000))
        config.attributes["deadline"] = time.monotonic() + time_limit_s
    return config


def upgrade(
    engine: Engine | None = None, revision: str = "head", time_limit_s: float | None = None
) -> None:
    """Create or upgrade the schema; safe to run on every deploy (it never drops data).

    ``engine``: the database's (default: tasklane's own, on a connection without a socket
    timeout). Migrations take a connection of their own, outside any transaction of the
    caller's: an index on a large table is built ``CONCURRENTLY``, which cannot run inside
    one. ``time_limit_s``: the longest any one statement may run, the wait for the migrators'
    lock included (the server cancels it then), and the time after which a migration that
    could not take its table's lock is not tried again.

    Every statement waits at most ``LOCK_TIMEOUT_MS`` for a lock (an ``ALTER TABLE`` queued
    behind an open transaction would queue every statement on the table behind it); a
    migration that gave up is rolled back and tried again, backing off, up to
    ``LOCK_ATTEMPTS`` times."""
    from alembic import command

    command.upgrade(alembic_config(engine, time_limit_s), revision)


def newer_than_this_release(engine: Engine | None = None) -> str | None:
    """The database's schema revision if this release does not know it (a deploy rolled back
    after a newer release migrated), else None."""
    from alembic.script import ScriptDirectory

    with connect(engine) as connection:
        current = current_revision(connection)
    known = {r.revision for r in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    return current if current is not None and current not in known else None


@contextlib.contextmanager
def connect(engine: Engine | None = None) -> Iterator[Connection]:
    """A connection to migrate on: ``engine``'s, or else one of tasklane's database without a
    socket timeout (:func:`tasklane.database.migration_engine`), closed with it."""
    if engine is not None:
        with engine.connect() as connection:
            yield connection
        return
    from tasklane.database import migration_engine

    own = migration_engine()
    try:
        with own.connect() as connection:
            yield connection
    finally:
        own.dispose()


def lock_backoff_s(attempt: int, deadline: float | None) -> float | None:
    """The wait before trying again a migration that gave up waiting for a lock, after its
    ``attempt``-th try; None: do not (tries used up, or no time left before ``deadline``)."""
    wait = min(2.0 ** (attempt - 1), 15.0)
    if attempt >= LOCK_ATTEMPTS:
        return None
    if deadline is not None and time.monotonic() + wait + LOCK_TIMEOUT_MS / 1000 > deadline:
        return None
    return wait


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def handle_custom_resource(event: dict, context: object) -> dict:
    """The deploy-time migration: a CloudFormation custom resource that runs ``upgrade``.

    Create and Update migrate (the resource's properties change with every new layer, so every
    deploy runs it); Delete does nothing, because the schema and its data outlive the stack's
    functions. The outcome is reported to CloudFormation's pre-signed URL; a failure fails the
    deploy and CloudFormation rolls back. Each statement is stopped by the server before the
    function times out, so the outcome is always reported (an index build stopped there is
    built again by the next deploy; on a table too large to index in the function's time, run
    ``tasklane migrate`` from a host first). A schema newer than this release (a rollback) is
    left as it is.
    """
    import json
    import urllib.request

    from tasklane.logs import logger

    status, reason = "SUCCESS", "schema is current"
    if event.get("RequestType") in ("Create", "Update"):
        try:
            if newer := newer_than_this_release():
                # a rollback to this release: its code runs on the newer schema (migrations
                # only add), and failing here would leave the stack UPDATE_ROLLBACK_FAILED
                logger.warning("schema is newer than this release", extra={"revision": newer})
                reason = f"schema revision {newer} is newer than this release: left as it is"
            else:
                upgrade(time_limit_s=_time_left_s(context))
        except Exception as exc:
            logger.exception("migration failed")
            status, reason = "FAILED", f"migration failed: {exc}"[:500]
    response = {
        "Status": status,
        "Reason": reason,
        "PhysicalResourceId": event.get("PhysicalResourceId") or "tasklane-schema",
        "StackId": event.get("StackId"),
        "RequestId": event.get("RequestId"),
        "LogicalResourceId": event.get("LogicalResourceId"),
        "Data": {},
    }
    if url := event.get("ResponseURL"):
        if not url.startswith("https://"):  # CloudFormation's presigned S3 URL, nothing else
            raise ValueError("the custom resource's ResponseURL is not an https URL")
        body = json.dumps(response).encode()
        request = urllib.request.Request(
            url,
            data=body,
            method="PUT",
            headers={"Content-Type": "", "Content-Length": str(len(body))},
        )
        # https only (checked above): no file:// or custom scheme reaches urlopen
        urllib.request.urlopen(request, timeout=30).close()  # nosec B310
    return response


def _time_left_s(context: object) -> float | None:
    """The function's time left, less what reporting the outcome needs; None outside Lambda."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return None if remaining is None else max(1.0, remaining() / 1000 - REPORT_MARGIN_S)
