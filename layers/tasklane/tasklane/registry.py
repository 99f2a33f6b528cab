"""The task registry: ``@task`` records a function, its name and its lane.

A task is a plain function of one JSON payload returning a JSON result. It knows nothing of
Lambda, Celery or SQS, which is what lets the same function run in either lane.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tasklane.errors import ConfigurationError, UnknownTask
from tasklane.lanes import Lane

TaskFunction = Callable[[Any], Any]


#: A run's time limit unless the task sets its own.
DEFAULT_TIME_LIMIT_S = 3600
#: The longest limit a task may set. SQS hides a received message for at most 12 hours in all;
#: a run must end, with its outcome recorded, before its message could be delivered again.
MAX_TIME_LIMIT_S = 11 * 3600 + 1800


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    lane: Lane
    fn: TaskFunction
    #: Attempts before the task ends ``failed`` by itself; None leaves it to the queue's DLQ.
    max_attempts: int | None = None
    #: Seconds a run may take before it is stopped and recorded as a failed attempt.
    time_limit: int = DEFAULT_TIME_LIMIT_S


_tasks: dict[str, TaskSpec] = {}
_loaded: set[str] = set()


def task(
    name: str,
    lane: str = "lambda",
    *,
    max_attempts: int | None = None,
    time_limit: int = DEFAULT_TIME_LIMIT_S,
) -> Callable[[TaskFunction], TaskFunction]:
    """Register ``fn`` as the task ``name`` running in ``lane`` ("lambda" or "celery").

    ``time_limit`` (seconds, at most 11.5 hours) stops a run that takes longer: it is recorded
    as a failed attempt and retried like any other. In the lambda lane the function's own
    timeout may stop it sooner.
    """
    try:
        lane_ = Lane(lane)
    except ValueError:
        raise ConfigurationError(f"task {name!r}: lane must be 'lambda' or 'celery'") from None
    if max_attempts is not None and max_attempts < 1:
        raise ConfigurationError(f"task {name!r}: max_attempts must be at least 1")
    if not 1 <= time_limit <= MAX_TIME_LIMIT_S:
        raise ConfigurationError(
            f"task {name!r}: time_limit must be 1 to {MAX_TIME_LIMIT_S} seconds: SQS keeps a "
            "message hidden for at most 12 hours, so a longer run would be delivered again "
            "while it runs; split the work (a chain of tasks, or checkpoints)"
        )

    def register(fn: TaskFunction) -> TaskFunction:
        existing = _tasks.get(name)
        if existing is not None and existing.fn is not fn:
            same_place = (existing.fn.__module__, existing.fn.__qualname__) == (
                fn.__module__,
                fn.__qualname__,
            )
            if not same_place:  # a module reloaded is fine; two functions, one name is not
                raise ConfigurationError(f"task {name!r} is registered twice")
        _tasks[name] = TaskSpec(
            name=name, lane=lane_, fn=fn, max_attempts=max_attempts, time_limit=time_limit
        )
        return fn

    return register


def load(modules: Iterable[str]) -> None:
    """Import the task modules (``TASK_MODULES``) once, like Celery's ``include``."""
    for module in modules:
        if module in _loaded:
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"TASK_MODULES: cannot import {module!r}: {exc}") from exc
        _loaded.add(module)


def load_configured() -> None:
    """Import the modules named by ``TASK_MODULES`` (default: the shipped examples)."""
    from tasklane.config import settings

    load(settings().task_modules)


def get(name: str) -> TaskSpec:
    spec = find(name)
    if spec is None:
        raise UnknownTask(f"no task named {name!r} is registered")
    return spec


def find(name: str) -> TaskSpec | None:
    """The task ``name``, or None where this process does not know it."""
    load_configured()
    return _tasks.get(name)


def all_tasks() -> list[TaskSpec]:
    load_configured()
    return sorted(_tasks.values(), key=lambda spec: spec.name)
