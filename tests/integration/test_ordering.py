"""Ordered keys (tasklane.limits): tasks with one ordering key run one at a time in the order
they were submitted; different keys side by side. Four lambda-lane consumer processes and a
Celery worker on one Postgres and moto's SQS."""

from __future__ import annotations

import itertools
import os
import uuid
from collections import defaultdict

import pytest
from sqlalchemy import create_engine, text
from tasklane import database, registry, submit, submit_many
from tasklane.errors import ConfigurationError
from tasklane.executor import Delivery, delivery_token
from tasklane.registry import task
from tasklane.store import Claimed, NotClaimed, default_store

from tests.conftest import TASK_MODULES
from tests.drain import Sampler, spawn
from tests.integration.helpers import call_api
from tests.processes import PYTHONPATH


class Overlaps(Sampler):
    """Samples, every 10 ms, the most tasks of one ordering key running at once (``most``)
    and the most keys running at once (``keys_at_once``)."""

    def __init__(self, url: str, name: str) -> None:
        query = (
            "SELECT coalesce(max(n), 0), count(*) FROM (SELECT count(*) AS n FROM tasks "
            "WHERE task = :t AND status = 'running' GROUP BY ordering_key) running"
        )
        super().__init__(url, query, every=0.01, t=name)
        self.most = self.keys_at_once = 0

    def seen(self, rows: list) -> None:
        ((most, keys),) = rows
        self.most, self.keys_at_once = max(self.most, most), max(self.keys_at_once, keys)


def runs(url: str, name: str) -> list:
    with create_engine(url).connect() as conn:
        sql = (
            "SELECT payload, status, attempts, started_at, finished_at FROM tasks "
            "WHERE task = :t ORDER BY started_at"
        )
        return conn.execute(text(sql), {"t": name}).all()


@pytest.mark.slow
def test_a_thousand_tasks_over_ten_keys_run_in_order_one_at_a_time_per_key(stack, tmp_path):
    url = stack.env["DATABASE_URL"]
    items = [("test.ordered", {"key": n % 10, "n": n}) for n in range(1000)]
    for start in range(0, 1000, 100):  # ten submissions of a hundred
        submit_many(items[start : start + 100])
    env = dict(os.environ) | stack.env | {"PYTHONPATH": PYTHONPATH, "TASK_MODULES": TASK_MODULES}
    with Overlaps(url, "test.ordered") as overlaps:
        consumers = [spawn(stack.lambda_queue, env, tmp_path / "c", idle=8) for _ in range(4)]
        for consumer in consumers:
            consumer.report(timeout=600)
    done = runs(url, "test.ordered")
    assert len(done) == 1000 and {r.status for r in done} == {"succeeded"}
    assert {r.attempts for r in done} == {1}  # waiting its turn spent no attempt
    by_key = defaultdict(list)
    for r in done:  # in the order they started
        by_key[r.payload["key"]].append(r)
    for key, ran in by_key.items():
        assert [r.payload["n"] for r in ran] == list(range(key, 1000, 10))  # submission order
        assert all(a.finished_at <= b.started_at for a, b in itertools.pairwise(ran))
    assert overlaps.samples > 100 and overlaps.most == 1
    assert overlaps.keys_at_once >= 2  # keys side by side


def test_a_celery_worker_keeps_the_order(stack, celery_worker):
    handles = submit_many([("test.ordered_celery", {"key": "a", "n": n}) for n in range(6)])
    assert [h.get(timeout=90) for h in handles] == list(range(6))
    ran = runs(stack.env["DATABASE_URL"], "test.ordered_celery")
    assert [r.payload["n"] for r in ran] == list(range(6))
    assert all(a.finished_at <= b.started_at for a, b in itertools.pairwise(ran))


def test_a_task_behind_another_waits_and_says_for_what(stack):
    first = submit("test.ordered", {"key": 1, "n": 0})
    second = submit("test.ordered", {"key": 1, "n": 1})
    other = submit("test.ordered", {"key": 2, "n": 2})
    spec = registry.get("test.ordered")

    def claim(handle):
        delivery = Delivery("test.ordered", handle.id, delivery_token(str(uuid.uuid4())))
        return default_store().claim_limited(delivery.claim(), 60, ordering=spec.ordering)

    # the second waits, unsent, for the first: it is released when the first ends
    shown = call_api("GET", f"/tasks/{second.id}")[2]
    assert shown["waiting_on"] == f"in order after {first.id} (key=1)"
    assert shown["attempts"] == 0 and shown["status"] == "waiting"
    assert stack.depth(stack.lambda_queue) == 2  # the first's and the other key's messages
    assert isinstance(claim(second), NotClaimed)  # even delivered, it would not run
    assert isinstance(claim(other), Claimed)  # another key is not behind it
    assert isinstance(claim(first), Claimed)
    assert default_store().release_next(first.id) is None  # the first runs: nothing yet
    with database.engine().begin() as conn:  # it ends (its consumer would release the next)
        conn.execute(text("UPDATE tasks SET status = 'succeeded' WHERE id = :i"), {"i": first.id})
    released = default_store().release_next(first.id)
    assert released.id == second.id and released.status == "pending"
    assert isinstance(claim(second), Claimed)


def test_bad_ordering_input(stack):
    def fn(payload):
        return payload

    with pytest.raises(ConfigurationError, match="payload field names"):
        task("test.bad_ordering", ordering_key=[])(fn)
    status, _, answer = call_api("POST", "/tasks", {"task": "test.ordered", "payload": {"n": 1}})
    assert status == 400 and "'key', missing from the payload" in answer["error"]["message"]


def test_the_reconciler_releases_stalled_lines_past_busy_ones(stack):
    """Busy lines sorting first do not use up a pass's limit: a line whose task ahead was
    cancelled while queued is released."""
    busy = [submit("test.ordered", {"key": k, "n": n}) for k in ("a", "b") for n in range(2)]
    stalled = [submit("test.ordered", {"key": "z", "n": n}) for n in range(2)]
    stalled[0].cancel()  # ahead, cancelled while queued: nothing releases the next
    released = default_store().release_stalled(0, 1)
    assert [r.id for r in released] == [stalled[1].id] and released[0].status == "pending"
    assert busy[1].status() == "waiting" and busy[3].status() == "waiting"
