"""Existing Celery tasks, claim-checked: one line, and their code and callers stay as they are.

::

    app = Celery("proj")
    tasklane.celery.claim_check(app)       # right after creating the app, before its tasks

    @app.task                              # or @shared_task; args and kwargs as before
    def resize(image_id, *, width=800): ...

    resize.delay(42, width=1024)           # stores the arguments in Postgres, sends only an id
    resize.apply_async((42,), {"width": 1024}, countdown=60).get(timeout=30)

Every task of the app becomes a tasklane task of the same name (lane ``celery``, or the one the
task names: ``@app.task(lane="lambda")``). ``delay``/``apply_async`` store the arguments as the
task's payload, ``{"args": [...], "kwargs": {...}}``, encoded as Celery's JSON serializer
encodes them (datetimes, UUIDs and Decimals included), and send the usual claim-check message.
Arguments that are not JSON are an error at the call site, never a poison message later.

A worker runs the task body as written, with the arguments read back from Postgres, through
tasklane's executor: the claim, the outcome, retries by redelivery, the DLQ, the time limit and
the result backend (``AsyncResult``) work as for any tasklane task. The lambda lane runs such a
task too, when its module is in ``TASK_MODULES``.

What changes for a Celery task: a failed run is retried by SQS redelivery (acks late, never on
failure) until the task's ``max_attempts`` (``@app.task(max_attempts=3)``) or the queue's
``maxReceiveCount``; ``self.retry()`` asks for exactly that, sooner. Results live in Postgres.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from celery import Celery, Task
from kombu.utils import json as kombu_json

from tasklane import registry
from tasklane.celery_settings import SQS_POLLING, SQS_WORKER_SETTINGS
from tasklane.config import settings
from tasklane.errors import InvalidRequest
from tasklane.lanes import queue_name
from tasklane.lifecycle import retry_delay_seconds

#: Receive counts kombu's back-off policy covers: every count SQS allows (maxReceiveCount is at
#: most 1,000), so no retry waits a queue's whole visibility timeout.
BACKOFF_STEPS = 1000

#: The key under which the worker hands a run's delivery token to its pool process.
DELIVERY_KEY = "tasklane_delivery"

_apps: list[Celery] = []


def encode_arguments(args: Any, kwargs: Any) -> dict:
    """A task's arguments as its payload: Celery's JSON encoding, made plain JSON."""
    arguments = {"args": list(args or ()), "kwargs": dict(kwargs or {})}
    try:
        return json.loads(kombu_json.dumps(arguments))
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(
            f"task arguments must be JSON, as with Celery's json serializer: {exc}"
        ) from None


def decode_arguments(payload: dict) -> tuple[list, dict]:
    """The arguments back, with the types Celery's JSON serializer restores."""
    restored = kombu_json.loads(json.dumps(payload))
    return list(restored.get("args") or []), dict(restored.get("kwargs") or {})


class ClaimCheckTask(Task):
    """A Celery task whose arguments travel through Postgres, and whose runs go through
    tasklane's executor. Called directly (``resize(42)``) it is the plain function."""

    #: The lane the task runs in: "celery" (workers) or "lambda".
    lane = "celery"
    #: Runs before it ends ``failed`` (None: until the queue's maxReceiveCount).
    max_attempts: int | None = None
    Request = "tasklane.worker:ClaimCheckRequest"
    typing = False  # the worker calls it with the claim-check id, not the body's signature

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly:
            return self.run(*args, **kwargs)
        from tasklane.worker import execute  # in a worker: the message carries a task id

        (task_id,) = args
        request = self.request
        return execute(
            registry.get(self.name),
            task_id,
            request.get(DELIVERY_KEY),
            eta=request.get("eta"),
            expires=request.get("expires"),
        )

    def apply_async(
        self,
        args: Any = None,
        kwargs: Any = None,
        task_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        **options: Any,
    ) -> Any:
        """Store the arguments and send the claim check; returns Celery's ``AsyncResult``.

        ``connection=`` (a SQLAlchemy Connection or Session: sent after its commit),
        ``idempotency_key=`` and ``owner=`` (:func:`tasklane.submit`) are tasklane's own
        options. Celery's routing options are not
        needed: the task's lane names its queue."""
        from tasklane.client import submit

        if self.app.conf.task_always_eager:
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        handle = submit(
            self.name,
            encode_arguments(args, kwargs),
            idempotency_key=options.get("idempotency_key"),
            connection=options.get("connection"),
            countdown=countdown,
            eta=eta,
            owner=options.get("owner"),
        )
        return self.AsyncResult(str(handle.id))

    def retry(self, *args: Any, exc: BaseException | None = None, **options: Any) -> Any:
        """Fail this run so that SQS delivers the task again (after its back-off)."""
        raise exc or RetryRequested(f"task {self.name} asked to be retried")


