"""Schema migrations (Alembic): ``tasklane migrate`` and the deploy-time custom resource."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Alembic is imported when a migration runs, not when the function loads
    from alembic.config import Config
    from sqlalchemy import Connection, Engine


def alembic_config(engine: Engine | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "tasklane:migrations")
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine | None = None, revision: str = "head") -> None:
    """Create or upgrade the schema; safe to run on every deploy (it never drops data).

    ``engine``: the database's (default: tasklane's own). Migrations take a connection of
    their own, outside any transaction of the caller's: an index on a large table is built
    ``CONCURRENTLY``, which cannot run inside one."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def handle_custom_resource(event: dict, context: object) -> dict:
    """The deploy-time migration: a CloudFormation custom resource that runs ``upgrade``.

    Create and Update migrate (the resource's properties change with every new layer, so every
    deploy runs it); Delete does nothing, because the schema and its data outlive the stack's
    functions. The outcome is reported to CloudFormation's pre-signed URL; a failure fails the
    deploy and CloudFormation rolls back.
    """
    import json
    import urllib.request

    from tasklane.logs import logger

    status, reason = "SUCCESS", "schema is current"
    if event.get("RequestType") in ("Create", "Update"):
        try:
            upgrade()
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
