"""One SnapStart cycle in one process, as Lambda runs it: the function's init, the
before-snapshot hooks, a fork standing in for each restore, the after-restore hooks, then a
request. Prints what each restored environment used, as JSON (tests/integration/test_snapstart.py).
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "functions" / "producer"))  # the handler, as Lambda loads it

import app  # noqa: E402  (registers the hooks, as the function's init does)
import snapshot_restore_py  # noqa: E402
from tasklane import broker, database  # noqa: E402
from tasklane.local.events import LambdaContext, http_event  # noqa: E402


def request(method: str, path: str, body=None) -> dict:
    raw = json.dumps(body) if body is not None else None
    event = http_event(method, path, headers={"content-type": "application/json"}, body=raw)
    response = app.lambda_handler(event, LambdaContext(function_name="ProducerFunction"))
    return {"status": response["statusCode"], "body": json.loads(response["body"])}


def backend() -> int:
    with database.engine().connect() as conn:
        return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()


def main() -> None:
    # the init: a request that opens a connection and makes the SQS client
    created = request("POST", "/tasks", {"task": "test.echo", "payload": "before"})
    broker.sqs().snapshotted = True  # a mark on the client the snapshot holds
    for hook, args, kwargs in snapshot_restore_py.get_before_snapshot():
        hook(*args, **kwargs)
    report = {
        "created": created,
        "engine_after_before_hooks": database.engine.cache_info().currsize,
    }
    # whatever else the snapshot holds: a connection open in the pool at snapshot time
    report["snapshot_backend"] = backend()
    children = []
    for _ in range(2):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # a restored environment
            os.close(read)
            for hook, args, kwargs in snapshot_restore_py.get_after_restore():
                hook(*args, **kwargs)
            got = request("GET", f"/tasks/{created['body']['id']}")
            sent = request("POST", "/tasks", {"task": "test.echo", "payload": "after"})
            restored = {
                "got": got["status"],
                "sent": sent["status"],
                "backend": backend(),
                "client_from_snapshot": getattr(broker.sqs(), "snapshotted", False),
                "random": random.random(),
            }
            os.write(write, json.dumps(restored).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            children.append(json.loads(pipe.read()))
        os.waitpid(pid, 0)
    report["restored"] = children
    print(json.dumps(report))


if __name__ == "__main__":
    main()
