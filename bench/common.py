"""Helpers shared by the measurements: the real handlers, events, a statement counter."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event
from tasklane import codec, database
from tasklane.local.events import LambdaContext, http_event, queue_arn, sqs_event
from tasklane.local.functions import load_handler

ROOT = Path(__file__).resolve().parents[1]


def handler(function: str):
    return load_handler(ROOT / "functions" / function, "app.lambda_handler", f"bench_{function}")


def post(path: str, body) -> dict:
    event = http_event(
        "POST", path, headers={"content-type": "application/json"}, body=json.dumps(body)
    )
    return handler("producer")(event, LambdaContext(function_name="producer"))


def celery_body(task: str, routing_key: str) -> str:
    task_id = str(uuid.uuid4())
    return codec.encode(
        task,
        task_id,
        routing_key=routing_key,
        origin="gen1@bench",
        reply_to=str(uuid.uuid4()),
        delivery_tag=str(uuid.uuid4()),
    )


def receive_all(sqs, url: str, count: int) -> list[dict]:
    messages: list[dict] = []
    while len(messages) < count:
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(10, count - len(messages)),
            WaitTimeSeconds=1,
            AttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            break
        messages.extend(got)
    return messages


def consume(messages: list[dict], url: str, timeout: float = 300) -> dict:
    context = LambdaContext(function_name="consumer", timeout_seconds=timeout)
    return handler("consumer")(sqs_event(messages, queue_arn(url.rsplit("/", 1)[-1])), context)


@contextmanager
def count_statements() -> Iterator[list[str]]:
    statements: list[str] = []
    engine = database.engine()

    def listener(*args) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", listener)