class RetryRequested(Exception):
    """A Celery task called ``self.retry()``: its run is recorded as failed, and retried."""


def _payload_runner(task: ClaimCheckTask) -> Any:
    def run(payload: dict) -> Any:
        args, kwargs = decode_arguments(payload)
        return task.run(*args, **kwargs)

    run.__name__ = run.__qualname__ = task.name.replace(".", "_")
    run.__module__ = getattr(task.run, "__module__", __name__)
    run.__doc__ = task.__doc__
    return run


def hard_time_limit(spec: registry.Task) -> int:
    """When Celery kills a run's process: the run stops itself at ``spec.time_limit``
    (SIGALRM), so this only ends one stuck where a signal cannot reach it (C code): a tenth of
    the limit later, 2 to 30 seconds."""
    return spec.time_limit + min(30, max(2, spec.time_limit // 10))


def register_tasks(app: Celery) -> None:
    """Every claim-check task of ``app`` becomes a tasklane task of the same name, and kombu's
    back-off policy covers it."""
    for name, task in app.tasks.items():
        if not isinstance(task, ClaimCheckTask) or name.startswith("celery."):
            continue
        if registry.registered(name) is None:
            limit = task.soft_time_limit or task.time_limit or registry.DEFAULT_TIME_LIMIT_S
            registry.task(
                name,
                lane=task.lane,
                max_attempts=task.max_attempts,
                time_limit=min(int(limit), registry.MAX_TIME_LIMIT_S),
            )(_payload_runner(task))
        if task.time_limit is None:
            task.time_limit = hard_time_limit(registry.registered(name))
    names = [
        n
        for n, t in app.tasks.items()
        if isinstance(t, ClaimCheckTask) and not n.startswith("celery.")
    ]
    for queue in app.conf.broker_transport_options.get("predefined_queues", {}).values():
        queue["backoff_tasks"] = sorted(set(queue.get("backoff_tasks", [])) | set(names))


def _region() -> str:
    import boto3

    return boto3.session.Session().region_name or "us-east-1"


def _queues() -> dict[str, dict]:
    """Predefined queues (no ListQueues/CreateQueue): the celery lane's, and the lambda
    lane's so a worker can drain it if told ``-Q``; each with tasklane's retry back-off."""
    config = settings()
    backoff = {n: retry_delay_seconds(n) for n in range(1, BACKOFF_STEPS + 1)}
    return {
        queue_name(url): {"url": url, "backoff_policy": backoff, "backoff_tasks": []}
        for url in filter(None, (config.celery_queue_url, config.lambda_queue_url))
    }


def configure(app: Celery) -> Celery:
    """What a Celery app needs to be a tasklane worker or producer on SQS (see
    :mod:`tasklane.celery_settings`): the lanes' queues, acks late, JSON only, the task table
    as result backend, poison to the DLQ, and the claim-check task class."""
    config = settings()
    app.task_cls = f"{__name__}:ClaimCheckTask"
    default_queue = queue_name(config.celery_queue_url) if config.celery_queue_url else "celery"
    app.conf.update(
        broker_url="sqs://",
        broker_transport="tasklane.celery_transport:Transport",
        broker_transport_options={
            "region": _region(),
            "predefined_queues": _queues(),
            **SQS_POLLING,
        },
        task_default_queue=default_queue,
        task_create_missing_queues=False,
        worker_consumer="tasklane.worker:DeadLetteringConsumer",
        result_backend="tasklane.results.TaskTableBackend",
        **SQS_WORKER_SETTINGS,
    )
    app.on_after_finalize.connect(lambda sender, **_: register_tasks(sender), weak=False)
    return app


def claim_check(app: Celery) -> Celery:
    """Make an existing Celery app's tasks claim-checked tasklane tasks (see the module).

    Call it right after creating the app, before its tasks are defined or used: it sets the
    app's task class and its SQS configuration (:func:`configure`), so ``celery -A proj
    worker`` is a tasklane worker and ``.delay()`` a claim-checked submission.
    """
    configure(app)
    _apps.append(app)
    return app


def finalize_apps() -> None:
    """Finalize the claim-checked apps, so their tasks are registered (called once the task
    modules are imported: a Lambda consumer runs them without a worker ever starting)."""
    for app in _apps:
        app.finalize(auto=True)
        register_tasks(app)
