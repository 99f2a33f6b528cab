"""Every benchmark runs (at a tiny size). Speed targets are checked by the benchmarks, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_benchmark_runs_and_reports_its_figures():
    from bench.__main__ import MEASUREMENTS, RESULTS

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "AWS_ENDPOINT_URL_SQS") and "QUEUE_URL" not in k
    }
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((RESULTS / "quick.json").read_text())
    names = [r["name"] for r in summary["results"]]
    assert len(names) == len(MEASUREMENTS)
    for r in summary["results"]:
        assert r["figures"] and all(isinstance(v, float | int) for v in r["figures"].values())
        assert r["workload"]
    assert summary["machine"]["cpus"]
