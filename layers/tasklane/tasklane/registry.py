"""The task registry: ``@task`` records a function, its name and its lane.

A task is a plain function of one JSON payload returning a JSON result. It knows nothing of
Lambda, Celery or SQS, which is what lets the same function run in either lane. ``@task``
returns a :class:`Task`: calling it still calls the function (unit tests keep working), and
``.delay(payload)`` / ``.apply_async(payload, ...)`` submit it, as with Celery.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tasklane.errors import ConfigurationError, UnknownTask
from tasklane.keys import KeyFunction
from tasklane.lanes import Lane, checked_priority
from tasklane.limits import (
    Concurrency,
    Ordering,
    RateLimit,
    declared_concurrency,
    declared_ordering,
    declared_rate,
)
from tasklane.periodic import Schedule
from tasklane.submitters import submitter
from tasklane.unique import Uniqueness, declared
from tasklane.workflows import UNBOUND, Signature

TaskFunction = Callable[[Any], Any]


#: A run's time limit unless the task sets its own.
DEFAULT_TIME_LIMIT_S = 3600
#: The longest limit a task may set. SQS hides a received message for at most 12 hours in all;
#: a run must end, with its outcome recorded, before its message could be delivered again.
MAX_TIME_LIMIT_S = 11 * 3600 + 1800


@dataclass(frozen=True)
class Task:
    """A registered task: its function and how it runs."""

    name: str
    lane: Lane
    fn: TaskFunction
    #: Attempts before the task ends ``failed`` by itself; None leaves it to the queue's DLQ.
    max_attempts: int | None = None
    #: Seconds a run may take before it is stopped and recorded as a failed attempt.
    time_limit: int = DEFAULT_TIME_LIMIT_S
    #: The function takes ``(payload, db)``: a connection in the transaction that records its
    #: outcome, so its writes there commit with its success, or not at all.
    transactional: bool = False
    #: When the task runs by itself (:mod:`tasklane.periodic`).
    schedule: Schedule | None = None
    #: At most one live task per key (:mod:`tasklane.unique`).
    unique: Uniqueness | None = None
    #: At most so many running at once, in all or per key (:mod:`tasklane.limits`).
    concurrency: Concurrency | None = None
    #: At most so many starts a second, minute or hour, in all or per key.
    rate_limit: RateLimit | None = None
    #: One at a time per key, in submission order.
    ordering: Ordering | None = None
    #: Its submissions' priority unless a call gives one: 0 to 9 (:mod:`tasklane.lanes`).
    priority: int = 0

    @property
    def limited(self) -> bool:
        """Whether its claims go through its limits (:meth:`TaskStore.claim_limited`)."""
        return any(x is not None for x in (self.concurrency, self.rate_limit, self.ordering))

    def __post_init__(self) -> None:
        for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
            if hasattr(self.fn, attribute):
                object.__setattr__(self, attribute, getattr(self.fn, attribute))
        object.__setattr__(self, "__wrapped__", self.fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function here and now, as a plain call (nothing is stored or sent)."""
        return self.fn(*args, **kwargs)

    def delay(self, payload: Any, **options: Any) -> Any:
        """Submit this task with ``payload``; returns a :class:`tasklane.TaskHandle`."""
        return self.apply_async(payload, **options)

    def s(self, payload: Any = UNBOUND) -> Signature:
        """A step of a workflow (:mod:`tasklane.workflows`): with ``payload``, or, left out,
        taking the result of the step before it."""
        return Signature(self.name, payload)

    def apply_async(self, payload: Any = None, **options: Any) -> Any:
        """Submit, with options: ``idempotency_key``, ``connection`` (the caller's open
        transaction: sent after it commits), ``countdown`` or ``eta``, ``unique_key`` and
        ``unique_for`` (this submission's, over the task's own)."""
        return submitter("submit")(self.name, payload, **options)


_tasks: dict[str, Task] = {}
_loaded: set[str] = set()


