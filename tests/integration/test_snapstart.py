"""SnapStart's cycle, simulated in one process (tests/integration/snapstart_cycle.py): each
restored environment opens its own database connection and makes its own AWS client, and its
random numbers are its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT, TASK_MODULES


def test_each_restore_uses_fresh_connections_and_clients(stack):
    env = dict(os.environ) | stack.env | {"PYTHONPATH": str(ROOT), "TASK_MODULES": TASK_MODULES}
    run = subprocess.run(
        [sys.executable, "-m", "tests.integration.snapstart_cycle"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["created"]["status"] == 202
    assert report["engine_after_before_hooks"] == 0  # no connection in the snapshot from us
    first, second = report["restored"]
    for restored in (first, second):
        assert restored["got"] == 200 and restored["sent"] == 202
        assert restored["backend"] != report["snapshot_backend"]  # a connection of its own
        assert restored["client_from_snapshot"] is False  # an SQS client of its own
    assert first["backend"] != second["backend"]
    assert first["random"] != second["random"]  # reseeded: not the snapshot's sequence


def test_without_the_runtime_module_nothing_is_registered(monkeypatch):
    from tasklane import snapstart

    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # as outside Lambda
    assert snapstart.register() is False
