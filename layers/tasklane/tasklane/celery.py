"""Existing Celery apps, claim-checked: one line, and their code, callers and canvas stay as
they are.

::

    app = Celery("proj")
    tasklane.celery.claim_check(app)       # right after creating the app, before its tasks

    @app.task                              # or @shared_task; args and kwargs as before
    def resize(image_id, *, width=800): ...

    resize.delay(42, width=1024)           # stores the arguments in Postgres, sends only an id
    resize.apply_async((42,), {"width": 1024}, countdown=60).get(timeout=30)

Celery builds every message as it always does (every option of ``apply_async``, signatures,
the canvas, retries, Celery's built-in tasks); right before one is published, its arguments and
embed (links, chain, chord) become the task's row in Postgres, ``{"args": [...], "kwargs":
{...}}`` encoded as Celery's JSON serializer encodes them, and the message carries the row's
id (:class:`ClaimCheckAMQP`). Arguments that are not JSON are an error at the call site.

The worker (:mod:`tasklane.worker`) puts the arguments back before Celery makes a request of the
message, and claims the row before the run, so a duplicate delivery never runs a task twice;
Celery then runs the task, its signals and its canvas as ever, and stores its outcome in the
task table (:mod:`tasklane.results`). The lambda lane runs an adopted task too, when its lane
says so and its module is in ``TASK_MODULES``.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
from typing import Any

from celery import Celery, Task, signals
from celery.app.amqp import AMQP
from celery.utils.saferepr import saferepr
from kombu import Producer, Queue
from kombu.utils import json as kombu_json
from kombu.utils.objects import cached_property

from tasklane import logs, registry
from tasklane.celery_settings import SQS_POLLING, SQS_WORKER_SETTINGS
from tasklane.config import settings
from tasklane.errors import AttemptNotDone, InvalidRequest, UnknownTask
from tasklane.lanes import HIGH_PRIORITY, Lane, high_queue_url, priority_of, queue_name, queue_urls
from tasklane.lifecycle import retry_delay_seconds

#: Receive counts kombu's back-off policy covers: every count SQS allows (maxReceiveCount is at
#: most 1,000), so no retry waits a queue's whole visibility timeout.
BACKOFF_STEPS = 1000

#: The key under which the worker hands a run's delivery token to its pool process.
DELIVERY_KEY = "tasklane_delivery"

_apps: list[Celery] = []
#: The longest ``argsrepr`` Celery makes (``AMQP.argsrepr_maxsize``).
ARGSREPR_MAXSIZE = AMQP.argsrepr_maxsize


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


@signals.celeryd_init.connect
@signals.worker_process_init.connect
def _log_as_a_worker(**_: object) -> None:
    """A worker runs tasks: what it does is logged at INFO (a client's process stays quiet)."""
    logs.serve()


#: This worker's heartbeat (:mod:`tasklane.heartbeat`), once it is ready.
_HEARTBEAT: list[Any] = []


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: object) -> None:
    """A worker (tasklane's or an adopted app's) says in Postgres that it is alive, and what
    it runs, for the workers view."""
    import os
    import socket

    from celery.worker import state

    from tasklane.heartbeat import Heartbeat

    def describe() -> dict[str, Any]:
        queues = sender.app.amqp.queues
        return {
            "name": sender.hostname,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": ",".join(sorted(queues.consume_from or queues)),
            "concurrency": getattr(sender.controller, "concurrency", None),
            "active": sorted(str(request.id) for request in list(state.active_requests)),
        }

    _HEARTBEAT.append(Heartbeat(describe).start())


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: object) -> None:
    while _HEARTBEAT:
        _HEARTBEAT.pop().stop()


class ClaimCheckTask(Task):
    """tasklane's own tasks as Celery tasks (:mod:`tasklane.worker`): the message's one argument
    is the task's id, and a run goes through tasklane's executor, which records its outcome.
    Called directly (``resize(42)``) it is the plain function."""

    #: The lane the task runs in: "celery" (workers) or "lambda".
    lane = "celery"
    #: Runs before it ends ``failed`` (None: until the queue's maxReceiveCount).
    max_attempts: int | None = None
    Request = "tasklane.worker:ClaimCheckRequest"
    typing = False  # the worker calls it with the claim-check id, not the body's signature
    ignore_result = True  # the executor records the outcome; Celery's tracer never does
    #: The executor logs a failed run once, with the task's traceback; Celery, one INFO line.
    throws = (AttemptNotDone,)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly:
            return self.run(*args, **kwargs)
        from tasklane.celery_run import execute  # in a worker: the message carries a task id

        (task_id,) = args
        request = self.request
        return execute(
            registry.get(self.name),
            task_id,
            request.get(DELIVERY_KEY),
            eta=request.get("eta"),
            expires=request.get("expires"),
        )


