"""4. Cold start: wall time of a fresh interpreter importing each function's handler module vs a
fresh ``import boto3`` (medians of several runs).

Both sides import from bytecode, as deployed: the Lambda runtime ships boto3 compiled, and the
core layer's build (layers/tasklane/Makefile) compiles the layer. One more figure shows what the
producer's cold start costs when nothing is compiled (``BuildMethod: python3.12`` ships no
bytecode, and a function cannot write any)."""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
import tempfile
import time

from bench.env import ROOT, BenchEnv, median

FUNCTIONS = ("producer", "consumer", "deadletter", "reconciler", "migrator")


def _once(code: str, **env: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=ROOT,
        env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1"} | env,
    )
    return time.perf_counter() - start


def _handler(function: str) -> str:
    return f"import sys; sys.path.insert(0, 'functions/{function}'); import app"


def run(bench: BenchEnv) -> dict:
    runs = bench.n(9, 2)
    # the layer's bytecode (timestamp-checked here, so that edits are still picked up)
    compileall.compile_dir(ROOT / "layers" / "tasklane" / "tasklane", quiet=1)
    programs = {"import boto3": "import boto3"} | {fn: _handler(fn) for fn in FUNCTIONS}
    samples: dict[str, list[float]] = {name: [] for name in programs}
    for code in programs.values():  # warm the OS file cache
        _once(code)
    for _ in range(runs):  # taking turns, so that a slow spell of the machine hits all alike
        for name, code in programs.items():
            samples[name].append(_once(code))
    baseline = median(samples["import boto3"])
    figures = {"import boto3 s": baseline}
    targets = {}
    for fn in FUNCTIONS:
        figures[f"{fn} s"] = median(samples[fn])
        figures[f"{fn} vs boto3"] = figures[f"{fn} s"] / baseline
        targets[f"{fn} vs boto3"] = ("<=", 2.0)
    with tempfile.TemporaryDirectory() as empty:  # an empty bytecode cache: compile everything
        figures["producer, no bytecode s"] = median(
            [_once(_handler("producer"), PYTHONPYCACHEPREFIX=empty) for _ in range(runs)]
        )
    return {
        "name": "cold start (imports)",
        "workload": f"median of {runs} fresh interpreters each, from bytecode",
        "figures": figures,
        "targets": targets,
    }
