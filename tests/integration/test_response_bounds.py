"""Every read answers: results are bounded when recorded (``MAX_RESULT_BYTES``), listings carry
summaries, a workflow's detail comes in pages and leaves out a result too large to carry, and no
route can answer more than Lambda's 6 MB response limit. Real Postgres and moto."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import text
from tasklane import database
from tasklane.config import settings

from tests.integration.helpers import call_api, consumer_source, insert_tasks

#: Lambda's limit on a synchronous response (6 MB), less room for the envelope and headers.
RESPONSE_LIMIT = 6 * 1024 * 1024 - 64 * 1024


def size_of(body) -> int:
    return len(json.dumps(body).encode())


def finish(ids: list[str], result, error=None, status: str = "succeeded") -> None:
    """Record an outcome for these tasks as the executor would have (the largest allowed)."""
    with database.engine().begin() as conn:
        conn.execute(
            text(
                "UPDATE tasks SET status = :status, result = CAST(:result AS jsonb), "
                "error = CAST(:error AS jsonb), finished_at = now() WHERE id = ANY(:ids)"
                if error is not None
                else "UPDATE tasks SET status = :status, result = CAST(:result AS jsonb), "
                "error = NULL, finished_at = now() WHERE id = ANY(:ids)"
            ),
            {
                "status": status,
                "result": json.dumps(result),
                "error": json.dumps(error),
                "ids": [uuid.UUID(i) for i in ids],
            },
        )


def submit_many(n: int) -> list[str]:
    ids = []
    for start in range(0, n, 100):
        items = [{"task": "test.echo", "payload": i} for i in range(start, min(n, start + 100))]
        status, _, body = call_api("POST", "/tasks/batch", {"tasks": items})
        assert status == 202, body
        ids += [t["id"] for t in body["tasks"]]
    return ids


def largest_error() -> dict:
    """The largest error the executor records: a 2,000-character message, a 4,000 traceback."""
    return {
        "type": "ValueError",
        "module": "builtins",
        "message": "m" * 2000,
        "traceback": "t" * 4000,
    }


def test_a_result_over_the_limit_fails_its_task_clearly_and_is_never_stored(stack):
    status, _, body = call_api(
        "POST", "/tasks", {"task": "test.echo", "payload": "x" * (settings().max_result_bytes + 1)}
    )
    assert status == 202
    consumer_source(stack).poll_once()
    status, _, task = call_api("GET", f"/tasks/{body['id']}")
    assert status == 200 and task["status"] == "failed" and task["attempts"] == 1  # not retried
    assert task["error"]["type"] == "ResultTooLarge" and task["result"] is None
    assert "MAX_RESULT_BYTES" in task["error"]["message"]


def test_a_listing_carries_summaries_whatever_the_tasks_hold(stack):
    """The console's first view: 50 tasks with 200 KB results each would be 10 MB whole."""
    ids = submit_many(50)
    finish(ids, "r" * 200_000)
    status, _, page = call_api("GET", "/tasks?limit=50")
    assert status == 200 and len(page["tasks"]) == 50
    assert all("result" not in t for t in page["tasks"]) and size_of(page) < 100_000
    status, _, one = call_api("GET", f"/tasks/{ids[0]}")
    assert one["result"] == "r" * 200_000  # the detail still has it


def test_a_workflows_result_too_large_to_carry_is_left_out_saying_why(stack):
    group = {"group": [{"task": "test.echo", "payload": i} for i in range(35)]}
    status, _, created = call_api("POST", "/workflows", group)
    assert status == 202
    ids = [t["id"] for t in created["tasks"]]
    finish(ids, "r" * 200_000)  # 35 x 200 KB: 7 MB together
    status, _, detail = call_api("GET", f"/workflows/{created['id']}")
    assert status == 200 and detail["status"] == "succeeded"
    assert detail["result"] is None and "MAX_RESULT_BYTES" in detail["result_omitted"]
    assert size_of(detail) < 100_000
    finish(ids[:1], "small")  # one part smaller: still too large together
    finish(ids, "ok")
    status, _, detail = call_api("GET", f"/workflows/{created['id']}")
    assert detail["result"] == ["ok"] * 35 and detail["result_omitted"] is None


def test_a_workflows_tasks_come_in_pages(stack):
    group = {"group": [{"task": "test.echo", "payload": i} for i in range(7)]}
    _, _, created = call_api("POST", "/workflows", group)
    seen, cursor = [], None
    while True:
        query = f"?limit=3&cursor={cursor}" if cursor else "?limit=3"
        status, _, page = call_api("GET", f"/workflows/{created['id']}{query}")
        assert status == 200 and len(page["tasks"]) <= 3
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [t["id"] for t in created["tasks"]]
    for bad in ("nope", "eyJ0YXNrIjogIngifQ"):  # not base64 JSON; {"task": "x"}
        status, _, body = call_api("GET", f"/workflows/{created['id']}?cursor={bad}")
        assert status == 400 and body["error"]["message"].startswith("cursor"), body


def insert_workflow(description: dict) -> tuple[str, list[str]]:
    """A workflow stored as ``POST /workflows`` stores it, without sending its first steps."""
    from tasklane import workflows
    from tasklane.store import NewTask, default_store

    planned = workflows.plan(workflows.parse(description), None)
    new = [NewTask(s.id, s.task, "lambda", json.dumps(s.payload), None) for s in planned.steps]
    steps = [s.step_json() for s in planned.steps]
    default_store().insert_workflow(planned.id, planned.output, new, steps)
    return str(planned.id), [str(s.id) for s in planned.steps]


@pytest.mark.slow
def test_no_route_answers_more_than_lambdas_limit(stack):
    """The largest answer each route can give, with every bound at its limit: a task's detail
    with the largest result and error; a listing's largest page of tasks with the largest
    errors; a workflow of 1,000 tasks whose result is as large as allowed; the largest batch
    and bulk retry. Each under Lambda's 6 MB."""
    limit = settings().max_result_bytes
    ids = insert_tasks(1000)
    finish(ids, None, largest_error(), status="failed")
    finish(ids[:1], "r" * (limit - 2))  # a JSON string of exactly MAX_RESULT_BYTES
    answers = {
        "GET /tasks/{id}": call_api("GET", f"/tasks/{ids[0]}"),
        "GET /tasks?limit=500": call_api("GET", "/tasks?limit=500"),
        "POST /tasks/retry": call_api("POST", "/tasks/retry", {"limit": 1000}),
        "POST /tasks/batch": call_api(
            "POST", "/tasks/batch", {"tasks": [{"task": "test.echo", "payload": 1}] * 100}
        ),
    }
    # POST /workflows answers its tasks' summaries: GET /workflows/{id} answers those and more
    group = {"group": [{"task": "test.echo", "payload": i} for i in range(1000)]}
    workflow_id, members = insert_workflow(group)
    finish(members, "r" * (limit // 1000 - 10))  # together just under MAX_RESULT_BYTES
    answers["GET /workflows/{id}"] = call_api("GET", f"/workflows/{workflow_id}")
    for route, (status, _, body) in answers.items():
        assert status in (200, 202), (route, body)
        assert size_of(body) < RESPONSE_LIMIT, (route, size_of(body))
    assert answers["GET /workflows/{id}"][2]["result_omitted"] is None
    assert len(answers["GET /tasks/{id}"][2]["result"]) == limit - 2
