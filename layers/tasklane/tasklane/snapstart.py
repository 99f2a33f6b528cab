"""Lambda SnapStart for the HTTP API's function: the work of a cold start done once, before the
snapshot, and nothing carried across it that must be unique or live.

With SnapStart (the template's ``SnapStart=Enabled``), Lambda initializes a published version
once, snapshots its memory, and starts new execution environments from that snapshot. What the
producer spends on a cold start is imports (SQLAlchemy, Powertools, pydantic) and first-use
warm-up (validation models, botocore's service model): all of it is done here, before the
snapshot. What must not be shared by every environment restored from one snapshot is dropped
after each restore: database connections (a socket in a snapshot is dead, and the secret may have
rotated), AWS clients (their connections and credentials), and the ``random`` module's state.
Task ids come from :func:`uuid.uuid4`, which reads the kernel's randomness at each call, so
they stay unique without help.

Lambda's Python runtime provides ``snapshot_restore_py``; elsewhere (the local stack, the
workers) :func:`register` does nothing.
"""

from __future__ import annotations

import json
import os
import random


def before_snapshot() -> None:
    """Imports and warm-up: everything a first request would otherwise pay for."""
    import botocore.session

    from tasklane import api, database, store  # noqa: F401  (imported for the snapshot)
    from tasklane.config import settings

    config = settings()
    api.openapi_json()
    # an identity of the API's kind, so that the request gets past the check for one
    identity = {
        "AWS_IAM": {"iam": {"userArn": "arn:aws:iam::000000000000:user/snapstart-warm-up"}},
        "JWT": {"jwt": {"claims": {"iss": "snapstart", "sub": "warm-up"}}},
    }.get(config.api_authorization)
    # A request refused by validation runs the routing and pydantic's validators, and never
    # reaches the database or SQS.
    warm = {
        "version": "2.0",
        "routeKey": "POST /tasks",
        "rawPath": "/tasks",
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "http": {"method": "POST", "path": "/tasks"},
            "stage": "$default",
            "authorizer": identity,
        },
        "body": json.dumps({"task": "", "payload": None}),
        "isBase64Encoded": False,
    }
    api.handle(warm, None)
    botocore.session.get_session().get_service_model("sqs")  # the model, not a client
    database.reset()  # nothing opened above must be in the snapshot; this makes sure


def after_restore() -> None:
    """Drop what the snapshot may hold that must be this environment's own."""
    from tasklane import broker, database

    database.reset()  # connections: opened again, with the secret read again, on first use
    broker.sqs.cache_clear()  # AWS clients: made again, with fresh credentials
    random.seed(os.urandom(32))


def register() -> bool:
    """Register the hooks with Lambda's runtime; False where there is no SnapStart."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False
    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)
    return True