class AdoptedTask(Task):
    """An existing Celery app's task under ``claim_check(app)``: Celery's own task in every
    respect (``apply_async`` and its options, signatures and the canvas, ``self.retry()``,
    signals, eager runs, results), except that its message's arguments travel through Postgres
    (:class:`ClaimCheckAMQP`) and each run first claims the task's row there (the worker's
    :class:`tasklane.worker.ClaimCheckRequest`)."""

    #: The lane the task runs in: "celery" (workers) or "lambda".
    lane = "celery"
    #: Runs before it ends ``failed`` (None: as many as Celery's own retries make).
    max_attempts: int | None = None
    Request = "tasklane.worker:ClaimCheckRequest"

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Celery's ``apply_async``, and tasklane's own options: ``connection=`` (a SQLAlchemy
        Connection or Session: the task exists only if its transaction commits, and its
        message goes out after the commit), ``idempotency_key=`` and ``owner=``
        (:func:`tasklane.submit`)."""
        own = {k: options.pop(k) for k in TASKLANE_OPTIONS if options.get(k) is not None}
        if not own or self.app.conf.task_always_eager:
            return super().apply_async(args, kwargs, **options)
        refused = sorted(set(options) - {"countdown", "eta"})
        if refused:
            raise InvalidRequest(
                f"{', '.join(own)} cannot be combined with Celery's {', '.join(refused)}: "
                "send the task without them, or without tasklane's options"
            )
        from tasklane.client import submit
        from tasklane.outbox import connection_of
        from tasklane.store import default_store

        handle = submit(
            self.name,
            encode_arguments(args, kwargs),
            countdown=options.get("countdown"),
            eta=options.get("eta"),
            **own,
        )
        connection = own.get("connection")
        default_store().mark_celerys(handle.id, connection_of(connection) if connection else None)
        return self.AsyncResult(str(handle.id))


#: tasklane's own options of ``apply_async`` (:meth:`AdoptedTask.apply_async`).
TASKLANE_OPTIONS = ("connection", "idempotency_key", "owner")
#: A claim-checked message's embed: Celery's callbacks, errbacks, chain and chord are stored.
NO_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
#: The request header a restored message carries: the row its run claims.
ROW_KEY = "tasklane_row"
#: The header of a restored message whose row was claimed at receipt: the claim's token.
CLAIM_KEY = "tasklane_claim"
#: What a worker adds to a run's request; never sent on with a message.
RUN_KEYS = frozenset({ROW_KEY, CLAIM_KEY, DELIVERY_KEY})


def stored_message(args: Any, kwargs: Any, embed: Any) -> dict:
    """What a claim-checked message keeps in Postgres: its arguments as the task's payload,
    ``{"args": [...], "kwargs": {...}}``, and Celery's embed (links, chain, chord) if any."""
    payload = encode_arguments(args, kwargs)
    embed = {k: v for k, v in dict(embed or {}).items() if v}
    if embed:
        payload["embed"] = json.loads(kombu_json.dumps(embed))
    return payload


def restored_message(payload: dict) -> tuple[list, dict, dict]:
    """A claim-checked message's body back: ``(args, kwargs, embed)``."""
    args, kwargs = decode_arguments(payload)
    embed = NO_EMBED | kombu_json.loads(json.dumps(payload.get("embed") or {}))
    return args, kwargs, embed


