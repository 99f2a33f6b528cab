"""Operating it: finding tasks (filters, keyset pages), retrying in bulk, the numbers of
GET /stats, and pruning old tasks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from sqlalchemy import text
from tasklane import database, reconciler
from tasklane.store import default_store

from tests.integration.helpers import call_api
from tests.integration.helpers import insert_tasks as insert


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
    "body",
    [
        {"status": "succeeded"},
        {"limit": 1001},
        {"limit": 0},
        {"lane": "x"},
        {"x": 1},
        {"created_after": "0001-01-01T00:00:00+14:00"},
        {"created_before": "9999-12-31T23:59:59-14:00"},
    ],
)
def test_bulk_retry_refuses_what_is_not_a_retry_of_failed_tasks(stack, body):
    insert(1, status="failed")
    status, _, answer = call_api("POST", "/tasks/retry", body)
    assert status == 400, answer
    assert stack.depth(stack.lambda_queue) == 0
    if "created_after" in body or "created_before" in body:  # the field is named
        assert answer["error"]["message"].startswith(next(iter(body))), answer


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
    assert stats["queue_depths"] == {
        **{"lambda": 0, "lambda_high": 0, "lambda_dlq": 1},
        **{"celery": 0, "celery_high": 0, "celery_dlq": 0},
    }


def test_figures_per_task_name(stack):
    insert(4, task="test.echo", status="succeeded", age_s=60)
    insert(1, task="test.echo", status="failed", age_s=60)
    insert(2, task="test.size", status="queued", age_s=30)
    insert(1, task="test.size", status="queued", age_s=7200)  # before the window
    with database.engine().begin() as conn:  # runtimes of 1, 2, 3, 4 s; and 1 s that failed
        conn.execute(
            text(
                "UPDATE tasks SET finished_at = now() - interval '10 seconds', "
                "started_at = now() - interval '10 seconds' - payload::int * interval '1 second' "
                "WHERE status IN ('succeeded', 'failed')"
            )
        )
    status, _, body = call_api("GET", "/stats/tasks")
    assert status == 200 and body["window_seconds"] == 3600
    echo, size = body["tasks"]  # the busiest first
    assert echo["task"] == "test.echo" and echo["counts"] == {"succeeded": 4, "failed": 1}
    assert echo["finished"] == 5 and echo["failure_rate"] == 0.2
    assert abs(echo["runtime_p50_ms"] - 2000) < 1 and abs(echo["runtime_p95_ms"] - 3800) < 1
    assert size == {
        "task": "test.size",
        "counts": {"queued": 2},
        "finished": 0,
        "runtime_p50_ms": None,
        "runtime_p95_ms": None,
        "failure_rate": None,
    }
    assert call_api("GET", "/stats/tasks?window=59")[0] == 400


def test_the_backlog_leaves_out_tasks_not_yet_due(stack):
    """Waiting out a countdown or a retry's delay is not being late: the backlog's age counts
    only what could be delivered now, from when it could."""
    (late,) = insert(1, status="queued", age_s=600)  # created long ago, due a minute ago
    retrying, counting_down = insert(2, status="queued", age_s=900)
    with database.engine().begin() as conn:
        for task_id, column, delta in (
            (late, "run_at", "- interval '60 seconds'"),
            (retrying, "retry_at", "+ interval '5 minutes'"),
            (counting_down, "run_at", "+ interval '5 minutes'"),
        ):
            conn.execute(
                text(f"UPDATE tasks SET {column} = now() {delta} WHERE id = :id"), {"id": task_id}
            )
    stats = call_api("GET", "/stats")[2]
    assert 55 <= stats["oldest_queued_seconds"]["lambda"] < 120  # since it was due
    assert stats["counts"]["queued"]["lambda"] == 3  # all still counted by status


# ------------------------------------------------------------------------------ retention
def finished(ids: list[str], days_ago: float) -> None:
    with database.engine().begin() as conn:
        conn.execute(
            text(
                "UPDATE tasks SET finished_at = now() - make_interval(days => :d), "
                "created_at = now() - make_interval(days => :d + 1) "
                "WHERE id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": ids, "d": days_ago},
        )


def rows() -> dict[str, tuple]:
    with database.engine().connect() as conn:
        return {
            str(r.id): (r.status, r.payload is not None, r.result)
            for r in conn.execute(text("SELECT id, status, payload, result FROM tasks"))
        }


def test_prune_deletes_old_finished_tasks_drops_old_payloads_and_spares_the_unfinished(stack):

    old_done = insert(3, status="succeeded")
    old_failed = insert(2, status="failed")
    recent_done = insert(2, status="succeeded")
    unfinished = insert(2, status="queued") + insert(1, status="running")
    finished(old_done + old_failed, 40)
    finished(recent_done, 10)
    with database.engine().begin() as conn:  # results stay when payloads go
        conn.execute(text("UPDATE tasks SET result = '\"kept\"' WHERE status = 'succeeded'"))
        conn.execute(  # an unfinished task that is old all the same
            text("UPDATE tasks SET created_at = now() - interval '90 days' WHERE status = 'queued'")
        )
    dry = reconciler.prune(timedelta(days=30), timedelta(days=7), dry_run=True)
    assert dry == {"tasks": 5, "workflows": 0, "payloads": 2}
    assert len(rows()) == 10  # a dry run deletes nothing
    store = default_store()
    now = datetime.now(UTC)
    counts = store.prune(now - timedelta(days=30), now - timedelta(days=7), batch=2)
    assert counts == {"tasks": 5, "workflows": 0, "payloads": 2}  # in batches of two
    left = rows()
    assert set(left) == set(recent_done + unfinished)
    assert all(left[i] == ("succeeded", False, "kept") for i in recent_done)
    assert all(left[i][1] for i in unfinished)  # untouched, payloads and all


def test_prune_keeps_a_workflow_until_all_its_tasks_are_old_and_finished(stack):
    from tasklane import chain

    from tests import tasks

    handle = chain(tasks.add.s(1), tasks.add.s()).delay()  # first queued, second waiting
    first, second = (str(i) for i in handle.task_ids)
    with database.engine().begin() as conn:
        conn.execute(text("UPDATE tasks SET status = 'failed' WHERE id = :id"), {"id": first})
        conn.execute(text("UPDATE workflows SET created_at = now() - interval '60 days'"))
    finished([first], 40)
    assert reconciler.prune(timedelta(days=30), timedelta(days=7)) == {
        "tasks": 0,
        "workflows": 0,
        "payloads": 0,
    }  # its second step still waits: a retry of the first would resume it
    assert handle.status() == "failed"
    with database.engine().begin() as conn:
        conn.execute(text("UPDATE tasks SET status = 'cancelled' WHERE id = :id"), {"id": second})
    finished([second], 40)
    assert reconciler.prune(timedelta(days=30), timedelta(days=7))["workflows"] == 1
    assert rows() == {}


def test_the_cli_prunes_and_the_reconciler_prunes_on_its_schedule(stack):
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.integration.helpers import handler

    old = insert(2, status="succeeded")
    finished(old, 3)
    cli = [sys.executable, "-m", "tasklane.cli", "--data-dir", "/nonexistent", "prune"]
    out = subprocess.run(
        [*cli, "--older-than", "2d", "--dry-run"],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "would remove 2 finished tasks" in out and len(rows()) == 2
    bad = subprocess.run(
        [*cli, "--older-than", "soon"], cwd=ROOT, env=stack.env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "30d" in bad.stderr
    from tasklane.local.events import LambdaContext

    response = handler("reconciler")({"action": "prune"}, LambdaContext(function_name="reconciler"))
    assert response == {"pruned": {"tasks": 0, "workflows": 0, "payloads": 0}}  # 30 days kept
    finished(old, 31)
    response = handler("reconciler")({"action": "prune"}, LambdaContext(function_name="reconciler"))
    assert response["pruned"]["tasks"] == 2 and rows() == {}
