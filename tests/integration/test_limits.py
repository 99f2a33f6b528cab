"""Concurrency limits (tasklane.limits) on real parts: eight lambda-lane consumer processes and
a Celery worker with two pool processes, one Postgres, moto's SQS. How many run at once is
sampled from Postgres while they drain; a task over its limit waits, spending no attempt,
and says why."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text
from tasklane import codec, database, registry, submit, submit_many
from tasklane.errors import ConfigurationError
from tasklane.executor import Delivery, delivery_token
from tasklane.registry import task
from tasklane.store import Claimed, NotClaimed, default_store

from tests.conftest import TASK_MODULES, wait_for
from tests.drain import Sampler, spawn
from tests.integration.helpers import call_api, consumer_source
from tests.processes import PYTHONPATH


class Running(Sampler):
    """Samples, every 10 ms, how many tasks of a name run at once, by concurrency key
    (``most``), and in all (``most_in_all``)."""

    def __init__(self, url: str, name: str) -> None:
        query = (
            "SELECT concurrency_key, count(*) FROM tasks WHERE task = :t AND status = 'running' "
            "GROUP BY concurrency_key"
        )
        super().__init__(url, query, every=0.01, t=name)
        self.most_in_all = 0

    def seen(self, rows: list) -> None:
        super().seen(rows)
        self.most_in_all = max(self.most_in_all, sum(count for _, count in rows))


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


def started(url: str, name: str) -> list:
    with create_engine(url).connect() as conn:
        sql = "SELECT started_at, attempts, payload FROM tasks WHERE task = :t ORDER BY started_at"
        return conn.execute(text(sql), {"t": name}).all()


def most_within(rows: list, seconds: float) -> int:
    """The most starts in any window of ``seconds`` (a rate limit's bound: rate times window, and
    the one that opens it)."""
    starts = [r.started_at.timestamp() for r in rows]
    return max(sum(1 for t in starts if s <= t < s + seconds) for s in starts)


def test_a_rate_limit_spaces_starts_across_consumers_per_key(stack, tmp_path):
    url = stack.env["DATABASE_URL"]
    submit_many([("test.rated_fast", {"account": a, "n": n}) for n in range(8) for a in (1, 2)])
    drain_with_consumers(stack, tmp_path, 3)
    rows = started(url, "test.rated_fast")
    assert len(rows) == 16 and {r.attempts for r in rows} == {1}  # waiting spent no attempt
    for account in (1, 2):  # 4 a second per account, in any second
        mine = [r for r in rows if r.payload["account"] == account]
        assert most_within(mine, 1.0) <= 5 and most_within(mine, 2.0) <= 9
    assert most_within(rows, 1.0) >= 6  # the two accounts side by side


@pytest.mark.slow
def test_sixty_a_minute_runs_120_in_two_minutes(stack, tmp_path):
    """The issue's yardstick: a rate limit of 60/m over 2 minutes runs 120 ± 2, with eight
    consumers taking the backlog at once."""
    url = stack.env["DATABASE_URL"]
    submit_many([("test.rated", {"n": n}) for n in range(130)])
    drain_with_consumers(stack, tmp_path, 8)
    rows = started(url, "test.rated")
    assert len(rows) == 130 and {r.attempts for r in rows} == {1}
    first = rows[0].started_at
    in_two_minutes = [r for r in rows if (r.started_at - first).total_seconds() < 120]
    assert 118 <= len(in_two_minutes) <= 122, len(in_two_minutes)
    assert most_within(rows, 60) <= 61 and most_within(rows, 10) <= 11


def test_a_celery_worker_keeps_the_rate_too(stack, celery_worker):
    url = stack.env["DATABASE_URL"]
    handles = submit_many([("test.rated_celery", {"n": n}) for n in range(5)])
    assert [h.get(timeout=90) for h in handles] == [0, 1, 2, 3, 4]
    rows = started(url, "test.rated_celery")
    assert most_within(rows, 1.0) <= 3 and {r.attempts for r in rows} == {1}


def test_a_task_waiting_for_its_turn_says_when(stack):
    handles = [submit("test.rated", {"n": n}) for n in range(3)]
    rate = registry.get("test.rated").rate_limit
    turns = [  # three consumers claim at once: a turn each, a second apart
        default_store().claim_limited(
            Delivery("test.rated", h.id, delivery_token(str(uuid.uuid4()))).claim(), 60, None, rate
        )
        for h in handles
    ]
    assert isinstance(turns[0], Claimed)
    assert [round(t.wait_s) for t in turns[1:]] == [1, 2]
    shown = call_api("GET", f"/tasks/{handles[2].id}")[2]
    assert shown["status"] == "queued" and shown["attempts"] == 0
    assert shown["waiting_on"].startswith("rate 60/m: its turn at ")
    # their messages: the first's task is held elsewhere; each of the others waits here for
    # its turn, now under a second away, and runs then, taking no other
    consumer_source(stack).poll_once()
    assert [h.get(timeout=5) for h in handles[1:]] == [1, 2]
    assert call_api("GET", f"/tasks/{handles[2].id}")[2]["waiting_on"] is None


def test_bad_rates_are_refused_at_definition(stack):
    def fn(payload):
        return payload

    for options, message in [
        ({"rate_limit": "fast"}, "is not a rate such as '100/m'"),
        ({"rate_limit": "10/d"}, "is not a rate"),
        ({"rate_limit": 0}, "outside one a day"),
        ({"rate_limit": True}, "is not a rate"),
        ({"rate_limit_key": "a"}, "rate_limit_key needs a rate_limit"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            task("test.bad_rate", **options)(fn)
    status, _, answer = call_api("POST", "/tasks", {"task": "test.rated_fast", "payload": {}})
    assert status == 400 and "'account', missing from the payload" in answer["error"]["message"]


def claim_of(handle, name: str):
    spec = registry.get(name)
    delivery = Delivery(name, handle.id, delivery_token(str(uuid.uuid4())))
    return default_store().claim_limited(
        delivery.claim(), 60, spec.concurrency, spec.rate_limit, spec.ordering
    )


def next_free(name: str):
    with database.engine().connect() as conn:
        sql = "SELECT next_free - clock_timestamp() FROM rate_buckets WHERE name LIKE :n"
        return conn.execute(text(sql), {"n": f"{name}%"}).scalar_one().total_seconds()


def test_turns_are_given_a_minute_ahead_at_most(stack):
    """A turn given to a task that never runs (cancelled) delays the others by a minute at
    most: past the horizon, a task asks again later instead of taking one."""
    handles = submit_many([("test.rated", {"n": n}) for n in range(70)])
    claims = [claim_of(h, "test.rated") for h in handles]
    assert isinstance(claims[0], Claimed)
    assert all(c.waiting_on.startswith("rate 60/m: its turn at") for c in claims[1:])
    with database.engine().connect() as conn:
        given = conn.execute(text("SELECT count(*) FROM tasks WHERE rate_slot IS NOT NULL"))
        given = given.scalar_one()
    assert 58 <= given <= 61  # a turn each, a second apart, up to a minute ahead
    asked_later = claims[given + 1 :]  # the rest ask again, holding no turn
    assert len(asked_later) == 69 - given and all(c.wait_s >= 2 for c in asked_later)
    assert next_free("test.rated") <= 62  # the bucket is never further ahead than that
    for h in handles[1:]:
        h.cancel()
    fresh = submit("test.rated", {"n": 99})
    assert claim_of(fresh, "test.rated").wait_s <= 62


def test_a_task_held_by_its_concurrency_takes_no_turn(stack):
    first = submit("test.limited_rated", {"n": 1})
    second = submit("test.limited_rated", {"n": 2})
    assert isinstance(claim_of(first, "test.limited_rated"), Claimed)
    ahead = next_free("test.limited_rated")
    held = claim_of(second, "test.limited_rated")
    assert isinstance(held, NotClaimed) and held.waiting_on == "concurrency 1/1"
    assert abs(next_free("test.limited_rated") - ahead) < 0.2  # no turn taken by the held


def test_eager_mode_runs_limited_tasks_in_turn(tasklane_eager):
    handles = [submit("test.rated", {"n": n}) for n in range(3)]
    assert [h.get(timeout=0) for h in handles] == [0, 1, 2]


def test_prune_forgets_buckets_long_past(stack):
    from datetime import UTC, datetime, timedelta

    handle = submit("test.rated", {"n": 1})
    assert isinstance(claim_of(handle, "test.rated"), Claimed)
    with database.engine().begin() as conn:
        conn.execute(text("UPDATE rate_buckets SET next_free = now() - interval '40 days'"))
    now = datetime.now(UTC)
    default_store().prune(now - timedelta(days=30), now - timedelta(days=7))
    with database.engine().connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM rate_buckets")).scalar_one() == 0
