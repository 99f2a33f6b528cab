"""Concurrency limits (tasklane.limits) on real parts: eight lambda-lane consumer processes and
a Celery worker with two pool processes, one Postgres, moto's SQS. How many run at once is
sampled from Postgres while they drain; a task over its limit waits, spending no attempt,
and says why."""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter

import pytest
from sqlalchemy import create_engine, text
from tasklane import codec, registry, submit, submit_many
from tasklane.errors import ConfigurationError
from tasklane.executor import Delivery, delivery_token
from tasklane.registry import task
from tasklane.store import Claimed, default_store

from tests.conftest import TASK_MODULES, wait_for
from tests.drain import spawn
from tests.integration.helpers import call_api, consumer_source
from tests.processes import PYTHONPATH


class Running:
    """Samples, every 10 ms, how many tasks of a name run at once, by concurrency key."""

    def __init__(self, url: str, name: str) -> None:
        self.engine = create_engine(url, pool_size=1)
        self.name = name
        self.most: Counter[str | None] = Counter()
        self.most_in_all = 0
        self.samples = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        query = text(
            "SELECT concurrency_key, count(*) FROM tasks WHERE task = :t AND status = 'running' "
            "GROUP BY concurrency_key"
        )
        while not self.stop.is_set():
            with self.engine.connect() as conn:
                now = dict(conn.execute(query, {"t": self.name}).all())
            for key, count in now.items():
                self.most[key] = max(self.most[key], count)
            self.most_in_all = max(self.most_in_all, sum(now.values()))
            self.samples += 1
            self.stop.wait(0.01)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.engine.dispose()


def statuses(url: str, name: str) -> list:
    with create_engine(url).connect() as conn:
        sql = "SELECT status, attempts, waiting_on FROM tasks WHERE task = :t"
        return conn.execute(text(sql), {"t": name}).all()


def drain_with_consumers(stack, tmp_path, count: int) -> None:
    env = dict(os.environ) | stack.env | {"PYTHONPATH": PYTHONPATH, "TASK_MODULES": TASK_MODULES}
    consumers = [
        spawn(stack.lambda_queue, env, tmp_path / "consumers", idle=8) for _ in range(count)
    ]
    for consumer in consumers:
        consumer.report(timeout=240)


@pytest.mark.slow
def test_eight_consumers_never_run_more_than_the_limit(stack, tmp_path):
    url = stack.env["DATABASE_URL"]
    submit_many([("test.limited", {"n": n, "seconds": 0.3}) for n in range(16)])
    with Running(url, "test.limited") as running:
        drain_with_consumers(stack, tmp_path, 8)
    rows = statuses(url, "test.limited")
    assert [r.status for r in rows] == ["succeeded"] * 16
    assert {r.attempts for r in rows} == {1}  # waiting spent no attempt
    assert running.samples > 100 and running.most_in_all == 2  # the limit, reached, never passed


@pytest.mark.slow
def test_a_limit_per_key_lets_keys_run_side_by_side(stack, tmp_path):
    url = stack.env["DATABASE_URL"]
    items = [("test.limited_by_account", {"account": a, "n": n}) for n in range(5) for a in (1, 2)]
    submit_many(items)
    with Running(url, "test.limited_by_account") as running:
        drain_with_consumers(stack, tmp_path, 4)
    assert [r.status for r in statuses(url, "test.limited_by_account")] == ["succeeded"] * 10
    assert running.most == {"account=1": 1, "account=2": 1}  # one at a time per account
    assert running.most_in_all == 2  # and the two accounts at once


def test_a_celery_worker_keeps_the_limit_too(stack, celery_worker):
    url = stack.env["DATABASE_URL"]
    handles = submit_many([("test.limited_celery", {"n": n, "seconds": 0.5}) for n in range(4)])
    with Running(url, "test.limited_celery") as running:
        assert [h.get(timeout=90) for h in handles] == [0, 1, 2, 3]
    assert running.most_in_all == 1  # two pool processes, a limit of one
    assert {r.attempts for r in statuses(url, "test.limited_celery")} == {1}


def test_a_task_over_its_limit_waits_and_says_why(stack):
    holder = submit("test.limited_by_account", {"account": 42})
    waiting = submit("test.limited_by_account", {"account": 42})
    other = submit("test.limited_by_account", {"account": 7})
    # another consumer, elsewhere, runs account 42's first task
    elsewhere = Delivery("test.limited_by_account", holder.id, delivery_token(str(uuid.uuid4())))
    limit = registry.get("test.limited_by_account").concurrency
    assert isinstance(default_store().claim_limited(elsewhere.claim(), 60, limit), Claimed)

    assert consumer_source(stack).poll_once().deleted == 2  # the waiting one, and the other
    shown = call_api("GET", f"/tasks/{waiting.id}")[2]
    assert shown["status"] == "queued" and shown["attempts"] == 0  # no attempt spent
    assert shown["waiting_on"] == "concurrency 1/1 for account=42"
    assert other.get(timeout=10) is None  # another account is not held by it
    assert call_api("GET", f"/tasks/{other.id}")[2]["waiting_on"] is None

    def offered_again() -> bool:
        return any(
            codec.decode(m["Body"]).id == str(waiting.id) for m in stack.receive(stack.lambda_queue)
        )

    wait_for(offered_again, 15, what="a fresh message for the waiting task")


def test_bad_limits_are_refused_at_definition_and_a_missing_key_field_at_submission(stack):
    def fn(payload):
        return payload

    for options, message in [
        ({"concurrency": 0}, "concurrency must be a whole number"),
        ({"concurrency": 1.5}, "concurrency must be a whole number"),
        ({"concurrency_key": "a"}, "concurrency_key needs a concurrency"),
        ({"concurrency": 2, "concurrency_key": []}, "payload field names"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            task("test.bad_limit", **options)(fn)
    status, _, answer = call_api(
        "POST", "/tasks", {"task": "test.limited_by_account", "payload": {"acct": 1}}
    )
    assert status == 400 and "'account', missing from the payload" in answer["error"]["message"]
    assert statuses(stack.env["DATABASE_URL"], "test.limited_by_account") == []
