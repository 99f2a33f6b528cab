"""The HTTP API through the real producer handler, Postgres and moto's SQS server."""

from __future__ import annotations

import json
import uuid

import pytest
from tasklane import codec, database
from tasklane.store import default_store

from tests.integration.helpers import call_api, submit


def test_submit_stores_the_payload_and_sends_only_the_id(stack):
    status, headers, body = call_api(
        "POST", "/tasks", {"task": "test.echo", "payload": {"x": [1, 2]}}
    )
    assert status == 202
    assert body["task"] == "test.echo" and body["lane"] == "lambda" and body["status"] == "queued"
    assert headers["location"] == f"/tasks/{body['id']}"
    (message,) = stack.receive(stack.lambda_queue)
    decoded = codec.decode(message["Body"])
    assert decoded.task == "test.echo" and decoded.id == body["id"] and decoded.args == [body["id"]]
    assert (
        '"x"' not in message["Body"]
        and "[1, 2]" not in codec.decode(message["Body"]).headers["argsrepr"]
    )
    (row,) = stack.query("SELECT payload FROM tasks WHERE id = :id", id=uuid.UUID(body["id"]))
    assert row.payload == {"x": [1, 2]}


def test_celery_lane_task_goes_to_the_celery_queue(stack):
    status, _, body = call_api("POST", "/tasks", {"task": "math.primes", "payload": {"limit": 10}})
    assert status == 202 and body["lane"] == "celery"
    (message,) = stack.receive(stack.celery_queue)
    assert codec.decode(message["Body"]).routing_key == "tl-celery"
    assert stack.receive(stack.lambda_queue) == []


def test_get_shows_the_task(stack):
    _, _, created = call_api("POST", "/tasks", {"task": "test.echo", "payload": None})
    status, _, body = call_api("GET", f"/tasks/{created['id']}")
    assert status == 200
    assert set(body) == {
        "id",
        "task",
        "lane",
        "status",
        "attempts",
        "result",
        "error",
        "created_at",
        "updated_at",
        "run_at",
        "workflow_id",
        "started_at",
        "finished_at",
        "payload_bytes",
        "retry_at",
        "unique_key",
        "waiting_on",
        "priority",
        "history",
    }
    assert body["status"] == "queued" and body["attempts"] == 0 and body["result"] is None
    assert body["run_at"] is None and body["workflow_id"] is None
    assert body["started_at"] is None and body["finished_at"] is None
    _, _, big = call_api("POST", "/tasks", {"task": "test.echo", "payload": "x" * 100_000})
    stored = call_api("GET", f"/tasks/{big['id']}")[2]["payload_bytes"]
    assert body["payload_bytes"] < 100 < stored < 100_000  # compressed as stored


def test_a_trailing_star_filters_by_a_prefix_of_task_names(stack):
    ids = {name: submit(name, {}) for name in ("test.echo", "text.wordcount", "math.primes")}
    listed = call_api("GET", "/tasks?task=te*&limit=500")[2]["tasks"]
    names = {t["task"] for t in listed}
    assert names == {"test.echo", "text.wordcount"}, names
    assert ids["math.primes"] not in {t["id"] for t in listed}
    assert call_api("GET", "/tasks?task=te_t.*")[2]["tasks"] == []  # _ is a character, not any
    exact = call_api("GET", "/tasks?task=test.echo&limit=500")[2]["tasks"]
    assert {t["task"] for t in exact} == {"test.echo"}


def test_get_shows_the_input_when_asked(stack):
    payload = {"order": 42, "items": ["a", "b"], "note": "héllo"}
    _, _, created = call_api("POST", "/tasks", {"task": "test.echo", "payload": payload})
    status, _, body = call_api("GET", f"/tasks/{created['id']}?include=payload")
    assert status == 200
    assert body["payload"] == payload and body["payload_truncated"] is False
    assert body["payload_chars"] == len(json.dumps(payload, ensure_ascii=False))
    assert body["payload_pruned"] is False
    assert "payload" not in call_api("GET", f"/tasks/{created['id']}")[2]  # only when asked

    _, _, big = call_api("POST", "/tasks", {"task": "test.echo", "payload": "y" * 100_000})
    body = call_api("GET", f"/tasks/{big['id']}?include=payload")[2]
    assert body["payload_truncated"] is True and body["payload_chars"] == 100_002
    assert body["payload"] == '"' + "y" * (64 * 1024 - 1)  # the start of its JSON text

    status, _, body = call_api("GET", f"/tasks/{created['id']}?include=everything")
    assert status == 400 and "include" in body["error"]["message"]


