"""Operating it: finding tasks (filters, keyset pages), retrying in bulk, the numbers of
GET /stats, and pruning old tasks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from sqlalchemy import text
from tasklane import database

from tests.integration.helpers import call_api


def insert(
    n: int, task: str = "test.echo", lane: str = "lambda", status: str = "queued", age_s: float = 0
) -> list[str]:
    """``n`` task rows, created one millisecond apart (the last is the newest)."""
    ids = [uuid.uuid4() for _ in range(n)]
    with database.engine().begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (id, task, lane, status, payload, created_at, updated_at) "
                "SELECT id, :task, :lane, :status, to_jsonb(n), t, t FROM unnest("
                "CAST(:ids AS uuid[])) WITH ORDINALITY AS u(id, n), LATERAL (SELECT "
                "now() - make_interval(secs => :age + (:count - n) / 1000.0) AS t) AS at"
            ),
            {"ids": ids, "task": task, "lane": lane, "status": status, "age": age_s, "count": n},
        )
    return [str(i) for i in ids]


def page(**query) -> tuple[int, dict]:
    status, _, body = call_api("GET", "/tasks?" + urlencode({k: v for k, v in query.items()}))
    return status, body


def all_pages(**query) -> list[str]:
    seen, cursor = [], None
    while True:
        status, body = page(**query, **({"cursor": cursor} if cursor else {}))
        assert status == 200, body
        seen += [t["id"] for t in body["tasks"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


# ------------------------------------------------------------------------------ finding
def test_filters_find_exactly_their_tasks_newest_first(stack):
    echo = insert(3, status="failed", age_s=60)
    sized = insert(2, task="test.size", status="failed", age_s=30)
    celery = insert(2, task="test.echo_celery", lane="celery", status="succeeded", age_s=10)
    status, body = page()
    assert status == 200 and body["next_cursor"] is None
    assert [t["id"] for t in body["tasks"]] == (echo + sized + celery)[::-1]
    assert set(body["tasks"][0]) >= {"id", "task", "lane", "status", "created_at", "error"}
    assert all_pages(status="failed") == (echo + sized)[::-1]
    assert all_pages(task="test.size") == sized[::-1]
    assert all_pages(lane="celery") == celery[::-1]
    assert all_pages(status="failed", task="test.echo") == echo[::-1]
    cut = (datetime.now(UTC) - timedelta(seconds=20)).isoformat()
    assert all_pages(created_after=cut) == celery[::-1]
    assert all_pages(created_before=cut) == (echo + sized)[::-1]
    assert all_pages(status="running") == []


def test_pages_hold_still_while_tasks_arrive(stack):
    older = insert(25, age_s=5)
    _, first = page(limit=10)
    assert [t["id"] for t in first["tasks"]] == older[::-1][:10]
    insert(7)  # newer tasks arrive while the client pages
    rest, cursor = [], first["next_cursor"]
    while cursor:
        _, body = page(limit=10, cursor=cursor)
        rest += [t["id"] for t in body["tasks"]]
        cursor = body["next_cursor"]
        insert(1)  # and more, between every page
    seen = [t["id"] for t in first["tasks"]] + rest
    assert seen == older[::-1]  # every older task once, in order; none of the new ones


def test_tasks_created_in_the_same_instant_are_paged_by_id(stack):
    ids = [uuid.uuid4() for _ in range(6)]
    with database.engine().begin() as conn:  # one transaction: one now() for all of them
        for task_id in ids:
            conn.execute(
                text(
                    "INSERT INTO tasks (id, task, lane, status) VALUES (:id, 'test.echo', "
                    "'lambda', 'queued')"
                ),
                {"id": task_id},
            )
    assert sorted(all_pages(limit=4)) == sorted(map(str, ids))
    assert len(all_pages(limit=1)) == 6


@pytest.mark.parametrize(
    "query",
    [
        {"limit": 0},
        {"limit": 501},
        {"status": "exploded"},
        {"lane": "fargate"},
        {"created_after": "2026-01-01T00:00:00"},  # no offset
        {"cursor": "not-a-cursor"},
    ],
)
def test_bad_queries_are_400(stack, query):
    status, body = page(**query)
    assert status == 400, body
    assert body["error"]["code"] == "invalid_request"


# ------------------------------------------------------------------------------ bulk retry
def test_bulk_retry_requeues_the_failed_tasks_matching_and_says_when_more_remain(stack):
    wanted = insert(5, task="test.echo", status="failed", age_s=5)
    other = insert(3, task="test.size", status="failed", age_s=5)
    done = insert(2, task="test.echo", status="succeeded", age_s=5)
    status, _, body = call_api("POST", "/tasks/retry", {"task": "test.echo", "limit": 3})
    assert status == 202 and body["more"] is True
    assert body["retried"] == wanted[::-1][:3]  # newest first
    status, _, body = call_api("POST", "/tasks/retry", {"task": "test.echo"})
    assert body["retried"] == wanted[::-1][3:] and body["more"] is False
    assert stack.depth(stack.lambda_queue) == 5  # sent, through the bulk path
    for task_id in wanted:
        task = call_api("GET", f"/tasks/{task_id}")[2]
        assert task["status"] == "queued" and task["attempts"] == 0
    assert {call_api("GET", f"/tasks/{i}")[2]["status"] for i in other} == {"failed"}
    assert {call_api("GET", f"/tasks/{i}")[2]["status"] for i in done} == {"succeeded"}
    assert call_api("POST", "/tasks/retry", {"task": "test.echo"})[2] == {
        "retried": [],
        "more": False,
    }


@pytest.mark.parametrize(
    "body", [{"status": "succeeded"}, {"limit": 1001}, {"limit": 0}, {"lane": "x"}, {"x": 1}]
)
def test_bulk_retry_refuses_what_is_not_a_retry_of_failed_tasks(stack, body):
    insert(1, status="failed")
    status, _, answer = call_api("POST", "/tasks/retry", body)
    assert status == 400, answer
    assert stack.depth(stack.lambda_queue) == 0


# ------------------------------------------------------------------------------ stats
def test_stats_count_by_status_and_lane_and_show_the_backlog(stack):
    insert(4, status="queued", age_s=120)
    insert(2, task="test.echo_celery", lane="celery", status="queued", age_s=30)
    insert(3, status="succeeded")
    with database.engine().begin() as conn:  # finished: two now, one five minutes ago
        conn.execute(
            text(
                "UPDATE tasks SET finished_at = now() - CASE WHEN payload = '1' "
                "THEN interval '5 minutes' ELSE interval '0' END WHERE status = 'succeeded'"
            )
        )
    stack.sqs.send_message(QueueUrl=stack.lambda_dlq, MessageBody="dead")
    status, _, stats = call_api("GET", "/stats")
    assert status == 200
    assert stats["counts"] == {
        "queued": {"lambda": 4, "celery": 2},
        "succeeded": {"lambda": 3},
    }
    assert 120 <= stats["oldest_queued_seconds"]["lambda"] < 180
    assert 30 <= stats["oldest_queued_seconds"]["celery"] < 90
    minutes = stats["finished_per_minute"]
    assert len(minutes) == 15 and minutes[-1]["succeeded"] == 2
    assert sum(m["succeeded"] for m in minutes) == 3 and minutes[-6]["succeeded"] == 1
    assert stats["queue_depths"] == {"lambda": 0, "lambda_dlq": 1, "celery": 0, "celery_dlq": 0}
