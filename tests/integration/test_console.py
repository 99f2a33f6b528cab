"""The console in a real browser: headless Chromium (Debian's package) driven by Playwright,
against `tasklane dev`. A screenshot of each page goes to the test's temporary directory."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.integration.devstack import final, http, running_stack, submit

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: As root in a container: no sandbox; and no calls home (the network here is closed).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack():
    with running_stack() as stack:
        yield stack


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: scripts/bootstrap --sam installs it (apt)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, stack):
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, permissions=["clipboard-read", "clipboard-write"]
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.errors = errors
    yield page
    context.close()


def expect(locator):
    from playwright.sync_api import expect

    return expect(locator)


def test_the_console_is_static_files_behind_a_strict_policy(stack):
    with urllib.request.urlopen(f"{stack.api}/console") as response:
        html = response.read().decode()
        policy = response.headers["Content-Security-Policy"]
        assert response.headers["Content-Type"].startswith("text/html")
    assert "console/console.js" in html and "<script src=" in html
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    with urllib.request.urlopen(f"{stack.api}/console/console.js") as response:
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert b"textContent" in response.read()
    status, body = http("GET", f"{stack.api}/console/secrets.txt")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_the_list_shows_a_submitted_task_and_filters(page, stack, tmp_path):
    done = submit(stack, "text.wordcount", {"text": "console sees this"})
    assert final(stack, done)["status"] == "succeeded"
    waiting = http(
        "POST",
        f"{stack.api}/tasks",
        {
            **{"task": "test.echo", "payload": "later", "delay_seconds": 3600},
            **{"unique_key": "c-1", "priority": 6},
        },
    )[1]["id"]

    page.goto(f"{stack.api}/console")
    page.locator(f'#tasks tr[data-id="{done}"]').wait_for()
    assert page.locator(f'#tasks tr[data-id="{waiting}"] .status').inner_text() == "scheduled"
    # ids: their random end (a burst shares the timestamp in front), the whole one copied
    shown = page.locator(f'#tasks tr[data-id="{done}"] td.id a').inner_text()
    assert shown == "…" + done[-12:]
    page.click(f'#tasks tr[data-id="{done}"] button.copy')
    expect(page.locator("#message")).to_have_text(f"copied {done}")
    assert page.evaluate("navigator.clipboard.readText()") == done
    ran = page.locator(f'#tasks tr[data-id="{done}"] td.runtime').inner_text()
    assert ran.endswith(" s"), ran
    rows = page.locator("#counts tbody tr")
    statuses = rows.evaluate_all("rows => rows.map(r => r.dataset.status)")
    order = [
        *("pending", "scheduled", "waiting", "queued", "running"),
        *("succeeded", "failed", "cancelled"),
    ]
    assert statuses == sorted(statuses, key=order.index), statuses  # stable, in life order
    expect(page.locator('#counts tr[data-status="succeeded"]')).to_have_count(1)
    expect(page.locator('#queues tr[data-lane="lambda"] td')).to_have_count(5)
    page.locator("#chart rect.succeeded").first.wait_for()  # this minute's completion
    worker = page.locator("#workers tbody tr[data-worker]")  # tasklane dev's celery worker
    expect(worker).to_have_count(1)
    queues = worker.locator("td").nth(2).inner_text().split(", ")  # the lane's two queues
    assert sorted(q.rsplit("-", 1)[-1] for q in queues) == ["celery", "high"], queues
    expect(page.locator("#running")).to_contain_text("lambda: ")
    wordcount = page.locator('#by-task tr[data-task="text.wordcount"] td')  # per task name
    expect(wordcount).to_have_count(6)
    assert wordcount.nth(3).inner_text() == "0%" and wordcount.nth(4).inner_text().endswith("ms")
    page.screenshot(path=tmp_path / "console-list.png", full_page=True)

    page.select_option("#filters select[name=status]", "scheduled")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**#/?status=scheduled")
    page.locator(f'#tasks tr[data-id="{done}"]').wait_for(state="detached")
    statuses = page.locator("#tasks tbody .status").all_inner_texts()
    assert statuses and set(statuses) == {"scheduled"}
    assert page.locator(f'#tasks tr[data-id="{waiting}"]').count() == 1
    page.screenshot(path=tmp_path / "console-filtered.png", full_page=True)
    page.click(f'#tasks tr[data-id="{waiting}"] td.id a')
    expect(page.locator('dd[data-field="unique key"]')).to_have_text("c-1")
    expect(page.locator('dd[data-field="priority"]')).to_have_text("6")
    page.go_back()

    page.goto(f"{stack.api}/console#/?task=text.*")  # a prefix of names
    page.locator(f'#tasks tr[data-id="{done}"]').wait_for()
    assert page.locator(f'#tasks tr[data-id="{waiting}"]').count() == 0

    page.goto(f"{stack.api}/console#/?created_after=yesterday")  # a bad filter: no list
    expect(page.locator("#message")).to_contain_text("created_after")
    expect(page.locator("#tasks tbody tr")).to_have_count(0)
    page.errors.clear()  # the 400 it answered

    page.goto(f"{stack.api}/console#/tasks/{waiting}")
    page.locator("#cancel").wait_for()
    page.once("dialog", lambda dialog: dialog.dismiss())  # asked first; "no" changes nothing
    page.click("#cancel")
    assert http("GET", f"{stack.api}/tasks/{waiting}")[1]["status"] == "scheduled"
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel")
    page.locator('#detail-view[data-status="cancelled"]').wait_for()
    assert http("GET", f"{stack.api}/tasks/{waiting}")[1]["status"] == "cancelled"
    assert page.errors == []


def test_a_failed_tasks_detail_and_retry(page, stack, tmp_path):
    gate = tmp_path / "gate"
    failed = submit(stack, "wf.gate", {"file": str(gate), "value": 7})
    assert final(stack, failed)["status"] == "failed"

    page.goto(f"{stack.api}/console#/tasks/{failed}")
    page.locator('#detail-view[data-status="failed"]').wait_for()
    assert page.locator("#detail-error-line").inner_text() == "RuntimeError: the gate is shut"
    shown_input = json.loads(page.locator("#detail-payload").inner_text())
    assert shown_input == {"file": str(gate), "value": 7}  # what it was submitted with
    failed_attempt = page.locator('#detail-history tbody tr[data-outcome="failed"]')
    expect(failed_attempt).to_have_count(1)
    assert "RuntimeError: the gate is shut" in failed_attempt.inner_text()
    assert "Traceback" in page.locator("#detail-traceback").inner_text()
    assert page.locator('dd[data-field="attempts"]').inner_text() == "1"
    payload_size = page.locator('dd[data-field="payload"]').inner_text()
    assert payload_size.endswith(" B"), payload_size
    assert page.locator("#cancel").is_hidden()
    page.screenshot(path=tmp_path / "console-failed.png", full_page=True)

    gate.touch()  # the cause fixed; the operator retries from the page
    page.click("#retry")
    expect(page.locator("#message")).to_have_text("queued again")
    page.locator('#detail-view[data-status="succeeded"]').wait_for(timeout=60_000)  # live
    assert json.loads(page.locator("#detail-result").inner_text()) == 7
    outcomes = page.locator("#detail-history tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.outcome)"
    )
    assert outcomes == ["failed", "succeeded"]  # the failure before the retry is kept
    assert page.locator("#detail-error").is_hidden() and page.locator("#retry").is_hidden()
    page.screenshot(path=tmp_path / "console-retried.png", full_page=True)
    assert page.errors == []


def test_a_workflow_from_one_of_its_tasks(page, stack, tmp_path):
    chord = {
        "chord": {
            "header": [
                {"task": "text.wordcount", "payload": {"text": "a b"}},
                {"task": "text.wordcount", "payload": {"text": "c"}},
            ],
            "body": {"task": "text.total"},
        }
    }
    status, created = http("POST", f"{stack.api}/workflows", chord)
    assert status == 202, created
    body = created["tasks"][-1]["id"]
    assert final(stack, body)["status"] == "succeeded"

    page.goto(f"{stack.api}/console#/tasks/{created['tasks'][0]['id']}")
    page.click('dd[data-field="workflow"] a')
    page.locator('#workflow-view[data-status="succeeded"]').wait_for()
    rows = page.locator("#workflow-tasks tbody tr")
    expect(rows).to_have_count(3)
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.id)") == [
        t["id"] for t in created["tasks"]
    ]
    assert json.loads(page.locator("#workflow-result").inner_text()) == {"words": 3, "parts": 2}
    after = page.locator("#workflow-tasks tbody td.after").all_inner_texts()
    assert after == ["\u2013", "\u2013", "#1, #2"]  # the chord's body waits for its header
    # drawn: the header's two steps in one column, the body in the next, an arrow from each
    steps = page.locator("#workflow-graph a.step")
    expect(steps).to_have_count(3)
    places = steps.evaluate_all(
        "links => links.map(a => [a.dataset.id, a.dataset.status,"
        " +a.querySelector('rect').getAttribute('x'), +a.querySelector('rect').getAttribute('y')])"
    )
    (one, _, x1, y1), (two, _, x2, y2), (last, status, x3, _) = places
    assert [one, two, last] == [t["id"] for t in created["tasks"]] and status == "succeeded"
    assert x1 == x2 < x3 and y1 != y2
    edges = page.locator("#workflow-graph path.edge").evaluate_all(
        "paths => paths.map(p => [p.dataset.from, p.dataset.to])"
    )
    assert sorted(edges) == sorted([[one, last], [two, last]])
    page.screenshot(path=tmp_path / "console-workflow.png", full_page=True)
    page.click(f'#workflow-tasks tr[data-id="{body}"] a')  # on to one of its tasks
    page.locator('#detail-view[data-status="succeeded"]').wait_for()
    assert page.errors == []


def test_bulk_retry_of_the_failed_tasks_a_filter_finds(page, stack, tmp_path):
    gate = tmp_path / "gate"
    ids = [submit(stack, "wf.gate", {"file": str(gate), "value": i}) for i in range(3)]
    for task_id in ids:
        assert final(stack, task_id)["status"] == "failed"
    gate.touch()

    page.goto(f"{stack.api}/console#/?status=failed&task=wf.gate")
    for task_id in ids:
        page.locator(f'#tasks tr[data-id="{task_id}"]').wait_for()
    page.once("dialog", lambda dialog: dialog.dismiss())  # asked first; "no" retries nothing
    page.click("#retry-all")
    assert all(http("GET", f"{stack.api}/tasks/{i}")[1]["status"] == "failed" for i in ids)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#retry-all")
    expect(page.locator("#message")).to_have_text("3 failed tasks queued again")
    for task_id in ids:
        assert final(stack, task_id)["status"] == "succeeded"
    page.screenshot(path=tmp_path / "console-bulk-retry.png", full_page=True)
    assert page.errors == []


def test_tasklane_console_proxies_a_deployed_api_with_its_credentials(page, stack, tmp_path):
    """`tasklane --api URL --token T console`: the page through a loopback proxy that adds the
    token to every call (with IAM it signs them instead); what the proxy adds and drops is
    checked in tests/unit/test_remote.py."""
    import subprocess
    import sys

    from tasklane.local.postgres import free_port

    from tests.integration.devstack import ROOT, clean_environment

    done = submit(stack, "text.wordcount", {"text": "through the proxy"})
    port = free_port()
    proxy = subprocess.Popen(
        [
            *(sys.executable, "-m", "tasklane.cli"),
            *("--api", stack.api, "--token", "t0ken", "console", "--port", str(port)),
        ],
        cwd=ROOT,
        env=clean_environment() | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert f"http://127.0.0.1:{port}/console" in proxy.stdout.readline()
        page.goto(f"http://127.0.0.1:{port}/console")
        page.locator(f'#tasks tr[data-id="{done}"]').wait_for()
        page.screenshot(path=tmp_path / "console-proxy.png", full_page=True)
        assert page.errors == []
    finally:
        proxy.terminate()
        proxy.wait(10)