@pytest.mark.parametrize("path", [f"/tasks/{uuid.uuid4()}", "/tasks/not-a-uuid"])
def test_unknown_ids_are_404(stack, path):
    status, _, body = call_api("GET", path)
    assert status == 404 and body["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        ("{not json", 400, "invalid_request"),
        ("", 400, "invalid_request"),
        ("[1, 2]", 400, "invalid_request"),
        ('{"payload": {}}', 400, "invalid_request"),
        ('{"task": "test.echo"}', 400, "invalid_request"),
        ('{"task": 7, "payload": {}}', 400, "invalid_request"),
        ('{"task": "test.echo", "payload": {}, "extra": 1}', 400, "invalid_request"),
        ('{"task": "no.such.task", "payload": {}}', 422, "unknown_task"),
        ('{"task": "test.echo", "payload": "\\u0000"}', 400, "invalid_request"),
    ],
)
def test_bad_input_is_a_json_4xx_and_stores_nothing(stack, raw, status, code):
    got, headers, body = call_api("POST", "/tasks", raw=raw)
    assert (got, body["error"]["code"]) == (status, code)
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]
    assert headers["content-type"] == "application/json"
    assert stack.query("SELECT count(*) AS n FROM tasks")[0].n == 0
    assert stack.receive(stack.lambda_queue) == []


def test_payload_over_the_limit_is_413(stack, monkeypatch):
    from tasklane.config import settings

    monkeypatch.setenv("MAX_PAYLOAD_BYTES", "1000")
    settings.cache_clear()
    status, _, body = call_api("POST", "/tasks", {"task": "test.echo", "payload": "x" * 1001})
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    status, _, _ = call_api("POST", "/tasks", {"task": "test.echo", "payload": "x" * 900})
    assert status == 202


def test_idempotency_key(stack):
    request = {"task": "test.echo", "payload": {"n": 1}}
    key = {"Idempotency-Key": "order-42"}
    s1, _, first = call_api("POST", "/tasks", request, key)
    s2, _, again = call_api("POST", "/tasks", request, key)
    s3, _, conflict = call_api("POST", "/tasks", {"task": "test.echo", "payload": {"n": 2}}, key)
    assert (s1, s2, s3) == (202, 200, 422)
    assert again["id"] == first["id"]
    assert conflict["error"]["code"] == "idempotency_conflict"
    assert len(stack.receive(stack.lambda_queue)) == 1  # the replay sent nothing


@pytest.mark.parametrize(
    "path, body, other",
    [
        (
            "/tasks/batch",
            {"tasks": [{"task": "test.echo", "payload": i} for i in range(3)]},
            {"tasks": [{"task": "test.echo", "payload": i} for i in range(4)]},
        ),
        (
            "/workflows",
            {
                "chord": {
                    "header": [{"task": "test.echo", "payload": 1}],
                    "body": {"task": "test.echo"},
                }
            },
            {
                "chord": {
                    "header": [{"task": "test.echo", "payload": 2}],
                    "body": {"task": "test.echo"},
                }
            },
        ),
    ],
)
def test_idempotency_key_on_the_routes_that_create_many(stack, path, body, other):
    """A client retrying a batch or a workflow after a timeout gets the first request's tasks
    (200), and nothing more is stored or sent: a chord body would otherwise run twice."""
    key = {"Idempotency-Key": "retry-me"}
    s1, _, first = call_api("POST", path, body, key)
    s2, _, again = call_api("POST", path, body, key)
    s3, _, conflict = call_api("POST", path, other, key)
    assert (s1, s2, s3) == (202, 200, 422), (first, again, conflict)
    assert [t["id"] for t in again["tasks"]] == [t["id"] for t in first["tasks"]]
    assert again.get("id") == first.get("id")
    assert conflict["error"]["code"] == "idempotency_conflict"
    stored = stack.query("SELECT count(*) AS n FROM tasks")[0].n
    assert stored == len(first["tasks"])
    sent = len(stack.receive(stack.lambda_queue))
    assert sent == sum(t["status"] == "queued" for t in first["tasks"])  # the replays sent none
    s4, _, fresh = call_api("POST", path, body, {"Idempotency-Key": "another"})
    assert s4 == 202 and fresh["tasks"][0]["id"] != first["tasks"][0]["id"]


