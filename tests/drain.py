"""One lambda-lane consumer "container" as a process of its own: the consumer function's
handler behind an emulated event source, polling until its queue has stayed empty for a while.
Writes its report, one JSON object, to the ``--report`` file: the records it handled, when it
handled its first and last, and when each invocation ended with how many records. Its logs go
to stdout, which :func:`spawn` sends to a file: a pipe nobody reads while the process runs
fills (64 KiB of log lines) and stops the consumer in the middle of a task, holding its claim,
as a frozen container would.

With ``--messages FILE`` (a JSON list of messages as ReceiveMessage returns them) the queue
is that list, in this process: the benchmark's measure of consumers and Postgres without the
SQS emulator, which is slower than either.

python -m tests.drain QUEUE_URL --report FILE [--idle SECONDS] [--messages FILE]
(tests/integration/test_concurrency.py, bench/concurrency.py, through :func:`spawn`)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]


class Sampler:
    """Runs ``query`` on its own connection every ``every`` seconds while a test drains, and
    keeps, per first column, the most the second column reached (``most``); ``samples``
    counts the readings. ``seen(rows)`` may keep more from each reading."""

    def __init__(self, url: str, query: str, every: float = 0.02, **params: object) -> None:
        self.engine = create_engine(url, pool_size=1)
        self.query, self.params, self.every = text(query), params, every
        self.most: dict = {}
        self.samples = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def seen(self, rows: list) -> None:
        for name, count in rows:
            self.most[name] = max(self.most.get(name, 0), count)

    def _sample(self) -> None:
        while not self.stop.is_set():
            with self.engine.connect() as conn:
                self.seen(conn.execute(self.query, self.params).all())
            self.samples += 1
            self.stop.wait(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.engine.dispose()


class Connections(Sampler):
    """Samples pg_stat_activity: the most connections each process held at once."""

    def __init__(self, url: str) -> None:
        super().__init__(
            url,
            "SELECT application_name, count(*) FROM pg_stat_activity "
            "WHERE application_name LIKE 'tasklane %' GROUP BY application_name",
        )


class ListQueue:
    """A queue of messages held in a list: each is received once, and deleting is a no-op."""

    def __init__(self, messages: list[dict]) -> None:
        self.messages = messages

    def receive_message(self, *, MaxNumberOfMessages: int = 1, **_: object) -> dict:
        taken = self.messages[:MaxNumberOfMessages]
        del self.messages[:MaxNumberOfMessages]
        return {"Messages": taken}

    def delete_message_batch(self, **_: object) -> dict:
        return {}


def _ready_file(report: Path) -> Path:
    """Where a consumer started with a go says it is ready: beside its report."""
    return report.with_suffix(".ready")


@dataclass
class Drain:
    """A consumer process started by :func:`spawn`."""

    process: subprocess.Popen
    report_path: Path
    log_path: Path

    @property
    def ready(self) -> bool:
        """Started and waiting for the go (see :func:`start_together`)."""
        return _ready_file(self.report_path).exists()

    def report(self, timeout: float) -> dict:
        """Wait for the process to finish; its report. One still running then is stopped."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        if code != 0:
            raise RuntimeError(f"consumer exited {code}; its log: {self.log_path}")
        return json.loads(self.report_path.read_text())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def spawn(
    queue_url: str,
    env: dict[str, str],
    workdir: Path,
    idle: float = 3.0,
    messages: list[dict] | None = None,
    go: Path | None = None,
) -> Drain:
    """Start one consumer process on ``queue_url`` (or on ``messages``, held in the process);
    its log and report files in ``workdir``. With ``go``, it imports and connects, then waits
    for that file to exist before it takes its first message."""
    workdir.mkdir(parents=True, exist_ok=True)
    name = f"drain-{time.monotonic_ns()}"
    report_path, log_path = workdir / f"{name}.json", workdir / f"{name}.log"
    command = [sys.executable, "-m", "tests.drain", queue_url, "--idle", str(idle)]
    command += ["--report", str(report_path)]
    if messages is not None:
        (workdir / f"{name}.messages.json").write_text(json.dumps(messages))
        command += ["--messages", str(workdir / f"{name}.messages.json")]
    if go is not None:
        command += ["--go", str(go)]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Drain(process, report_path, log_path)


def start_together(
    drains: list[Drain], go: Path, timeout: float = 120, before: Callable[[], object] = tuple
) -> float:
    """Wait until every process is ready, call ``before``, then let them all start at once: a
    process still importing would otherwise share the CPUs with those already draining.
    Returns when ``before`` was called (``time.time()``): the start of the drain."""
    deadline = time.monotonic() + timeout
    while not all(drain.ready for drain in drains):
        if time.monotonic() > deadline or any(d.process.poll() is not None for d in drains):
            for drain in drains:  # none left waiting for a go that will not come
                drain.stop()
            raise RuntimeError(f"consumers did not get ready; logs beside {drains[0].log_path}")
        time.sleep(0.05)
    began = time.time()
    before()
    go.touch()
    return began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("queue_url")
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--idle", type=float, default=3.0)
    parser.add_argument("--messages", type=Path)
    parser.add_argument("--go", type=Path)
    args = parser.parse_args()
    os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "ConsumerFunction"  # its connections' name
    sys.path.insert(0, str(ROOT / "functions" / "consumer"))
    import app  # the consumer function's module, as Lambda loads it
    from tasklane import broker
    from tasklane.local.events import queue_arn
    from tasklane.local.eventsource import SqsEventSource

    queue = ListQueue(json.loads(args.messages.read_text())) if args.messages else broker.sqs()
    source = SqsEventSource(
        queue,
        args.queue_url,
        queue_arn(args.queue_url.rsplit("/", 1)[-1]),
        app.lambda_handler,
        function_name="ConsumerFunction",
        report_batch_item_failures=True,
        timeout=30,
    )
    if args.go is not None:
        from tasklane.store import default_store

        default_store().engine.connect().close()  # connected, as a warm container is
        _ready_file(args.report).touch()
        waiting_since = time.monotonic()
        while not args.go.exists():  # for as long as its starter may wait, and while it lives
            if time.monotonic() - waiting_since > 300 or os.getppid() == 1:
                sys.exit("no go: the process that started this consumer gave up")
            time.sleep(0.01)
    handled, first, last, quiet_since = 0, None, None, time.monotonic()
    batches: list[tuple[float, int]] = []  # when each invocation ended, and its records
    while time.monotonic() - quiet_since < args.idle:
        result = source.poll_once()
        if result is not None and result.records:
            now = time.time()
            first = first or now
            last = now
            handled += result.records
            batches.append((now, result.records))
            quiet_since = time.monotonic()
    report = {
        "pid": os.getpid(),
        "records": handled,
        "first": first,
        "last": last,
        "batches": batches,
    }
    args.report.write_text(json.dumps(report))


if __name__ == "__main__":
    main()