def task(
    name: str,
    lane: str = "lambda",
    *,
    max_attempts: int | None = None,
    time_limit: int = DEFAULT_TIME_LIMIT_S,
    transactional: bool = False,
    schedule: str | Schedule | None = None,
    unique_key: str | Iterable[str] | KeyFunction | None = None,
    unique_for: float | None = None,
    unique_states: Iterable[str] | None = None,
    concurrency: int | None = None,
    concurrency_key: str | Iterable[str] | KeyFunction | None = None,
    rate_limit: str | float | None = None,
    rate_limit_key: str | Iterable[str] | KeyFunction | None = None,
    ordering_key: str | Iterable[str] | KeyFunction | None = None,
    priority: int = 0,
) -> Callable[[TaskFunction], Task]:
    """Register ``fn`` as the task ``name`` running in ``lane`` ("lambda" or "celery").

    ``time_limit`` (seconds, at most 11.5 hours) stops a run that takes longer: it is recorded
    as a failed attempt and retried like any other. In the lambda lane the function's own
    timeout may stop it sooner. ``transactional``: the function is ``fn(payload, db)`` and its
    writes through ``db`` commit together with its success (exactly once). ``schedule``: an
    EventBridge ``rate(...)``/``cron(...)`` expression, or a :class:`Schedule` with a payload,
    and the task runs by itself on it. ``unique_key``: payload field names (or a function of
    the payload giving a string): a submission whose key matches a live task of this name
    (``unique_states``: pending, scheduled, queued, running), or one created within
    ``unique_for`` seconds, gets that task back instead of a new one (:mod:`tasklane.unique`).
    ``concurrency``: at most so many runs at once across every consumer and worker, per
    ``concurrency_key`` (payload fields, or a function of the payload) if given; a task over
    it waits, spending no attempt (:mod:`tasklane.limits`). ``rate_limit`` (``"100/m"``,
    ``"10/s"``, ``"1000/h"``): at most so many starts, all consumers and workers together, per
    ``rate_limit_key`` if given. ``ordering_key``: tasks of one key run one at a time, in the
    order they were submitted. ``priority``: 0 (the default) to 9; from 5 on, its tasks go by
    the lane's high-priority queue, taken ahead of the lane's backlog (:mod:`tasklane.lanes`).
    """
    if isinstance(schedule, str):
        schedule = Schedule(schedule)
    try:
        lane_ = Lane(lane)
    except ValueError:
        raise ConfigurationError(f"task {name!r}: lane must be 'lambda' or 'celery'") from None
    if max_attempts is not None and max_attempts < 1:
        raise ConfigurationError(f"task {name!r}: max_attempts must be at least 1")
    unique = declared(name, unique_key, unique_for, unique_states)
    limited = declared_concurrency(name, concurrency, concurrency_key)
    rate = declared_rate(name, rate_limit, rate_limit_key)
    ordering = declared_ordering(name, ordering_key)
    try:
        checked_priority(priority)
    except ValueError as exc:
        raise ConfigurationError(f"task {name!r}: {exc}") from None
    if not 1 <= time_limit <= MAX_TIME_LIMIT_S:
        raise ConfigurationError(
            f"task {name!r}: time_limit must be 1 to {MAX_TIME_LIMIT_S} seconds: SQS keeps a "
            "message hidden for at most 12 hours, so a longer run would be delivered again "
            "while it runs; split the work (a chain of tasks, or checkpoints)"
        )

    def register(fn: TaskFunction) -> Task:
        fn = getattr(fn, "fn", fn)  # a Task registered again under another name
        existing = _tasks.get(name)
        if existing is not None and existing.fn is not fn:
            same_place = (existing.fn.__module__, existing.fn.__qualname__) == (
                fn.__module__,
                fn.__qualname__,
            )
            if not same_place:  # a module reloaded is fine; two functions, one name is not
                raise ConfigurationError(f"task {name!r} is registered twice")
        registered = Task(
            name=name,
            lane=lane_,
            fn=fn,
            max_attempts=max_attempts,
            time_limit=time_limit,
            transactional=transactional,
            schedule=schedule,
            unique=unique,
            concurrency=limited,
            rate_limit=rate,
            ordering=ordering,
            priority=priority,
        )
        _tasks[name] = registered
        return registered

    return register


def load(modules: Iterable[str]) -> None:
    """Import the task modules (``TASK_MODULES``) once, like Celery's ``include``; Celery apps
    made claim-checked there (:func:`tasklane.celery.claim_check`) register their tasks."""
    imported = False
    for module in modules:
        if module in _loaded:
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"TASK_MODULES: cannot import {module!r}: {exc}") from exc
        _loaded.add(module)
        imported = True
    if imported and "tasklane.celery" in sys.modules:
        sys.modules["tasklane.celery"].finalize_apps()


def load_configured() -> None:
    """Import the modules named by ``TASK_MODULES`` (default: the shipped examples)."""
    from tasklane.config import settings

    load(settings().task_modules)


def get(name: str) -> Task:
    spec = find(name)
    if spec is None:
        raise UnknownTask(f"no task named {name!r} is registered")
    return spec


def registered(name: str) -> Task | None:
    """The task ``name`` as registered so far (no task module is imported)."""
    return _tasks.get(name)


def find(name: str) -> Task | None:
    """The task ``name``, or None where this process does not know it."""
    load_configured()
    return _tasks.get(name)


def all_tasks() -> list[Task]:
    load_configured()
    return sorted(_tasks.values(), key=lambda spec: spec.name)
