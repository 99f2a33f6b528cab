"""4. Cold start: wall time of a fresh interpreter importing each function's handler module vs a
fresh ``import boto3`` (medians of several runs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.env import ROOT, BenchEnv, median

FUNCTIONS = ("producer", "consumer", "deadletter", "reconciler", "migrator")


def _time(code: str, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", code],
            check=True,
            cwd=ROOT,
            env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1"},
        )
        samples.append(time.perf_counter() - start)
    return median(samples)


def run(bench: BenchEnv) -> dict:
    runs = bench.n(7, 2)
    _time("import boto3", 1)  # warm the OS file cache for both sides
    baseline = _time("import boto3", runs)
    figures = {"import boto3 s": baseline}
    targets = {}
    for fn in FUNCTIONS:
        code = f"import sys; sys.path.insert(0, 'functions/{fn}'); import app"
        _time(code, 1)
        seconds = _time(code, runs)
        figures[f"{fn} s"] = seconds
        figures[f"{fn} vs boto3"] = seconds / baseline
        targets[f"{fn} vs boto3"] = ("<=", 2.0)
    return {
        "name": "cold start (imports)",
        "workload": f"median of {runs} fresh interpreters",
        "figures": figures,
        "targets": targets,
    }
