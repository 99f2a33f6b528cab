"""Flow control at the claim: concurrency and rate limits (at most N runs of a task at once,
or so many starts a second, minute or hour, in all or per key) and ordered keys (one at a
time per key, in submission order), across every consumer and worker.

``@task(concurrency=5)`` allows five runs of the task at once in both lanes together, however
many Lambda consumers and Celery workers there are; ``concurrency_key="account"`` (payload
fields, or a function of the payload: :mod:`tasklane.keys`) makes that five per account. The
key is made when a task is submitted and stored with it; the limit is the consumer's
declaration, read when it claims.

Postgres enforces it at the claim: the claim takes a transaction lock on the task's name and
key, then claims only while fewer than N of its namesakes with that key are running with a
live lease (a run whose process died stops counting when its lease runs out). A delivery over
the limit is not a run: no attempt is spent, the task stays ``queued`` with why it waits
(``concurrency 5/5 for account=42``), and it is offered again a moment later as a fresh
message (:meth:`tasklane.executor.Executor.claim`).

``@task(rate_limit="100/m")`` (Celery's notation: ``/s``, ``/m``, ``/h``, or a number a
second) spaces the task's starts, in all or per ``rate_limit_key``, again across every
consumer and worker (Celery's own is per worker). Each key has a bucket row holding when its
next start is free; a claim takes that moment and moves it on by one interval. A delivery
whose moment is still to come has it written on its task (``rate_slot``) and is offered again
then; coming back, it runs without taking another. So waiting deliveries queue in order, each
for its own moment, rather than all retrying at once.

``@task(ordering_key="account")`` runs the tasks of one key one at a time, in the order they
were submitted (its owner's: a caller's keys are its own); different keys side by side. A
claim, under the lock of the name and key, finds no older live task of the key and none of
it running; a delivery that does waits (``in order after <id>``) and is offered again later,
but its turn normally comes sooner: when a task of the key ends, the next in line is sent a
fresh message at once. So a key runs a task at a time at about one message round trip
between them. Pure declarations here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tasklane.errors import ConfigurationError
from tasklane.keys import KeyFunction, KeySource, declared_source, key_of

#: How long a delivery over a limit waits before its task is offered again, at most (seconds;
#: from 1 up to this, at random, so the deferred do not all come back at once).
DEFER_MAX_S = 3


@dataclass(frozen=True, slots=True)
class Concurrency:
    """At most ``limit`` runs at once, of the task or (with ``key``) of each of its keys."""

    limit: int
    key: KeySource | None = None

    def key_of(self, payload: Any) -> str | None:
        """The key of ``payload`` (None: the limit is the task's, whole)."""
        return None if self.key is None else key_of(self.key, payload, "concurrency_key")

    def waiting(self, running: int, key: str | None) -> str:
        """Why a task over the limit waits, as the console shows it."""
        return f"concurrency {running}/{self.limit}" + (f" for {key}" if key else "")


def declared_concurrency(
    task: str, limit: int | None, key: str | Iterable[str] | KeyFunction | None
) -> Concurrency | None:
    """A task's ``concurrency`` and ``concurrency_key`` as declared, checked now."""
    if limit is None:
        if key is not None:
            raise ConfigurationError(f"task {task!r}: concurrency_key needs a concurrency")
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(f"task {task!r}: concurrency must be a whole number, 1 or more")
    return Concurrency(
        limit, None if key is None else declared_source(task, "concurrency_key", key)
    )


#: Celery's rate notation: a number of starts per second, minute or hour.
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")
_PER = {"s": 1, "m": 60, "h": 3600}
#: The slowest and fastest rates taken: one start a day, and a thousand a second.
MIN_PER_S, MAX_PER_S = 1 / 86400, 1000.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``per_s`` starts a second (``text`` as declared), of the task or (with
    ``key``) of each of its keys."""

    per_s: float
    text: str
    key: KeySource | None = None

    @property
    def interval_s(self) -> float:
        """The time between two starts."""
        return 1 / self.per_s

    @property
    def horizon_s(self) -> float:
        """How far ahead turns are given (a minute, or two intervals if longer): a task
        beyond it asks again later instead of holding a turn it may never use."""
        return max(60.0, 2 * self.interval_s)

    def key_of(self, payload: Any) -> str | None:
        return None if self.key is None else key_of(self.key, payload, "rate_limit_key")

    def waiting(self, key: str | None, turn: datetime) -> str:
        """Why a task waits for its turn, as the console shows it."""
        for_key = f" for {key}" if key else ""
        return f"rate {self.text}{for_key}: its turn at {turn:%H:%M:%S} UTC"


def parse_rate(task: str, rate: Any) -> tuple[float, str]:
    """``rate`` (``"100/m"``, ``"10/s"``, ``"1000/h"``, or a number a second, as Celery takes
    it) as starts a second and its text; :class:`ConfigurationError` if it is not one."""
    if isinstance(rate, bool):
        raise ConfigurationError(f"task {task!r}: rate_limit {rate!r} is not a rate")
    if isinstance(rate, int | float):
        per_s, text = float(rate), f"{rate:g}/s"
    else:
        match = _RATE.match(rate) if isinstance(rate, str) else None
        if match is None:
            raise ConfigurationError(
                f"task {task!r}: rate_limit {rate!r} is not a rate such as '100/m', '10/s' or "
                "'1000/h'"
            )
        count, unit = float(match.group(1)), match.group(2) or "s"
        per_s, text = count / _PER[unit], f"{match.group(1)}/{unit}"
    if not MIN_PER_S <= per_s <= MAX_PER_S:
        raise ConfigurationError(
            f"task {task!r}: rate_limit {rate!r} is outside one a day to {MAX_PER_S:g} a second"
        )
    return per_s, text


def declared_rate(
    task: str, rate: Any, key: str | Iterable[str] | KeyFunction | None
) -> RateLimit | None:
    """A task's ``rate_limit`` and ``rate_limit_key`` as declared, checked now."""
    if rate is None:
        if key is not None:
            raise ConfigurationError(f"task {task!r}: rate_limit_key needs a rate_limit")
        return None
    per_s, text = parse_rate(task, rate)
    return RateLimit(
        per_s, text, None if key is None else declared_source(task, "rate_limit_key", key)
    )


#: How long a task behind another of its ordering key waits before it is offered again
#: (seconds, from this up to twice it): a backstop, since the end of the one ahead sends it.
ORDER_BACKSTOP_S = 15


@dataclass(frozen=True, slots=True)
class Ordering:
    """Tasks of one key run one at a time, in submission order."""

    key: KeySource

    def key_of(self, payload: Any) -> str:
        return key_of(self.key, payload, "ordering_key")

    @staticmethod
    def waiting(ahead: Any, key: str | None) -> str:
        """Why a task waits for the one ahead of it, as the console shows it."""
        return f"in order after {ahead}" + (f" ({key})" if key else "")


def declared_ordering(task: str, key: str | Iterable[str] | KeyFunction | None) -> Ordering | None:
    """A task's ``ordering_key`` as declared, checked now."""
    return None if key is None else Ordering(declared_source(task, "ordering_key", key))