class _ClaimCheckingProducer:
    """A kombu producer that claim-checks the task messages it publishes: the body's arguments
    and embed go to the task's row in Postgres, the message carries the row's id.

    Celery's ``send_task_message`` publishes through it, so Celery has built the message whole
    (every option of ``apply_async`` in its headers) and its ``before_task_publish`` and
    ``after_task_publish`` receivers see the real arguments."""

    def __init__(self, producer: Any, app: Celery) -> None:
        self._producer, self._app = producer, app

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)

    def publish(self, body: Any, **kwargs: Any) -> Any:
        # a worker's own request keys never travel on (a retry copies its request's headers)
        headers = {k: v for k, v in (kwargs.get("headers") or {}).items() if k not in RUN_KEYS}
        kwargs["headers"] = headers
        task = self._app.tasks.get(headers.get("task"))
        if isinstance(task, AdoptedTask) and isinstance(body, tuple | list) and len(body) == 3:
            row = claim_check_message(task, headers, *body, priority=kwargs.get("priority"))
            kwargs["headers"] = _claim_check_headers(headers, body[0], str(row))
            body = ([str(row)], {}, NO_EMBED)
        return self._producer.publish(body, **kwargs)


def _claim_check_headers(headers: dict, args: Any, row: str) -> dict:
    """The headers of a claim-checked message: the arguments' reprs name the row, unless the
    caller gave its own (``argsrepr=``): no payload in the queue or the worker's logs."""
    headers = dict(headers)
    if headers.get("argsrepr") == saferepr(args or (), ARGSREPR_MAXSIZE):
        headers["argsrepr"], headers["kwargsrepr"] = repr([row]), "{}"
    return headers


def claim_check_message(
    task: AdoptedTask, headers: dict, args: Any, kwargs: Any, embed: Any, priority: Any = None
):
    """Store a message's arguments and embed as its task's row (``queued``, its priority
    recorded); returns the row id. A message sent again under the same id (``self.retry()``,
    ``Task.replace``) replaces the row's payload and makes it claimable again, unless the task
    has already succeeded."""
    from tasklane.results import row_id
    from tasklane.store import default_store

    row = row_id(headers["id"])
    default_store().put_celery_message(
        row,
        task.name,
        lane_of(task),
        stored_message(args, kwargs, embed),
        task.max_attempts,
        priority if isinstance(priority, int) else None,
    )
    return row


def lane_of(task: Task) -> str:
    """The lane an adopted task runs in: the app's ``tasklane_lanes`` setting (task name, or
    an ``fnmatch`` pattern, to ``"lambda"`` or ``"celery"``), else the task's ``lane``."""
    for pattern, lane in (task.app.conf.get("tasklane_lanes") or {}).items():
        if fnmatch.fnmatchcase(task.name, pattern):
            return Lane(lane).value
    return Lane(task.lane).value


def _route_by_lane(app: Celery) -> Any:
    """A Celery router sending the lambda lane's tasks to its queue, and a task of priority 5
    to 9 (``apply_async(priority=)`` or the task's ``priority``) to its lane's high-priority
    queue (after the app's own ``task_routes``, which still decide first)."""

    def route(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_: Any):
        task = task if task is not None else app.tasks.get(name)
        if not isinstance(task, AdoptedTask):
            return None
        lane, config = Lane(lane_of(task)), settings()
        url = None
        if priority_of((options or {}).get("priority")) >= HIGH_PRIORITY:
            url = high_queue_url(lane, config)
        if url is None and lane is Lane.LAMBDA:
            url = config.lambda_queue_url
        if url:
            return {"queue": Queue(queue_name(url), routing_key=queue_name(url))}
        return None

    return route


class ClaimCheckAMQP(AMQP):
    """Celery's AMQP layer, publishing through :class:`_ClaimCheckingProducer`, and routing
    the lambda lane's tasks to its queue."""

    def flush_routes(self) -> None:
        super().flush_routes()
        self._rtable = [*self._rtable, _route_by_lane(self.app)]

    @cached_property
    def send_task_message(self) -> Any:
        send = self._create_task_sender()

        def send_claim_checked(producer: Any, name: str, message: Any, **kwargs: Any) -> Any:
            if name not in self.app.tasks:
                raise UnknownTask(
                    f"no task named {name!r} in this app: declare it, even as a stub "
                    f"(@app.task(name={name!r})), so its message can be claim-checked"
                )
            refuse_unknown_options(kwargs)
            refuse_canvas_in_the_lambda_lane(self.app.tasks[name], message.body)
            return send(_ClaimCheckingProducer(producer, self.app), name, message, **kwargs)

        return send_claim_checked


