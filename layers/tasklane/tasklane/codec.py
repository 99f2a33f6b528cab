"""The wire codec: Celery task protocol 2 messages as kombu's SQS transport puts them on a queue.

Pure functions, text in and text out. ``encode`` produces byte for byte what a stock Celery 5.7
producer sends for ``send_task(name, args=[id], task_id=id)`` (JSON serializer, base64 envelope),
so stock Celery workers run tasklane's messages and tasklane runs stock Celery's. ``decode`` is
strict: anything that is not a JSON protocol-2 message raises :class:`MessageDecodeError`, and no
other serializer (pickle, yaml, msgpack) is ever decoded.

Layout of an SQS body (see ``shared/vectors``)::

    base64( {"body": base64(json([args, kwargs, embed])), "content-encoding": "utf-8",
             "content-type": "application/json", "headers": {...}, "properties": {...}} )
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tasklane.errors import MessageDecodeError
from tasklane.moments import in_range

CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(frozen=True, slots=True)
class CeleryMessage:
    """The fields of a protocol-2 message that a consumer acts on."""

    task: str
    id: str
    args: list[Any]
    kwargs: dict[str, Any]
    retries: int = 0
    eta: str | None = None
    expires: str | None = None
    content_type: str = CONTENT_TYPE
    routing_key: str | None = None
    headers: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def eta_at(self) -> datetime | None:
        """When the message asks to run (``countdown``/``eta``), as an aware time."""
        return instant(self.eta, "eta")

    @property
    def expires_at(self) -> datetime | None:
        """After when the message must not run (``expires``), as an aware time."""
        return instant(self.expires, "expires")

    @property
    def claim_check(self) -> uuid.UUID:
        """The task row this message points at: its only positional argument, a UUID.

        Raises :class:`MessageDecodeError` for a message that is Celery's but not tasklane's
        (other arguments, keyword arguments): it cannot be run from Postgres.
        """
        if len(self.args) != 1 or self.kwargs or not isinstance(self.args[0], str):
            raise MessageDecodeError(
                f"task {self.task!r}: expected args=[task id] and no kwargs (claim-check message)"
            )
        try:
            return uuid.UUID(self.args[0])
        except ValueError:
            raise MessageDecodeError(f"task {self.task!r}: argument is not a task id") from None


def instant(value: Any, header: str) -> datetime | None:
    """An ISO 8601 header (``eta``, ``expires``) as an aware time; Celery sends UTC, so a naive
    one is read as UTC. :class:`MessageDecodeError` when it is not a time."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise MessageDecodeError(f"header {header!r} is not an ISO 8601 time: {value!r}") from None
    try:
        return in_range(moment if moment.tzinfo else moment.replace(tzinfo=UTC), header)
    except ValueError as exc:  # it could never be kept, nor run when it says
        raise MessageDecodeError(f"header {exc}") from None


def encode(
    task: str,
    task_id: str,
    *,
    routing_key: str,
    origin: str,
    reply_to: str,
    delivery_tag: str,
    base64_envelope: bool = True,
) -> str:
    """The SQS body of a claim-check message for ``task`` whose row id is ``task_id``.

    ``origin``, ``reply_to`` and ``delivery_tag`` are what Celery fills in from the process
    (``gen<pid>@<host>``, the app's oid, a uuid4); they are arguments so this stays pure and the
    golden vectors can be reproduced exactly.
    """
    args = [task_id]
    inner = json.dumps([args, {}, _EMBED]).encode(CONTENT_ENCODING)
    envelope = {
        "body": base64.b64encode(inner).decode("ascii"),
        "content-encoding": CONTENT_ENCODING,
        "content-type": CONTENT_TYPE,
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": repr(args),
            "kwargsrepr": "{}",
            "origin": origin,
            "ignore_result": None,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": reply_to,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": routing_key},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": delivery_tag,
        },
    }
    text = json.dumps(envelope)
    if not base64_envelope:
        return text
    return base64.b64encode(text.encode(CONTENT_ENCODING)).decode("ascii")


def _b64(data: str | bytes, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise MessageDecodeError(f"{what} is not valid base64") from None


def _json(data: str | bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise MessageDecodeError(f"{what} is not valid UTF-8 JSON") from None
    except RecursionError:  # a few KB of brackets: poison, like any undecodable body
        raise MessageDecodeError(f"{what} is nested too deeply to decode") from None


def _envelope(body: str | bytes) -> dict[str, Any]:
    """Step 1: the envelope, from raw JSON or from base64 (kombu's ``sqs_base64_encoding``)."""
    stripped = body.lstrip()
    raw = stripped if stripped[:1] in ("{", b"{") else _b64(stripped, "message body")
    envelope = _json(raw, "message envelope")
    if not isinstance(envelope, dict):
        raise MessageDecodeError("message envelope is not a JSON object")
    missing = {"body", "content-type", "headers", "properties"} - envelope.keys()
    if missing:
        raise MessageDecodeError(f"message envelope lacks {', '.join(sorted(missing))}")
    return envelope


def decode(body: str | bytes) -> CeleryMessage:
    """Decode one SQS message body; raises :class:`MessageDecodeError` on anything else."""
    envelope = _envelope(body)
    content_type = envelope["content-type"]
    if content_type != CONTENT_TYPE:
        raise MessageDecodeError(f"content type {content_type!r} refused: only JSON is accepted")
    encoding = envelope.get("content-encoding", CONTENT_ENCODING)
    if str(encoding).lower() not in ("utf-8", "utf8"):
        raise MessageDecodeError(f"content encoding {encoding!r} refused")
    headers, properties = envelope["headers"], envelope["properties"]
    if not isinstance(headers, dict) or not isinstance(properties, dict):
        raise MessageDecodeError("headers and properties must be JSON objects")
    task, task_id = headers.get("task"), headers.get("id")
    if not isinstance(task, str) or not task or not isinstance(task_id, str) or not task_id:
        raise MessageDecodeError("headers lack the task name or id (not Celery protocol 2)")

    payload = envelope["body"]
    if properties.get("body_encoding") == "base64":
        payload = _b64(payload, "message payload")
    elif not isinstance(payload, str):
        raise MessageDecodeError("message payload is not text")
    decoded = _json(payload, "message payload")
    if not (isinstance(decoded, list) and len(decoded) == 3):
        raise MessageDecodeError("message payload is not [args, kwargs, embed]")
    args, kwargs, _embed = decoded
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise MessageDecodeError("message args must be a list and kwargs an object")

    delivery_info = properties.get("delivery_info") or {}
    retries = headers.get("retries") or 0
    return CeleryMessage(
        task=task,
        id=task_id,
        args=args,
        kwargs=kwargs,
        retries=retries if isinstance(retries, int) else 0,
        eta=headers.get("eta"),
        expires=headers.get("expires"),
        content_type=content_type,
        routing_key=delivery_info.get("routing_key") if isinstance(delivery_info, dict) else None,
        headers=headers,
    )