def test_batch_is_one_insert_and_batched_sends(stack):
    from sqlalchemy import event

    statements = []
    engine = database.engine()
    listener = lambda *a: statements.append(a[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        tasks = [{"task": "test.echo", "payload": {"i": i}} for i in range(25)]
        tasks.append({"task": "math.primes", "payload": {"limit": 100}})
        status, _, body = call_api("POST", "/tasks/batch", {"tasks": tasks})
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert status == 202 and len(body["tasks"]) == 26
    assert all(t["status"] == "queued" for t in body["tasks"])
    assert [t["lane"] for t in body["tasks"]].count("celery") == 1
    assert len([s for s in statements if "INSERT" in s.upper()]) == 1
    assert stack.depth(stack.lambda_queue) == 25 and stack.depth(stack.celery_queue) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"tasks": []}, "tasks: .*at least 1"),
        ({"tasks": [{"task": "test.echo", "payload": 1}] * 101}, "tasks: .*at most 100"),
        ({"tasks": [{"task": "test.echo", "payload": 1}, {"task": "x"}]}, "tasks.1.payload"),
    ],
)
def test_bad_batches_are_400(stack, body, message):
    import re

    status, _, got = call_api("POST", "/tasks/batch", body)
    assert status == 400 and re.search(message, got["error"]["message"])


def test_unknown_task_in_batch_is_422(stack):
    status, _, got = call_api("POST", "/tasks/batch", {"tasks": [{"task": "nope", "payload": 1}]})
    assert status == 422 and got["error"]["code"] == "unknown_task"


def test_retry_only_failed_tasks(stack):
    _, _, created = call_api("POST", "/tasks", {"task": "test.echo", "payload": 1})
    status, _, body = call_api("POST", f"/tasks/{created['id']}/retry")
    assert status == 409 and body["error"]["code"] == "conflict"
    stack.query("SELECT 1")  # connection sanity
    with database.engine().begin() as conn:
        from sqlalchemy import text

        conn.execute(
            text("UPDATE tasks SET status = 'failed', attempts = 5 WHERE id = :id"),
            {"id": uuid.UUID(created["id"])},
        )
    stack.receive(stack.lambda_queue)  # drain the first message
    status, _, body = call_api("POST", f"/tasks/{created['id']}/retry")
    assert status == 202 and body["status"] == "queued"
    assert call_api("GET", f"/tasks/{created['id']}")[2]["attempts"] == 0
    status, _, _ = call_api("POST", f"/tasks/{uuid.uuid4()}/retry")
    assert status == 404


def test_unknown_route_is_a_json_404(stack):
    status, _, body = call_api("GET", "/nothing/here")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_send_failure_leaves_the_task_pending_and_still_202(stack):
    stack.sqs.delete_queue(QueueUrl=stack.lambda_queue)
    status, _, body = call_api("POST", "/tasks", {"task": "test.echo", "payload": 1})
    assert status == 202 and body["status"] == "pending"
    assert call_api("GET", f"/tasks/{body['id']}")[2]["status"] == "pending"


def test_database_down_is_503_and_sends_nothing(stack, monkeypatch):
    from tasklane.config import settings
    from tasklane.local.postgres import free_port

    monkeypatch.setenv("DATABASE_URL", f"postgresql+pg8000://postgres@127.0.0.1:{free_port()}/x")
    settings.cache_clear()
    database.reset()
    default_store.cache_clear()
    try:
        status, _, body = call_api("POST", "/tasks", {"task": "test.echo", "payload": 1})
        assert status == 503 and body["error"]["code"] == "database_unavailable"
        status, _, body = call_api("GET", f"/tasks/{uuid.uuid4()}")
        assert status == 503
    finally:
        monkeypatch.undo()
        settings.cache_clear()
        database.reset()
        default_store.cache_clear()
    assert stack.receive(stack.lambda_queue) == []


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_bodies_that_are_not_json_are_415(stack, content_type):
    status, _, body = call_api(
        "POST",
        "/tasks",
        headers={"content-type": content_type},
        raw="task=test.echo&payload=1" if "form" in content_type else '{"task": "test.echo"}',
    )
    assert status == 415 and body["error"]["code"] == "unsupported_media_type"
    assert stack.query("SELECT count(*) AS n FROM tasks")[0].n == 0


