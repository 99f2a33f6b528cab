"""4. Cold start: wall time of a fresh interpreter importing each function's handler module vs a
fresh ``import boto3`` (medians of several runs).

Both sides import from bytecode, as deployed: the Lambda runtime ships boto3 compiled, and the
core layer's build (layers/tasklane/Makefile) compiles the layer. One more figure shows what the
producer's cold start costs when nothing is compiled (``BuildMethod: python3.12`` ships no
bytecode, and a function cannot write any).

And the whole first call, as a cold Lambda serves it: a fresh interpreter importing the producer
and answering one ``GET /tasks/{id}`` (its first connection to Postgres and its query included)
vs a fresh interpreter importing boto3 and making one SQS call (a client, its first request)."""

from __future__ import annotations

import compileall
import json
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


FIRST_GET = """
import json, sys
sys.path.insert(0, 'functions/producer')
import app

class Context:
    function_name, memory_limit_in_mb, aws_request_id = 'producer', 512, 'r-1'
    invoked_function_arn = 'arn:aws:lambda:us-east-1:123456789012:function:producer'

response = app.lambda_handler(json.load(open(sys.argv[1])), Context())
assert response['statusCode'] == 200, response
"""

ONE_SQS_CALL = """
import os, boto3
boto3.client('sqs').get_queue_attributes(
    QueueUrl=os.environ['LAMBDA_QUEUE_URL'], AttributeNames=['ApproximateNumberOfMessages']
)
"""

OPERATOR = "arn:aws:iam::123456789012:user/bench"


def _first_calls(runs: int, event: str) -> dict[str, float]:
    """The producer's first GET and boto3's first SQS call, each in fresh interpreters."""
    samples: dict[str, list[float]] = {"producer first GET s": [], "boto3 + one SQS call s": []}
    for _ in range(runs + 1):  # the first round warms the OS file cache
        for name, code in (
            ("producer first GET s", FIRST_GET),
            ("boto3 + one SQS call s", ONE_SQS_CALL),
        ):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", code, event],
                check=True,
                cwd=ROOT,
                env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1", "OPERATORS": OPERATOR},
            )
            samples[name].append(time.perf_counter() - start)
    figures = {name: median(values[1:]) for name, values in samples.items()}
    figures["producer first GET vs boto3 + one SQS call"] = (
        figures["producer first GET s"] / figures["boto3 + one SQS call s"]
    )
    return figures


def _get_event() -> str:
    """A stored task and the API Gateway event that reads it, signed by an operator."""
    from tasklane import service
    from tasklane.local.events import http_event, iam_identity

    record, _ = service.submit(service.Submission(task="bench.noop", payload_json="0"))
    path = f"/tasks/{record.id}"
    event = http_event(
        "GET",
        path,
        route_key="GET /tasks/{id}",
        path_parameters={"id": str(record.id)},
        authorizer=iam_identity(OPERATOR),
    )
    handle, name = tempfile.mkstemp(prefix="bench-get-", suffix=".json")
    with os.fdopen(handle, "w") as out:
        json.dump(event, out)
    return name


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
    bench.reset_queues()
    event = _get_event()
    try:
        figures |= _first_calls(runs, event)
    finally:
        os.unlink(event)
    targets["producer first GET vs boto3 + one SQS call"] = ("<=", 2.0)
    return {
        "name": "cold start (imports)",
        "workload": (
            f"median of {runs} fresh interpreters each, from bytecode; imports alone, and the "
            "first call (a GET on Postgres; one SQS call on moto)"
        ),
        "figures": figures,
        "targets": targets,
    }