def _parameters(*functions: Any) -> frozenset[str]:
    return frozenset(
        name
        for function in functions
        for name, p in inspect.signature(function).parameters.items()
        if p.kind is p.POSITIONAL_OR_KEYWORD or p.kind is p.KEYWORD_ONLY
    ) - {"self", "name", "body", "args", "kwargs"}


#: Every option a task message may be sent with: the parameters of Celery's ``apply_async``,
#: ``send_task`` and message building and of kombu's ``publish``, a task's execution options,
#: what a retry copies from its request, and AMQP's message properties. Anything else (a
#: misspelt ``countdwon=``) would travel silently as a message property: it is refused, unless
#: it is a stamp the message declares (``stamped_headers``).
MESSAGE_OPTIONS = _parameters(
    Task.apply_async, Celery.send_task, AMQP.as_task_v2, Producer.publish
) | {
    # the worker's publishing of a task message (AMQP._create_task_sender)
    "queue", "event_dispatcher", "exchange_type",
    # a task's execution options, and what a retry copies from its request
    "origin", "redelivered", "binding_key",
    # AMQP's message properties
    "correlation_id", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id",
    *TASKLANE_OPTIONS,
}  # fmt: skip


def refuse_canvas_in_the_lambda_lane(task: Task, body: Any) -> None:
    """The lambda lane runs an adopted task's function alone: a message whose task it runs
    and that carries Celery's links, errbacks, chain or chord is refused at the call site, not
    run there with its continuation dropped."""
    embed = body[2] if isinstance(body, tuple | list) and len(body) == 3 else None
    carried = sorted(k for k in NO_EMBED if isinstance(embed, dict) and embed.get(k))
    if carried and isinstance(task, AdoptedTask) and lane_of(task) == Lane.LAMBDA.value:
        raise InvalidRequest(
            f"{task.name} runs in the lambda lane, which runs a task alone: its "
            f"{', '.join(carried)} need the celery lane (tasklane_lanes, or the task's lane)"
        )


def refuse_unknown_options(options: dict) -> None:
    """A clear error at the call site for an option nothing reads (see MESSAGE_OPTIONS)."""
    unknown = set(options) - MESSAGE_OPTIONS - set(options.get("stamped_headers") or ())
    if unknown:
        raise InvalidRequest(
            f"unknown option(s) of apply_async: {', '.join(sorted(unknown))} "
            "(a stamp is declared in stamped_headers)"
        )


def _payload_runner(task: Task) -> Any:
    def run(payload: dict) -> Any:
        args, kwargs = decode_arguments(payload)
        return task.run(*args, **kwargs)

    run.__name__ = run.__qualname__ = task.name.replace(".", "_")
    run.__module__ = getattr(task.run, "__module__", __name__)
    run.__doc__ = task.__doc__
    setattr(run, ADOPTED, True)
    return run


#: Marks the registry's entries for adopted Celery tasks (their app's worker runs them).
ADOPTED = "tasklane_adopted"


