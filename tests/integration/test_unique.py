"""Unique tasks (tasklane.unique) on real Postgres and moto: a duplicate submitted while the
first is live, or within its window, gets the first back, from Python, HTTP, a batch, many
producers at once, and across a caller's transaction; a Celery worker runs the one task."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from tasklane import InvalidRequest, database, submit, submit_many
from tasklane.errors import ConfigurationError
from tasklane.registry import task

from tests.conftest import wait_for
from tests.integration.helpers import call_api, consumer_source


def rows(name: str) -> list:
    with database.engine().connect() as conn:
        from sqlalchemy import text

        sql = "SELECT id, status, unique_key FROM tasks WHERE task = :t ORDER BY created_at"
        return conn.execute(text(sql), {"t": name}).all()


def drain(stack) -> None:
    source = consumer_source(stack)
    while (result := source.poll_once()) is not None and result.deleted:
        pass


def test_a_duplicate_while_the_first_is_live_gets_the_first(stack):
    first = submit("test.report", {"account": 42, "asked_by": "a"})
    again = submit("test.report", {"account": 42, "asked_by": "b"})  # other fields: same work
    other = submit("test.report", {"account": 7})
    assert again.id == first.id and other.id != first.id
    assert [(r.id, r.unique_key) for r in rows("test.report")] == [
        (first.id, "account=42"),
        (other.id, "account=7"),
    ]
    assert stack.depth(stack.lambda_queue) == 2  # the duplicate sent nothing

    drain(stack)  # both ran: the key is free again (no window)
    assert first.get(timeout=10) == {"account": 42}
    later = submit("test.report", {"account": 42})
    assert later.id != first.id and len(rows("test.report")) == 3


def test_over_http_a_duplicate_is_a_200_with_the_first_task(stack):
    body = {"task": "test.report", "payload": {"account": 1}}
    status, _, created = call_api("POST", "/tasks", body)
    assert status == 202
    status, headers, duplicate = call_api("POST", "/tasks", body)
    assert status == 200 and duplicate["id"] == created["id"]
    assert headers["location"] == f"/tasks/{created['id']}"
    assert call_api("GET", f"/tasks/{created['id']}")[2]["unique_key"] == "account=1"
    # a key given with the call, for a task that declares none; and its window
    explicit = {"task": "test.echo", "payload": "x", "unique_key": "nightly", "unique_for": 600}
    status, _, one = call_api("POST", "/tasks", explicit)
    assert status == 202
    drain(stack)
    assert call_api("GET", f"/tasks/{one['id']}")[2]["status"] == "succeeded"
    status, _, two = call_api("POST", "/tasks", explicit | {"payload": "y"})
    assert status == 200 and two["id"] == one["id"]  # finished, but within its 600 s
    status, _, same = call_api("POST", "/tasks", explicit | {"unique_for": None})
    assert status == 200 and same["id"] == one["id"]  # the first's window holds the key
    brief = {"task": "test.echo", "payload": "x", "unique_key": "brief", "unique_for": 0.5}
    first = call_api("POST", "/tasks", brief)[2]
    drain(stack)
    wait_for(lambda: call_api("GET", f"/tasks/{first['id']}")[2]["status"] == "succeeded", 10)
    time.sleep(0.6)  # its window is over, and it has finished: the key is free
    status, _, fresh = call_api("POST", "/tasks", brief)
    assert status == 202 and fresh["id"] != first["id"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"task": "test.report", "payload": {"acct": 1}}, "'account', missing from the payload"),
        ({"task": "test.report", "payload": [1]}, "must be a JSON object"),
        ({"task": "test.echo", "payload": 1, "unique_for": 60}, "unique_for needs a unique_key"),
        ({"task": "test.echo", "payload": 1, "unique_key": "k" * 256}, "unique_key"),
        ({"task": "test.echo", "payload": 1, "unique_key": "k", "unique_for": -1}, "unique_for"),
    ],
)
def test_bad_unique_input_is_a_400_and_stores_nothing(stack, body, message):
    status, _, answer = call_api("POST", "/tasks", body)
    assert status == 400, answer
    assert message in answer["error"]["message"]
    assert rows(body["task"]) == []
    with pytest.raises(InvalidRequest):
        submit(
            body["task"],
            body["payload"],
            unique_key=body.get("unique_key"),
            unique_for=body.get("unique_for"),
        )


def test_a_task_declared_with_a_bad_uniqueness_fails_at_definition():
    def fn(payload):
        return payload

    for options, message in [
        ({"unique_key": []}, "payload field names"),
        ({"unique_key": [1]}, "payload field names"),
        ({"unique_key": "a", "unique_for": "soon"}, "unique_for must be a number"),
        ({"unique_key": "a", "unique_states": ["done"]}, "'done' is not a valid Status"),
        ({"unique_for": 60}, "need a unique_key"),
    ]:
        with pytest.raises(ConfigurationError, match=message):
            task("test.bad_unique", **options)(fn)


def test_a_batch_keeps_one_task_per_key_in_its_places(stack):
    live = submit("test.report", {"account": 5})
    handles = submit_many(
        [
            ("test.report", {"account": 5}),  # the live one
            ("test.report", {"account": 6}),
            ("test.echo", "not unique"),
            ("test.report", {"account": 6}),  # the batch's own second
        ]
    )
    ids = [h.id for h in handles]
    assert ids[0] == live.id and ids[3] == ids[1] and len(set(ids)) == 3
    assert len(rows("test.report")) == 2


def test_many_producers_at_once_create_one_task(stack):
    """Eight producers, each on its own connection, submit the same work at the same moment."""
    start = threading.Barrier(8)
    ids: list[uuid.UUID] = []

    def produce(n: int) -> None:
        start.wait()
        ids.append(submit("test.report", {"account": 99, "producer": n}).id)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 8 and len(set(ids)) == 1
    assert [r.id for r in rows("test.report")] == ids[:1]
    assert stack.depth(stack.lambda_queue) == 1


def test_a_transaction_holds_the_key_until_it_ends(stack):
    """A unique task submitted in the caller's open transaction: another producer waits for
    that commit or rollback, then sees what it decided."""
    engine = database.engine()
    got: list[uuid.UUID] = []
    with engine.connect() as conn:
        tx = conn.begin()
        mine = submit("test.report", {"account": 3}, connection=conn)
        other = threading.Thread(
            target=lambda: got.append(submit("test.report", {"account": 3}).id)
        )
        other.start()
        other.join(timeout=1)
        assert other.is_alive() and got == []  # waiting for this transaction
        tx.rollback()  # the first never existed
    other.join(timeout=30)
    assert len(got) == 1 and got[0] != mine.id
    assert [r.id for r in rows("test.report")] == got


def test_a_celery_worker_runs_the_one_task_and_its_window_holds(stack, celery_worker):
    first = submit("test.digest_celery", {"list": "news"})
    assert submit("test.digest_celery", {"list": "news", "n": 2}).id == first.id
    assert first.get(timeout=60) == "news"
    wait_for(lambda: rows("test.digest_celery")[0].status == "succeeded", 10, what="the row")
    # finished, and within the hour the task declares: still the same work
    assert submit("test.digest_celery", {"list": "news"}).id == first.id
    assert len(rows("test.digest_celery")) == 1


def test_keys_are_each_owners_own(stack, monkeypatch):
    """Another caller's live task with the same key is neither shown nor answered."""
    from tasklane.local.events import iam_identity
    from tasklane.testing import refresh

    monkeypatch.setenv("API_AUTHORIZATION", "AWS_IAM")
    refresh()
    try:
        alice = iam_identity("arn:aws:iam::123456789012:user/alice")
        bob = iam_identity("arn:aws:iam::123456789012:user/bob")
        body = {"task": "test.report", "payload": {"account": 42}}
        status, _, hers = call_api("POST", "/tasks", body, authorizer=alice)
        assert status == 202
        status, _, his = call_api("POST", "/tasks", body, authorizer=bob)
        assert status == 202 and his["id"] != hers["id"]  # his own task, not hers
        status, _, again = call_api("POST", "/tasks", body, authorizer=bob)
        assert status == 200 and again["id"] == his["id"]
    finally:
        monkeypatch.delenv("API_AUTHORIZATION")
        refresh()


