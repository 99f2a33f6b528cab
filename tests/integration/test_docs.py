"""The documentation: built strict, and every Python example in it is a file the tests run."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from tasklane import database

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _snippets():
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_snippets", DOCS / "snippets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


section = _snippets().section  # a file's snippet section, as the docs copy it


def test_the_site_builds_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "guarantees" / "index.html").exists()


def test_every_python_example_in_the_docs_is_a_copy_of_a_file_the_tests_run():
    """Each example is written out in its page (GitHub shows the Markdown as it is), after a
    marker naming the file section it copies; each copy is that section word for word
    (``python docs/snippets.py`` refreshes them)."""
    snippets = _snippets()
    copied = []
    for page in sorted(DOCS.glob("*.md")):
        text_ = page.read_text()
        assert "--8<--" not in text_, f"{page.name}: an include line GitHub would show as is"
        for block in re.finditer(r"(^.*\n)?```python\n", text_, re.M):
            marker = snippets.MARKER.match(block.group(1) or "")
            assert marker, f"{page.name}: a Python example without its source:\n{block.group(0)}"
            copied.append(marker.group(1))
        assert snippets.expand(text_) == text_, f"{page.name}: stale (python docs/snippets.py)"
    assert copied
    runnable = {p.relative_to(ROOT).as_posix() for p in (DOCS / "examples").glob("*.py")}
    assert runnable <= set(copied), "an example file no page shows"


def test_readme_examples_are_the_docs_examples_verbatim():
    """README cannot include files (it is read on GitHub): its examples are copies of tested
    sections, word for word."""
    sources = [
        section(ROOT / "layers/app/myapp/tasks.py", "tasks"),
        section(DOCS / "examples/python_api.py", "tour"),
    ]
    blocks = BLOCK.findall((ROOT / "README.md").read_text())
    assert blocks and all(block.strip() in {s.strip() for s in sources} for block in blocks)


def test_the_python_api_tour_runs(tasklane_eager, capsys):
    runpy.run_path(str(DOCS / "examples" / "python_api.py"))
    assert "no task named 'no.such.task'" in capsys.readouterr().out


def test_the_celery_results_example_runs(tasklane_eager):
    namespace = runpy.run_path(str(DOCS / "examples" / "celery_results.py"))
    assert namespace["value"] == {"words": 3, "top": [["read", 1], ["by", 1], ["celery", 1]]}
    assert namespace["result"].state == "SUCCESS"


@pytest.fixture
def charges(tasklane_database):
    with database.engine().begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS charges"))
        conn.execute(text("CREATE TABLE charges (order_id int, amount int)"))
    yield
    with database.engine().begin() as conn:
        conn.execute(text("DROP TABLE charges"))


def test_the_transactional_billing_example_runs(tasklane_eager, charges):
    import tasklane

    runpy.run_path(str(DOCS / "examples" / "billing.py"))
    handle = tasklane.submit("billing.charge", {"order": 7, "amount": 250})
    assert handle.get(timeout=0) == {"charged": 250}
    with database.engine().connect() as conn:
        rows = conn.execute(text("SELECT order_id, amount FROM charges")).all()
    assert rows == [(7, 250)]


def test_the_later_example_runs(tasklane_eager):
    from tasklane import registry
    from tasklane.lifecycle import Status

    try:
        namespace = runpy.run_path(str(DOCS / "examples" / "later.py"))
        assert namespace["next_month"].status() is Status.SCHEDULED
        assert namespace["in_ten_minutes"].status() is Status.CANCELLED
        nightly = registry.registered("reports.nightly")
        assert nightly is not None and nightly.schedule.expression == "cron(0 3 * * ? *)"
        assert registry.registered("cache.warm").schedule.payload == {"all": True}
        handle = namespace["export"].delay({"chunks": [[1], [2, 3]]})
        assert handle.get(timeout=0) == {"rows": 3}
    finally:  # periodic tasks left registered would fire in other tests' scheduled passes
        for name in ("reports.nightly", "cache.warm", "exports.rows"):
            registry._tasks.pop(name, None)


def test_the_unique_example_runs(tasklane_eager):
    from tasklane import registry

    try:
        namespace = runpy.run_path(str(DOCS / "examples" / "unique.py"))
        assert not namespace["first"].status().terminal  # still live when the second came
        assert namespace["hourly"].get(timeout=0) == {"account": 7}  # ran; its hour holds
        with database.engine().connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM tasks")).scalar_one()
        assert count == 2
    finally:
        registry._tasks.pop("reports.rebuild", None)


def test_the_limits_example_runs(tasklane_eager):
    from tasklane import registry

    try:
        namespace = runpy.run_path(str(DOCS / "examples" / "limits.py"))
        assert namespace["synced"].get(timeout=0) == {"synced": 42}
        limit = registry.get("crm.sync").concurrency
        assert limit.limit == 5 and limit.key_of({"account": 42}) == "account=42"
        assert registry.get("reports.heavy").concurrency.key is None
        assert namespace["mailed"].get(timeout=0) == {"sent": "ada@example.com"}
        assert registry.get("maps.geocode").rate_limit.interval_s == 0.1
        # eagerly, the first ran as it was submitted; the second was released by its end
        assert namespace["first"].get(timeout=0) == {"posted": "open"}
        assert namespace["then"].get(timeout=0) == {"posted": "deposit"}
        assert registry.get("alerts.page").priority == 9
        assert namespace["paged"].get(timeout=0) == {"paged": "on-call"}
        assert namespace["resized"].get(timeout=0) == {"synced": 1}
        from tasklane.store import default_store

        assert default_store().get(namespace["resized"].id).priority == 7
    finally:
        for name in ("crm.sync", "reports.heavy", "maps.geocode", "mail.send", "ledger.post"):
            registry._tasks.pop(name, None)
        registry._tasks.pop("alerts.page", None)


def test_the_workflows_example_runs(tasklane_eager):
    from tasklane import registry

    try:
        namespace = runpy.run_path(str(DOCS / "examples" / "workflows.py"))
        assert namespace["result"] == {"published": "daily", "images": 3}
        assert namespace["handle"].status() == "succeeded"
        assert [r["image"] for r in namespace["side_by_side"].get(timeout=0)] == [
            "a.png",
            "b.png",
            "c.png",
        ]
    finally:
        for name in ("images.resize", "images.index", "reports.publish"):
            registry._tasks.pop(name, None)
