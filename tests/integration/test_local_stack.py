"""`tasklane dev` end to end, started as a user starts it, stopped as a user stops it (Ctrl-C)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_for
from tests.integration.devstack import (
    clean_environment,
    final,
    http,
    running_stack,
    submit,
)

MAX_RECEIVES = 5  # template.yaml's MaxReceiveCount default


@pytest.fixture(scope="module")
def local_stack():
    with running_stack() as stack:
        yield stack


@pytest.mark.slow
def test_both_lanes_run_tasks_submitted_over_http(local_stack):
    lambda_ids = [submit(local_stack, "text.wordcount", {"text": f"a b c {i}"}) for i in range(5)]
    celery_ids = [submit(local_stack, "math.primes", {"limit": 50_000}) for _ in range(2)]
    for task_id in lambda_ids:
        task = final(local_stack, task_id)
        assert task["status"] == "succeeded" and task["lane"] == "lambda"
        assert task["result"]["words"] == 4
    for task_id in celery_ids:
        task = final(local_stack, task_id)
        assert task["status"] == "succeeded" and task["result"]["count"] == 5133
    status, body = http(
        "POST",
        f"{local_stack.api}/tasks/batch",
        {"tasks": [{"task": "test.echo", "payload": i} for i in range(12)]},
    )
    assert status == 202
    for task in body["tasks"]:
        assert final(local_stack, task["id"])["result"] == {"echo": body["tasks"].index(task)}


@pytest.mark.slow
def test_the_api_speaks_json_errors(local_stack):
    status, body = http("POST", f"{local_stack.api}/tasks", {"task": "no.such", "payload": 1})
    assert status == 422 and body["error"]["code"] == "unknown_task"
    status, body = http("GET", f"{local_stack.api}/tasks/does-not-exist")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = http("DELETE", f"{local_stack.api}/tasks")
    assert status == 404  # no such route in template.yaml: API Gateway's own 404


@pytest.mark.slow
def test_an_always_failing_task_dead_letters_and_ends_failed(local_stack):
    task_id = submit(local_stack, "test.fail", {"why": "e2e"})
    task = final(local_stack, task_id, timeout=150)
    assert task["status"] == "failed"
    assert task["attempts"] == MAX_RECEIVES  # every delivery ran; then the redrive policy moved it
    assert task["error"]["type"] == "ValueError"
    assert task["error"]["message"] == "always fails: e2e"
    failures = [
        json.loads(line[line.index("{") :])
        for line in local_stack.lines
        if task_id in line and '"task failed' in line
    ]  # each attempt's failure, once, with its message and the task's own traceback
    assert len(failures) == MAX_RECEIVES, failures
    assert all(f["error_message"] == "always fails: e2e" for f in failures)
    assert all("in fail\n    raise ValueError" in f["traceback"] for f in failures), failures
    wait_for(
        lambda: any("task dead-lettered" in line and task_id in line for line in local_stack.lines),
        10,
        what="the dead-letter function",
    )


@pytest.mark.slow
def test_cli_lists_shows_and_submits(local_stack):
    task_id = submit(local_stack, "text.wordcount", {"text": "one two"})
    final(local_stack, task_id)
    listing = local_stack.cli("tasks", "--limit", "50", columns=80)
    assert listing.returncode == 0, listing.stderr
    assert task_id in listing.stdout and "succeeded" in listing.stdout  # never cut
    watching = subprocess.Popen(
        local_stack.cli_command("tasks", "--watch", "0.3"),
        cwd=ROOT,
        env=local_stack.cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    later = submit(local_stack, "test.echo", {"while": "watching"})  # shows up in a refresh
    final(local_stack, later)
    time.sleep(1.5)
    watching.send_signal(signal.SIGINT)  # Ctrl-C ends it cleanly
    out, err = watching.communicate(timeout=30)
    assert watching.returncode == 0, err
    assert later in out and "updated" in out
    shown = local_stack.cli("show", task_id)
    assert shown.returncode == 0 and '"words": 2' in shown.stdout
    assert '"text": "one two"' in shown.stdout  # its input
    assert '"text"' not in local_stack.cli("show", task_id, "--no-input").stdout
    later = [
        local_stack.cli("submit", "test.echo", "--countdown", "30", "--idempotency-key", "k-1")
        for _ in range(2)
    ]
    ids = {r.stdout.split()[1] for r in later}
    assert all(r.returncode == 0 for r in later) and len(ids) == 1, later  # the key replays
    (later_id,) = ids
    assert later[0].stdout.startswith("submitted") and later[1].stdout.startswith("existing")
    unique = [
        local_stack.cli("submit", "test.echo", "--countdown", "30", "--unique-key", "u-1")
        for _ in range(2)
    ]
    assert len({r.stdout.split()[1] for r in unique}) == 1, unique  # the live one, again
    assert unique[1].stdout.startswith("existing") and "unique key" in unique[1].stdout
    scheduled = http("GET", f"{local_stack.api}/tasks/{later_id}?include=payload")[1]
    assert scheduled["run_at"] is not None and scheduled["payload"] == {}  # {} by default
    submitted = local_stack.cli("submit", "math.primes", "--payload", '{"limit": 100}', "--wait")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert '"count": 25' in submitted.stdout
    bad = local_stack.cli("submit", "math.primes", "--payload", "{not json")
    assert bad.returncode == 2 and "not JSON" in bad.stderr


@pytest.mark.slow
def test_tasklane_env_is_all_python_needs_to_use_the_stack(local_stack):
    printed = local_stack.cli("env")
    assert printed.returncode == 0, printed.stderr
    exports = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in printed.stdout.splitlines()
    )
    assert {"DATABASE_URL", "AWS_ENDPOINT_URL_SQS", "LAMBDA_QUEUE_URL"} <= set(exports)
    script = "from tests import tasks; print(tasks.echo.delay('from my shell').get(timeout=60))"
    ran = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=clean_environment() | exports | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "{'echo': 'from my shell'}"


@pytest.mark.slow
def test_cli_stats_and_bulk_retry_through_the_api(local_stack):
    """The same commands go to a deployed API with --api (signed, or with --token); here to the
    local stack's, named explicitly as a deployed one would be."""
    failed = submit(local_stack, "test.fail_twice", {})
    assert final(local_stack, failed, timeout=90)["status"] == "failed"
    api = ("--api", local_stack.api, "--token", "unused-locally")
    shown = local_stack.cli(*api, "show", failed)
    assert "Traceback (most recent call last)" in shown.stdout, shown.stdout
    assert "fail_twice" in shown.stdout  # the task's own frames, not the last line only
    assert shown.stdout.count("RuntimeError:") >= 3  # each attempt in its history, and the last
    stats = local_stack.cli(*api, "stats")
    assert stats.returncode == 0, stats.stderr
    assert "failed" in stats.stdout and "lambda_dlq" not in stats.stdout
    assert "dead letters" in stats.stdout and "last 15 minutes" in stats.stdout
    assert "by task, last 1:00:00" in stats.stdout and "test.fail_twice" in stats.stdout
    assert "100%" in stats.stdout  # its failure rate
    workers = local_stack.cli(*api, "workers")
    assert workers.returncode == 0 and "celery@" in workers.stdout, workers.stderr
    assert "running now: lambda" in workers.stdout
    listing = local_stack.cli(*api, "tasks", "--status", "failed", "--lane", "lambda")
    assert failed[:8] in listing.stdout
    retried = local_stack.cli(*api, "retry", "--failed", "--task", "test.fail_twice")
    assert retried.returncode == 0 and "failed tasks queued again" in retried.stdout
    assert http("GET", f"{local_stack.api}/tasks/{failed}")[1]["attempts"] in (0, 1, 2)
    unknown = local_stack.cli(*api, "show", "00000000-0000-0000-0000-000000000000")
    assert unknown.returncode == 2 and "404 not_found" in unknown.stderr


