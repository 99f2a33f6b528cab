"""A Celery worker's heartbeat in Postgres: every :data:`HEARTBEAT_S` seconds its name, host,
pid, queues, concurrency and the tasks it is running, so the workers view (``GET /workers``,
``tasklane workers``, the console) shows who is alive and what each runs. Celery's own
heartbeats travel over the broker's fanout exchange, which SQS does not have; Postgres is
where everything else about the tasks already is.

A worker that stops cleanly removes its row; one that died stops beating, and its row ages
until the view leaves it out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tasklane.errors import TasklaneError
from tasklane.logs import logger
from tasklane.store import default_store

#: How often a worker says it is alive; one not heard of for three beats is shown as gone.
HEARTBEAT_S = 10.0


class Heartbeat:
    """A daemon thread that writes ``describe()`` (the worker's row) every beat."""

    def __init__(self, describe: Callable[[], dict[str, Any]], every: float = HEARTBEAT_S):
        self.describe = describe
        self.every = every
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tasklane-heartbeat", daemon=True)
        self.name: str | None = None

    def start(self) -> Heartbeat:
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                row = self.describe()
                self.name = row["name"]
                default_store().beat(row)
            except (TasklaneError, OSError) as exc:  # Postgres away: the next beat tries again
                logger.warning("worker heartbeat not written", extra={"error": str(exc)})
            self.stopping.wait(self.every)

    def stop(self) -> None:
        """The worker stops cleanly: no more beats, and its row goes."""
        self.stopping.set()
        self.thread.join(timeout=5)
        if self.name is not None:
            try:
                default_store().forget_worker(self.name)
            except (TasklaneError, OSError) as exc:
                logger.warning("worker row not removed", extra={"error": str(exc)})
