"""An adopted Celery chord under faults: its body runs exactly once, with every member's
result, through duplicate deliveries of its members and a worker killed in the middle of one.
A real ``celery worker`` of the tests' Celery project, moto's SQS server, a real Postgres."""

from __future__ import annotations

import os
import signal

import pytest
from celery import chord

from tests.conftest import wait_for
from tests.processes import Worker


def _members(stack, name: str) -> list:
    return stack.query("SELECT id, status FROM tasks WHERE task = :task", task=name)


@pytest.mark.slow
def test_a_chords_body_runs_once_through_duplicates_and_a_killed_worker(stack, project, tmp_path):
    from tasklane import broker

    marker = tmp_path / "runs"
    members = [project.slow_member.s(i, str(marker), 0.2) for i in range(6)]
    members.append(project.slow_member.s(6, str(marker), 6))  # the one a worker dies in
    result = chord(members, project.chord_body.s(str(marker))).delay()

    env = stack.env | {"TASK_MODULES": "tests.celery_app.tasks"}
    queue = stack.celery_queue.rsplit("/", 1)[-1]
    first = Worker(env, queue, "--concurrency", "2", app="tests.celery_app")
    try:
        first.wait_ready()
        wait_for(lambda: "member 6" in (marker.read_text() if marker.exists() else ""), 60)
        # every member's message again, as SQS may deliver twice, then the worker dies
        for row in _members(stack, project.slow_member.name):
            body = broker.message_body(project.slow_member.name, row.id, queue)
            stack.sqs.send_message(QueueUrl=stack.celery_queue, MessageBody=body)
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait()
    finally:
        first.stop()
    second = Worker(env, queue, "--concurrency", "2", app="tests.celery_app")
    try:
        second.wait_ready()
        assert result.get(timeout=120) == sum(range(7))
        wait_for(lambda: stack.depth(stack.celery_queue) == 0, 60, what="the queue drained")
    finally:
        second.stop()
    lines = marker.read_text().splitlines()
    assert lines.count(f"body {list(range(7))}") == 1, lines  # once, with every result
    assert sum(line.startswith("body") for line in lines) == 1, lines
    assert lines.count("member 6") == 2, lines  # the killed run, and its one redelivery
    statuses = {row.status for row in _members(stack, project.slow_member.name)}
    assert statuses == {"succeeded"}


def test_a_members_end_counted_twice_fires_the_body_once(stack, project, monkeypatch):
    """The fan-in itself: a member whose end is reported twice (a duplicate run that got that
    far) counts once, and only the member completing the set sends the body."""
    from celery import group
    from celery.canvas import Signature
    from celery.utils.objects import Bunch

    backend = project.app.backend
    header = group(project.add.s(i, i) for i in range(3)).freeze()
    backend.apply_chord((header.id, header.results), None)
    body = Signature(project.tsum.s(), app=project.app)
    body.freeze()
    sent = []
    monkeypatch.setattr(project.app.amqp, "_retry_publish", lambda send, ret: sent.append(ret))
    for result in header.results:
        backend.store_result(result.id, 1, "SUCCESS")
    requests = [Bunch(id=r.id, group=header.id, chord=dict(body)) for r in header.results]
    backend.on_chord_part_return(requests[0], "SUCCESS", 1)
    backend.on_chord_part_return(requests[0], "SUCCESS", 1)  # the same member again
    backend.on_chord_part_return(requests[1], "SUCCESS", 1)
    assert sent == []  # two of three members have ended
    backend.on_chord_part_return(requests[2], "SUCCESS", 1)
    backend.on_chord_part_return(requests[2], "SUCCESS", 1)
    assert sent == [[1, 1, 1]]
    (row,) = stack.query(
        "SELECT done, fired_at FROM celery_groups WHERE id = :id",
        id=header.id,
    )
    assert row.done == 3 and row.fired_at is not None