def test_idempotency_keys_keep_their_meaning_with_unique_keys(stack):
    key = {"idempotency-key": "k-1"}
    one = call_api("POST", "/tasks", {"task": "test.report", "payload": {"account": 1}}, key)
    assert one[0] == 202
    other_body = {"task": "test.report", "payload": {"account": 1, "x": 2}}
    assert call_api("POST", "/tasks", other_body, key)[0] == 422  # the key's request was another
    # a batch whose tasks are duplicates is answered the same when replayed, in its places
    live = call_api("POST", "/tasks", {"task": "test.report", "payload": {"account": 4}})[2]
    batch = {"tasks": [{"task": "test.report", "payload": {"account": 4}}] * 2}
    status, _, first = call_api("POST", "/tasks/batch", batch, {"idempotency-key": "b-1"})
    assert status == 202 and [t["id"] for t in first["tasks"]] == [live["id"]] * 2
    status, _, replay = call_api("POST", "/tasks/batch", batch, {"idempotency-key": "b-1"})
    assert status == 200 and replay["tasks"] == first["tasks"]


def test_keys_that_mean_the_same_are_the_same(stack):
    first = submit("test.report", {"account": 1})
    assert submit("test.report", {"account": 1.0}).id == first.id  # JSON clients send either
    name = "é" * 300  # characters as they are; a long key is its hash
    long_one = submit("test.report", {"account": name})
    assert submit("test.report", {"account": name, "x": 1}).id == long_one.id
    assert rows("test.report")[-1].unique_key.startswith("sha256:")
    status, _, answer = call_api(
        "POST", "/tasks", {"task": "test.echo", "payload": 1, "unique_key": "a\u0000b"}
    )
    assert status == 400 and "NUL" in answer["error"]["message"]
    status, _, answer = call_api(
        "POST", "/tasks", {"task": "test.echo", "payload": 1, "unique_key": "k", "unique_for": "9"}
    )
    assert status == 400  # a number, as Python takes it


def test_a_unique_task_may_be_a_later_step_of_a_workflow(stack):
    from tasklane import chain
    from tasklane.registry import get

    flow = chain(get("test.echo").s({"account": 1}), get("test.report").s()).apply_async()
    assert len(flow.task_ids) == 2  # stored (its steps are not deduplicated)


def test_prune_keeps_a_unique_task_while_its_window_holds_the_key(stack):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text as sql
    from tasklane.store import default_store

    kept = submit("test.echo", "x", unique_key="quarterly", unique_for=90 * 86400)
    with database.engine().begin() as conn:
        conn.execute(
            sql("UPDATE tasks SET status = 'succeeded', finished_at = now() - interval '31 days'")
        )
    now = datetime.now(UTC)
    default_store().prune(now - timedelta(days=30), now - timedelta(days=7))
    assert submit("test.echo", "y", unique_key="quarterly").id == kept.id
