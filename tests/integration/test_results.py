"""Celery clients read results from the task table (tasklane.results.TaskTableBackend)."""

from __future__ import annotations

import uuid

import pytest
from celery import Celery
from sqlalchemy import text
from tasklane import database

from tests.conftest import wait_for
from tests.integration.helpers import consumer_source, submit


@pytest.fixture
def client(stack) -> Celery:
    app = Celery(
        "client", broker="sqs://", backend="tasklane.results.TaskTableBackend", set_as_current=False
    )
    app.conf.update(
        broker_transport_options={"region": "us-east-1"},
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
    )
    return app


def set_row(task_id: str, sql: str) -> None:
    with database.engine().begin() as conn:
        conn.execute(text(f"UPDATE tasks SET {sql} WHERE id = :id"), {"id": uuid.UUID(task_id)})


def test_a_celery_lane_task_that_succeeds(stack, celery_worker, client):
    task_id = submit("test.echo_celery", {"n": 1})
    result = client.AsyncResult(task_id)
    value = result.get(timeout=60, interval=0.2)
    assert value["echo"] == {"n": 1}
    assert result.state == "SUCCESS" and result.ready() and result.successful()


def test_a_task_that_fails_raises_its_error(stack, client):
    task_id = submit("test.fail_twice", {})
    consumer = consumer_source(stack)
    consumer.poll_once()
    assert client.AsyncResult(task_id).state == "RETRY"  # one attempt failed, one left
    wait_for(lambda: consumer.poll_once(), 20, what="second attempt")
    result = client.AsyncResult(task_id)
    assert result.state == "FAILURE" and result.ready() and not result.successful()
    with pytest.raises(RuntimeError, match="fails on every attempt"):
        result.get(timeout=5)
    assert isinstance(result.result, RuntimeError)


def test_a_running_task_is_started_and_get_times_out(stack, client):
    task_id = submit("test.echo", 1)
    set_row(task_id, "status = 'running', attempts = 1, lease_until = now() + interval '1 hour'")
    result = client.AsyncResult(task_id)
    assert result.state == "STARTED" and not result.ready()
    from celery.exceptions import TimeoutError as CeleryTimeout

    with pytest.raises(CeleryTimeout):
        result.get(timeout=0.5, interval=0.1)


def test_an_unknown_id_is_pending(stack, client):
    result = client.AsyncResult(str(uuid.uuid4()))
    assert result.state == "PENDING" and not result.ready() and result.result is None
    assert client.AsyncResult("not-a-uuid").state == "PENDING"