def hard_time_limit(spec: registry.Task) -> int:
    """When Celery kills a run's process: the run stops itself at ``spec.time_limit``
    (SIGALRM), so this only ends one stuck where a signal cannot reach it (C code): a tenth of
    the limit later, 2 to 30 seconds."""
    return spec.time_limit + min(30, max(2, spec.time_limit // 10))


def register_tasks(app: Celery) -> None:
    """Every adopted task of ``app`` (Celery's built-in ones too) becomes a tasklane task of
    the same name, so a worker can claim it and the lambda lane run it, and kombu's back-off
    policy covers it. tasklane's own tasks get their hard time limit."""
    for name, task in app.tasks.items():
        spec = registry.registered(name)
        if isinstance(task, ClaimCheckTask) and spec is not None and task.time_limit is None:
            task.time_limit = hard_time_limit(spec)
    names = [n for n, t in app.tasks.items() if isinstance(t, AdoptedTask)]
    for name in names:
        task = app.tasks[name]
        if registry.registered(name) is None:
            limit = task.soft_time_limit or task.time_limit or registry.DEFAULT_TIME_LIMIT_S
            registry.task(
                name,
                lane=lane_of(task),
                max_attempts=task.max_attempts,
                time_limit=min(int(limit), registry.MAX_TIME_LIMIT_S),
                # global, across every worker and consumer (ADOPTED_DEFAULTS turns Celery's
                # own, per worker, off)
                rate_limit=task.rate_limit or None,
                # tasklane's own options, given to Celery's decorator (@app.task(concurrency=2,
                # priority=7)), which keeps them as the task's attributes
                concurrency=getattr(task, "concurrency", None),
                priority=priority_of(task.priority),
            )(_payload_runner(task))
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
        for url in filter(
            None,
            (
                config.celery_high_queue_url,
                config.celery_queue_url,
                config.lambda_high_queue_url,
                config.lambda_queue_url,
            ),
        )
    }


def _celery_lane_queues() -> list[Queue]:
    """The queues a worker consumes without ``-Q``: the celery lane's high-priority queue and
    its own (kombu's SQS transport polls them in turn)."""
    urls = queue_urls(Lane.CELERY, settings())
    return [Queue(queue_name(u), routing_key=queue_name(u)) for u in urls]


def _sqs() -> dict:
    """The broker settings every tasklane app has: SQS with the lanes' predefined queues."""
    config = settings()
    default_queue = queue_name(config.celery_queue_url) if config.celery_queue_url else "celery"
    return {
        "broker_url": "sqs://",
        "broker_transport": "tasklane.celery_transport:Transport",
        "broker_transport_options": {
            "region": _region(),
            "predefined_queues": _queues(),
            **SQS_POLLING,
        },
        "task_default_queue": default_queue,
        "task_create_missing_queues": False,
        "worker_consumer": "tasklane.worker:DeadLetteringConsumer",
        "result_backend": "tasklane.results.TaskTableBackend",
    }


def configure(app: Celery) -> Celery:
    """tasklane's own worker app (:mod:`tasklane.worker`): the lanes' queues, acks late, JSON
    only, the task table as result backend, poison to the DLQ, and the claim-check task
    class (see :mod:`tasklane.celery_settings`)."""
    app.task_cls = f"{__name__}:ClaimCheckTask"
    app.conf.update(
        {
            **_sqs(),
            **SQS_WORKER_SETTINGS,
            "result_backend": "tasklane.results.TaskTableReader",
            "task_queues": _celery_lane_queues(),
        }
    )
    app.on_after_finalize.connect(lambda sender, **_: register_tasks(sender), weak=False)
    return app


def claim_check(app: Celery) -> Celery:
    """Claim-check an existing Celery app (see the module).

    Call it right after creating the app, before its tasks are defined or used. It sets what
    tasklane needs: the app's task class (:class:`AdoptedTask`), its AMQP layer
    (:class:`ClaimCheckAMQP`), SQS with the lanes' queues, the task table as result backend,
    and a worker consumer that restores arguments and sends poison to the DLQ. The worker
    settings of :mod:`tasklane.celery_settings` (acks late, JSON only, ...) become the app's
    defaults: its own configuration still decides (``task_ignore_result`` stays Celery's).
    """
    app.task_cls = f"{__name__}:AdoptedTask"
    app.amqp_cls = f"{__name__}:ClaimCheckAMQP"
    for made in ("amqp", "Task"):  # made again, of those classes, when next used
        app.__dict__.pop(made, None)
    app.conf.update(**_sqs())
    app.add_defaults(
        {k: v for k, v in SQS_WORKER_SETTINGS.items() if k not in ADOPTED_KEEP_CELERYS}
        | ADOPTED_DEFAULTS
    )
    app.on_after_finalize.connect(lambda sender, **_: register_tasks(sender), weak=False)
    _apps.append(app)
    return app


#: Worker settings an adopted app keeps as Celery's defaults: results are stored as Celery
#: stores them (the app asks, as ever, with ``ignore_result``).
ADOPTED_KEEP_CELERYS = frozenset({"task_ignore_result"})
#: And what an adopted app's workers do otherwise: a task's ``rate_limit`` is tasklane's, for
#: all workers and consumers together (:mod:`tasklane.limits`), not each worker's, which would
#: hold deliveries in the worker's memory on top of it.
ADOPTED_DEFAULTS = {"worker_disable_rate_limits": True}


def finalize_apps() -> None:
    """Finalize the claim-checked apps, so their tasks are registered (called once the task
    modules are imported: a Lambda consumer runs them without a worker ever starting)."""
    for app in _apps:
        app.finalize(auto=True)
        register_tasks(app)