@pytest.mark.slow
def test_invoke_runs_a_template_function_with_an_event(local_stack):
    result = local_stack.cli(
        "invoke",
        "ProducerFunction",
        "--event",
        "events/producer-submit.json",
        "--parameter-overrides",
        "TaskModules=tasklane.examples,tests.tasks",
    )
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout[result.stdout.index("{\n") :])
    assert response["statusCode"] == 202
    created = json.loads(response["body"])
    assert final(local_stack, created["id"])["result"]["words"] == 9


@pytest.mark.slow
def test_reconcile_sends_the_running_stacks_due_tasks(local_stack):
    """`tasklane reconcile` from a plain shell runs the stack's reconciler against the stack's
    own queues (the ones `tasklane dev` made from template.yaml)."""
    from sqlalchemy import create_engine, text

    status, body = http(
        "POST",
        f"{local_stack.api}/tasks",
        {"task": "test.echo", "payload": "later", "delay_seconds": 7200},
    )
    assert status == 202 and body["status"] == "scheduled", body
    engine = create_engine(local_stack.state()["database_url"])
    with engine.begin() as conn:
        conn.execute(text("UPDATE tasks SET run_at = now() WHERE id = :id"), {"id": body["id"]})
    engine.dispose()
    result = local_stack.cli("reconcile")
    assert result.returncode == 0, result.stdout + result.stderr
    # the stack's own reconciler (every minute) may have taken it first, and a consumer may
    # claim the sent task before it is marked queued: what counts is that it runs
    assert re.search(r"sent \d of \d ", result.stdout), result.stdout
    assert final(local_stack, body["id"])["result"] == {"echo": "later"}