def test_a_known_path_with_another_method_is_405(stack):
    status, headers, body = call_api("DELETE", "/tasks")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert headers["allow"] == "GET, POST"


@pytest.mark.parametrize("path", ["/tasks", "/tasks/batch", "/workflows", "/tasks/retry"])
def test_a_body_that_is_not_an_object_is_400_not_its_first_element(stack, path):
    """Powertools validated a JSON array's first element as the body: the rest was dropped."""
    one = {"task": "test.echo", "payload": 1}
    for raw in (json.dumps([one, one]), json.dumps([{"tasks": [one]}, "junk"]), "5", '"x"'):
        status, _, body = call_api("POST", path, raw=raw)
        assert status == 400 and "JSON object" in body["error"]["message"], (raw, body)
    assert stack.query("SELECT count(*) AS n FROM tasks")[0].n == 0


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("body", "raw", "message"),
    [
        ({"task": "test.echo", "payload": "\ud800"}, None, "lone surrogate"),
        ({"task": "test.echo", "payload": {"k": ["\udfff"]}}, None, "lone surrogate"),
        ({"task": "test.echo", "payload": _nested(101)}, None, "nested more than 100"),
        (None, '{"task": "test.echo", "payload": NaN}', "not JSON"),
        (None, '{"task": "test.echo", "payload": ' + "[" * 5000 + "]" * 5000 + "}", "too deep"),
        (
            {
                "tasks": [
                    {"task": "test.echo", "payload": 1},
                    {"task": "test.echo", "payload": "\ud800"},
                ]
            },
            None,
            "tasks[1]: payload is not valid Unicode",
        ),
    ],
)
def test_payloads_no_consumer_could_load_are_refused_with_400(stack, body, raw, message):
    path = "/tasks/batch" if body and "tasks" in body else "/tasks"
    status, _, answer = call_api("POST", path, body, raw=raw)
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_request" and message in answer["error"]["message"]
    assert stack.query("SELECT count(*) FROM tasks")[0][0] == 0  # nothing half-made
    assert stack.receive(stack.lambda_queue) == []


def test_a_payload_at_the_depth_limit_is_accepted(stack):
    status, _, answer = call_api("POST", "/tasks", {"task": "test.echo", "payload": _nested(100)})
    assert status == 202, answer


def test_an_idempotency_key_that_is_not_unicode_is_400(stack):
    status, _, answer = call_api(
        "POST",
        "/tasks",
        {"task": "test.echo", "payload": 1},
        headers={"idempotency-key": "k\ud800"},
    )
    assert status == 400 and "idempotency-key" in answer["error"]["message"]
    assert stack.query("SELECT count(*) FROM tasks")[0][0] == 0


def test_postgres_lost_after_the_send_still_answers_202_with_the_task(stack, pg_cluster):
    """The message went out; only the pending → queued mark failed. The task exists and will
    run, so the client gets its id (status pending), not a 503 inviting a second submission."""
    if pg_cluster is None:
        pytest.skip("needs the tests' own Postgres cluster to stop it")
    from tasklane import broker

    def postgres_goes_down(**_):
        pg_cluster.stop(mode="fast")  # a clean stop: the test cluster commits asynchronously

    events = broker.sqs().meta.events
    events.register("after-call.sqs.SendMessageBatch", postgres_goes_down)
    try:
        status, headers, body = call_api("POST", "/tasks", {"task": "test.echo", "payload": 7})
    finally:
        events.unregister("after-call.sqs.SendMessageBatch", postgres_goes_down)
        pg_cluster.start()
    assert status == 202, body
    assert body["status"] == "pending" and headers["location"] == f"/tasks/{body['id']}"
    (message,) = stack.receive(stack.lambda_queue)
    assert codec.decode(message["Body"]).id == body["id"]
    (row,) = stack.query("SELECT status FROM tasks WHERE id = :id", id=uuid.UUID(body["id"]))
    assert row.status == "pending"  # claimable as is; the reconciler's re-send is harmless
