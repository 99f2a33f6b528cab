"""What the store takes and gives back: plain frozen values, never ORM objects, so a record
read in one transaction is safe to hand to any other part of the code.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
)

from tasklane.lifecycle import Status
from tasklane.store.sql import PUBLIC
from tasklane.store.tables import tasks


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A task as clients see it (the payload stays in the database)."""

    id: uuid.UUID
    task: str
    lane: str
    status: Status
    attempts: int
    result: Any = None
    error: dict | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: When the task is due, if it was asked to run later.
    run_at: datetime | None = None
    #: The workflow it is a step of, if any.
    workflow_id: uuid.UUID | None = None
    #: When its first attempt started, and when it reached a final status.
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: The payload's size as stored in Postgres (compressed); None once pruned.
    payload_bytes: int | None = None
    #: Who submitted it ('' : no one in particular).
    owner: str = ""
    #: When a task queued again after a failed attempt is delivered again.
    retry_at: datetime | None = None
    #: Its unique key (:mod:`tasklane.unique`), if it has one.
    unique_key: str | None = None
    #: The key its concurrency limit counts by, if any (:mod:`tasklane.limits`).
    concurrency_key: str | None = None
    #: Why a task that could be delivered waits (``concurrency 5/5 for account=42``).
    waiting_on: str | None = None
    #: 0 to 9, the higher the sooner (:mod:`tasklane.lanes`); None: 0.
    priority: int | None = None
    #: Its attempts, oldest first (see ``tasks.history``); read with a task alone (else None).
    history: list[dict] | None = None

    @classmethod
    def from_row(cls, row: Any) -> TaskRecord:
        m = row._mapping
        extra = {"history": m["history"]} if "history" in m else {}
        return cls(**{c.name: m[c.name] for c in PUBLIC} | {"status": Status(m["status"])} | extra)


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which tasks to find (each part optional): status, task name (or a prefix of names,
    ``images.*``), lane, creation window."""

    status: Status | None = None
    task: str | None = None
    lane: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    #: Only this caller's tasks (None: everyone's, for operators).
    owner: str | None = None

    def conditions(self) -> list[Any]:
        found = []
        if self.owner is not None:
            found.append(tasks.c.owner == self.owner)
        if self.status is not None:
            found.append(tasks.c.status == self.status.value)
        if self.task is not None and self.task.endswith("*"):  # a prefix: "images.*"
            found.append(tasks.c.task.startswith(self.task[:-1], autoescape=True))
        elif self.task is not None:
            found.append(tasks.c.task == self.task)
        if self.lane is not None:
            found.append(tasks.c.lane == self.lane)
        if self.created_after is not None:
            found.append(tasks.c.created_at > self.created_after)
        if self.created_before is not None:
            found.append(tasks.c.created_at < self.created_before)
        return found


@dataclass(frozen=True, slots=True)
class NewTask:
    id: uuid.UUID
    task: str
    lane: str
    payload_json: str
    max_attempts: int | None = None
    #: Not to run before then (None: now).
    run_at: datetime | None = None
    #: At most one task of this name and key in ``unique_states``, or created within
    #: ``unique_for`` seconds (:mod:`tasklane.unique`); None: any number.
    unique_key: str | None = None
    unique_for: float | None = None
    unique_states: tuple[str, ...] = ()
    #: The keys its concurrency and rate limits count by (:mod:`tasklane.limits`).
    concurrency_key: str | None = None
    rate_key: str | None = None
    #: The key it runs in order with, one at a time (:mod:`tasklane.limits`).
    ordering_key: str | None = None
    #: 0 to 9, the higher the sooner (:mod:`tasklane.lanes`).
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery asking to run task ``task`` on row ``id``.

    ``token`` names the delivery (one receive of one message): ``<message id>#<random>``. The
    claim records it, every later write of the attempt is fenced on it, and a write replayed
    after a lost reply recognises its own committed effect by it.
    """

    id: uuid.UUID
    task: str
    token: str


@dataclass(frozen=True, slots=True)
class Claimed:
    """This delivery holds the task: its attempt ``attempt`` (runs so far, this one included)
    until its lease runs out. The payload is the stored JSON text, loaded when it runs."""

    id: uuid.UUID
    attempt: int
    payload_json: str
    #: Who submitted it: the tasks it submits are that owner's too.
    owner: str = ""
    #: Whether its success may release workflow steps (its outcome is then written in a
    #: transaction with the release; otherwise alone, in autocommit).
    releases: bool = True


@dataclass(frozen=True, slots=True)
class NotClaimed:
    """Why a delivery could not claim: the task's status (None: no such row), its name, when
    it is due (a message that arrived before ``run_at``), or the limit it waits on."""

    id: uuid.UUID
    status: Status | None
    task: str | None
    run_at: datetime | None = None
    expires_at: datetime | None = None
    #: Why it was not claimed though it could run: a limit (``concurrency 5/5 for ...``).
    waiting_on: str | None = None
    #: How long until its turn, under a rate limit (seconds).
    wait_s: float | None = None
    #: The task ahead of it in its ordering key's line.
    behind: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt: its error, and whether it may be retried at all (``final``: never, as
    for a payload that cannot be loaded). Otherwise the row's ``max_attempts`` decides."""

    error: dict
    final: bool = False


class Settled(NamedTuple):
    """What recording an outcome did: the task's status (None: the claim was lost), the next
    task's claim when one was asked, and the workflow steps it released (now ``pending``)."""

    status: Status | None
    then: Claimed | NotClaimed | None = None
    released: Sequence[TaskRecord] = ()


class KeyUse(NamedTuple):
    """An idempotency key's use (:meth:`TaskStore.keyed`): the transaction to create the rows
    in, whether this request is the key's first, and the first request's hash and ids."""

    connection: Connection
    first: bool
    request_hash: str
    ids: list[uuid.UUID]