def _curl_examples() -> list[tuple[str, str, str, str]]:
    """Every ``curl`` that changes something in the docs (a console block's ``curl -X POST``,
    continuation lines joined): (page, method, path, body)."""
    found = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text()
        for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
            joined = re.sub(r"\\\n\s*", " ", block)
            for command in re.findall(r"^\$ (curl .*?)(?=^\$ |\Z)", joined, flags=re.S | re.M):
                words = shlex.split(command.split("  #")[0].replace("\n", " "))
                if "-X" not in words:
                    continue
                method = words[words.index("-X") + 1]
                url = next(w for w in words if w.startswith("localhost:3000"))
                body = words[words.index("-d") + 1] if "-d" in words else None
                found.append((page.name, method, url.removeprefix("localhost:3000"), body))
    return found


@pytest.mark.slow
def test_every_curl_example_in_the_docs_runs(local_stack):
    examples = _curl_examples()
    assert {page for page, *_ in examples} >= {"getting-started.md", "workflows.md"}
    for page, method, path, body in examples:
        status, answer = http(method, f"{local_stack.api}{path}", json.loads(body))
        assert status == 202, (page, status, answer)
        if path == "/workflows":
            shown = local_stack.cli("workflow", answer["id"])
            assert shown.returncode == 0 and answer["tasks"][0]["id"] in shown.stdout
            wait_for(
                lambda answer=answer: (
                    http("GET", f"{local_stack.api}/workflows/{answer['id']}")[1]["status"]
                    == "succeeded"
                ),
                120,
                what=f"the workflow of {page}",
            )
        else:
            assert final(local_stack, answer["id"], timeout=120)["status"] == "succeeded", page
    chord = next(body for _, _, path, body in examples if path == "/workflows")
    _, created = http("POST", f"{local_stack.api}/workflows", json.loads(chord))
    final(local_stack, created["tasks"][-1]["id"], timeout=120)
    shown = local_stack.cli("workflow", created["id"])  # `tasklane workflow ID`
    assert shown.returncode == 0, shown.stderr
    assert "succeeded" in shown.stdout and '"words": 3' in shown.stdout  # the body's result
    assert all(task["id"] in shown.stdout for task in created["tasks"])
    assert "#1, #2" in shown.stdout  # the body waits for both header tasks


def _cli_examples() -> list[tuple[str, list[str]]]:
    """Every ``$ .venv/bin/tasklane ...`` line of the docs' console blocks that runs against
    the local stack (not ``dev`` or ``init``, which start or make something; not ``env``, run
    under ``eval``; each tested on its own): (page, arguments)."""
    found = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for block in re.findall(r"```console\n(.*?)```", page.read_text(), flags=re.S):
            for line in re.findall(r"^\$ \.venv/bin/tasklane (.*)$", block, flags=re.M):
                args = shlex.split(line.split("  #")[0])
                if args and args[0] not in ("dev", "init"):
                    found.append((page.name, args))
    return found


@pytest.mark.slow
def test_every_tasklane_command_in_the_docs_runs(local_stack):
    examples = _cli_examples()
    assert {args[0] for _, args in examples} >= {"submit", "tasks", "show", "workflow", "invoke"}
    task_id = submit(local_stack, "text.wordcount", {"text": "docs"})
    final(local_stack, task_id)
    _, workflow = http(
        "POST", f"{local_stack.api}/workflows", {"chain": [{"task": "test.echo", "payload": 1}]}
    )
    for page, args in examples:
        ids = workflow["id"] if args[0] == "workflow" else task_id
        ran = local_stack.cli(*[ids if a == "ID" else a for a in args])
        assert ran.returncode == 0, (page, args, ran.stdout[-2000:], ran.stderr[-2000:])


@pytest.mark.slow
def test_ctrl_c_stops_everything_and_leaves_no_process(local_stack):
    """Last in this module: it stops the stack the tests above share. A second Ctrl-C while it
    stops hurries it (what is left is killed), and still leaves nothing behind."""
    state = local_stack.state()
    children = state["children"]
    assert len(children) >= 4  # moto, the celery worker, a process per function
    os.killpg(local_stack.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
    wait_for(lambda: "stopping" in local_stack.output(), 10, what="the stack to start stopping")
    os.killpg(local_stack.process.pid, signal.SIGINT)  # an impatient second Ctrl-C
    assert local_stack.process.wait(60) == 0
    assert "local stack stopped" in local_stack.output()
    for pid in children:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        ), pid
    assert not (local_stack.dir / "state" / "postgres" / "postmaster.pid").exists()
    assert not (local_stack.dir / "state" / "stack.json").exists()
