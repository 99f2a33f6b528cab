"""Claims and outcomes: a delivery claims its task for one attempt under a lease, and its
outcome is written only while it still holds the claim (the attempt number and the delivery's
token are in every ``WHERE``). A claim given back keeps a cancel request.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    Integer,
    Interval,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID, distinct_on
from sqlalchemy.dialects.postgresql import insert as pg_insert

from tasklane.lifecycle import CLAIMABLE, IN_FLIGHT, LIVE_STATUSES, Status, retry_delay_seconds
from tasklane.limits import Concurrency, Ordering, RateLimit
from tasklane.store.base import StoreBase
from tasklane.store.records import Claim, Claimed, Failure, NotClaimed, Settled, TaskRecord
from tasklane.store.sql import (
    PUBLIC,
    STOPPED,
    JsonText,
    attempt_entry,
    data_errors_as_invalid,
    history_with,
    lost_attempt,
    unavailable_as_error,
)
from tasklane.store.tables import rate_buckets, tasks


def _due() -> Any:
    """Due, and not expired: a claim takes neither an early task nor an expired one."""
    return and_(
        or_(tasks.c.run_at.is_(None), tasks.c.run_at <= func.now()),
        or_(tasks.c.expires_at.is_(None), tasks.c.expires_at > func.now()),
    )


# The consumer's statements are built once per process, with bound parameters: rebuilding
# them per call (and computing their cache keys) was a third of the consumer's time.
_CLAIM_ID = bindparam("claim_id", type_=UUID(as_uuid=True))
_CLAIM_TASK = bindparam("claim_task", type_=String)
_CLAIM_TOKEN = bindparam("claim_token", type_=Text)
_CLAIM_LEASE = bindparam("claim_lease", type_=Interval)
# (none named as a column: an UPDATE would take a parameter named so as a value to set)
_TASK_ID = bindparam("outcome_id", type_=UUID(as_uuid=True))
_TOKEN = bindparam("outcome_token", type_=Text)
_RESULT = bindparam("outcome_result", type_=JsonText())
_ERROR = bindparam("outcome_error", type_=JSONB)
_FINAL = bindparam("outcome_final", type_=Boolean)
#: What an attempt's history entry says that Postgres does not know: its error, where it ran.
_ENTRY = bindparam("outcome_entry", type_=JSONB)
#: The characters of an error's message a history entry keeps (the task's error keeps it all).
ENTRY_MESSAGE = 200


def ran_on() -> str:
    """Where an attempt runs, as its history shows it: a Lambda function's execution
    environment (its log stream, where its lines are), or a worker's host and process."""
    if stream := os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME"):
        return f"{os.environ.get('AWS_LAMBDA_FUNCTION_NAME', 'lambda')} {stream}"
    return f"{_hostname()}:{os.getpid()}"  # the pid read each time: a pool process forks


@functools.cache
def _hostname() -> str:
    return socket.gethostname()


#: An adopted run's end as its history says it (a run left queued is to be retried: it failed).
_ENDED_AS = {Status.SUCCEEDED: "succeeded", Status.CANCELLED: "cancelled"}


#: The lanes' back-off (:func:`~tasklane.lifecycle.retry_delay_seconds`) by attempt number,
#: as one SQL array: a retry's ``retry_at`` is the row's own attempt's, whoever records it.
_BACK_OFF = literal_column(
    "(ARRAY[" + ", ".join(str(retry_delay_seconds(n)) for n in range(1, 33)) + "])",
    ARRAY(Integer),
)


def _back_off() -> Any:
    """How long until a failed attempt's message is delivered again: the back-off of the
    row's attempt number (the key the executor's and the Celery transport's back-off use)."""
    attempt = func.greatest(1, func.least(tasks.c.attempts, 32))
    return _BACK_OFF[attempt] * literal_column("interval '1 second'")


def held(task_id: uuid.UUID, token: str) -> tuple[Any, ...]:
    """The row of a running task whose claim delivery ``token`` holds: every write of a run
    is fenced on it."""
    return (
        tasks.c.id == task_id,
        tasks.c.claimed_by == token,
        tasks.c.status == Status.RUNNING.value,
    )


def claim_params(claim: Claim, lease_seconds: float) -> dict[str, Any]:
    """The parameters of :func:`claim_statement` for one delivery's claim."""
    return {
        "claim_id": claim.id,
        "claim_task": claim.task,
        "claim_token": claim.token,
        "claim_lease": timedelta(seconds=lease_seconds),
    }


def entry_of(error: dict | None) -> dict[str, Any]:
    """What an attempt's history entry says that Postgres does not know: its error (type and
    the start of its message: a history keeps 50 attempts, each one short), where it ran."""
    if error:
        message = error.get("message")
        error = {"type": error.get("type"), "message": message and message[:ENTRY_MESSAGE]}
    return {"error": error or None, "ran_on": ran_on()}


def settle_params(task_id: uuid.UUID, token: str, outcome: str | Failure) -> dict[str, Any]:
    """The parameters of :func:`settle_statement` for one attempt's outcome."""
    mine = {"outcome_id": task_id, "outcome_token": token}
    if isinstance(outcome, Failure):
        return mine | {
            "outcome_error": outcome.error,
            "outcome_final": outcome.final,
            "outcome_entry": entry_of(outcome.error),
        }
    return mine | {"outcome_result": outcome, "outcome_entry": entry_of(None)}


def ended_history(status: Status, error: dict | None = None) -> Any:
    """A row's history once an adopted Celery run ended as ``status`` (a run left ``queued`` is
    to be retried: it failed), with its ``error``: an entry if the row is still ``running``, or
    ``queued`` again (``self.retry()`` sends its message before Celery records the retry)
    while its last attempt has no entry yet; other rows' history as is."""
    outcome = literal_column(f"'{_ENDED_AS.get(status, 'failed')}'")
    last_entry = tasks.c.history.op("->")(literal_column("-1"))
    recorded = func.coalesce(
        cast(last_entry.op("->>")(literal_column("'attempt'")), Integer), literal_column("0")
    )
    unrecorded = or_(
        tasks.c.status == Status.RUNNING.value,
        and_(tasks.c.status == Status.QUEUED.value, tasks.c.attempts > recorded),
    )
    return case(
        (unrecorded, history_with(attempt_entry(outcome, literal(entry_of(error), JSONB)))),
        else_=tasks.c.history,
    )


def _running_like(row: Any) -> Any:
    """How many of ``row``'s namesakes with its concurrency key run now (a live lease: a run
    whose process died stops counting when its lease runs out), itself aside."""
    sibling = tasks.alias("sibling")
    return (
        select(func.count())
        .where(
            sibling.c.task == row.c.task,
            sibling.c.concurrency_key.is_not_distinct_from(row.c.concurrency_key),
            sibling.c.status == Status.RUNNING.value,
            sibling.c.lease_until > func.now(),
            sibling.c.id != row.c.id,
        )
        .correlate(row)
        .scalar_subquery()
    )


#: The statuses of a task still to run, or running: an ordered key's line.
_LIVE = sorted(s.value for s in LIVE_STATUSES)


def _ahead_of(row: Any) -> Any:
    """The oldest task of ``row``'s ordering key (its owner's) ahead of it: older and live,
    or running (None: it is the line's head)."""
    other = tasks.alias("ahead")
    older = tuple_(other.c.created_at, other.c.ordering_pos, other.c.id) < tuple_(
        row.c.created_at, row.c.ordering_pos, row.c.id
    )
    return (
        select(other.c.id)
        .where(
            other.c.task == row.c.task,
            other.c.ordering_key == row.c.ordering_key,
            other.c.owner == row.c.owner,
            other.c.status.in_(_LIVE),
            other.c.id != row.c.id,
            or_(older, other.c.status == Status.RUNNING.value),
        )
        .order_by(other.c.created_at, other.c.ordering_pos, other.c.id)
        .limit(1)
        .correlate(row)
        .scalar_subquery()
    )


#: The statuses of a line's tasks on their way to run, or running (not waiting their turn).
_ON_ITS_WAY = sorted(s.value for s in LIVE_STATUSES - {Status.WAITING})


def _line_busy(task: Any, owner: Any, key: Any) -> Any:
    """Whether an ordering key's line (its name, owner and key: columns of a row, or values)
    has a task on its way or running: then none of it is released."""
    going = tasks.alias()
    return (
        select(going.c.id)
        .where(
            going.c.task == task,
            going.c.owner == owner,
            going.c.ordering_key == key,
            going.c.status.in_(_ON_ITS_WAY),
        )
        .exists()
    )


def _release(task: Any, owner: Any, key: Any) -> Any:
    """Release the oldest ``waiting`` task of a line with none of it pending, queued or
    running (none ahead of it any more), ``pending``, returning it."""
    waiting = tasks.alias("waiting")
    first = (
        select(waiting.c.id)
        .where(
            waiting.c.task == task,
            waiting.c.owner == owner,
            waiting.c.ordering_key == key,
            waiting.c.status == Status.WAITING.value,
        )
        .order_by(waiting.c.created_at, waiting.c.ordering_pos, waiting.c.id)
        .limit(1)
        .scalar_subquery()
    )
    return (
        update(tasks)
        .where(tasks.c.id == first, ~_line_busy(task, owner, key))
        .values(status=Status.PENDING.value, waiting_on=None, updated_at=func.now())
        .returning(*PUBLIC)
    )


def _hold(
    conn: Connection,
    task_id: uuid.UUID,
    row: Any,
    concurrency: Concurrency | None,
    ordering: Ordering | None,
) -> tuple[str, uuid.UUID | None] | None:
    """What holds a task waiting to run, from its ``row`` as a limited claim read it (its
    ``status``, and under each limit given: the one ``ahead`` and its ``ordering_key``, how
    many are ``running`` and its ``concurrency_key``): why, recorded on the task, and the task
    ahead of it. Its turn under a rate limit, if it had one, is dropped: it takes a new one
    when it may run. None: not held."""
    if row.status not in (Status.PENDING.value, Status.QUEUED.value):
        return None
    if ordering is not None and row.ahead is not None:
        why, behind = ordering.waiting(row.ahead, row.ordering_key), row.ahead
    elif concurrency is not None and row.running >= concurrency.limit:
        why, behind = concurrency.waiting(row.running, row.concurrency_key), None
    else:
        return None
    conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.status == row.status)
        .values(waiting_on=why, rate_slot=None, updated_at=func.now())
    )
    return why, behind


def _key_lock(*parts: Any) -> Any:
    """The lock a limited claim holds to its commit: one of the task's keys (read from its
    row), hashed into Postgres' 64-bit lock space."""
    name = func.concat_ws(literal_column("E'\\x1f'"), *parts)
    return select(func.pg_advisory_xact_lock(func.hashtextextended(name, 0))).where(
        tasks.c.id == _CLAIM_ID
    )


#: A concurrency limit's: the task's name and key (:mod:`tasklane.limits`).
_LIMIT_LOCK = _key_lock(
    literal_column("'concurrency'"),
    tasks.c.task,
    func.coalesce(tasks.c.concurrency_key, literal_column("''")),
)
#: An ordering key's: its owner, name and key (the lock its inserts take too).
_ORDER_LOCK = _key_lock(
    literal_column("'ordering'"), tasks.c.owner, tasks.c.task, tasks.c.ordering_key
)
#: The most runs at once a limited claim allows.
_CLAIM_LIMIT = bindparam("claim_limit", type_=Integer)
#: A rate limit's turn this close ahead is now (its clock readings differ by microseconds).
RATE_TOLERANCE = timedelta(milliseconds=5)


def _interval(rate: RateLimit) -> Any:
    """The time between two starts under ``rate``, as SQL."""
    return literal(timedelta(seconds=rate.interval_s), Interval)


def _claim_select(*riders: Any, limited: bool = False, ordered: bool = False) -> Any:
    """One statement that claims a delivery's task and says why not when it cannot: the
    claim's attempt and payload, and the row's status, task and ``run_at`` as they were before
    it. ``riders``, labelled scalar subqueries over an outcome's update, come along in the same
    round trip. ``limited``: only while fewer than ``claim_limit`` of its namesakes with its
    concurrency key are running (and how many are, and its key, come back). ``ordered``: only
    the head of its ordering key's line (and the one ahead of it, and its key, come back).
    """
    again = tasks.c.claimed_by == _CLAIM_TOKEN  # its own claim, made again after a lost reply
    lost = and_(tasks.c.status == Status.RUNNING.value, ~again)
    under_limit = or_(again, _running_like(tasks) < _CLAIM_LIMIT) if limited else true()
    in_turn = or_(again, _ahead_of(tasks).is_(None)) if ordered else true()
    claimed = (
        update(tasks)
        .where(
            tasks.c.id == _CLAIM_ID,
            tasks.c.task == _CLAIM_TASK,
            under_limit,
            in_turn,
            or_(
                and_(tasks.c.status.in_([s.value for s in CLAIMABLE]), _due()),
                and_(
                    tasks.c.status == Status.RUNNING.value,
                    or_(
                        and_(
                            tasks.c.lease_until < func.now(),
                            tasks.c.cancel_requested_at.is_(None),
                        ),
                        tasks.c.claimed_by == _CLAIM_TOKEN,
                    ),
                ),
            ),
        )
        .values(
            status=Status.RUNNING.value,
            attempts=tasks.c.attempts + case((again, 0), else_=1),
            claimed_by=_CLAIM_TOKEN,
            unknown_since=None,
            lease_until=func.now() + _CLAIM_LEASE,
            started_at=func.coalesce(tasks.c.started_at, func.now()),
            attempt_started_at=case((again, tasks.c.attempt_started_at), else_=func.now()),
            retry_at=None,
            waiting_on=None,
            rate_slot=None,
            # a run whose lease ran out without an outcome (its process died): it was lost
            history=case((lost, lost_attempt()), else_=tasks.c.history),
            updated_at=func.now(),
        )
        .returning(
            tasks.c.id,
            tasks.c.attempts,
            cast(tasks.c.payload, Text).label("payload"),
            tasks.c.owner,
            (func.coalesce(func.jsonb_array_length(tasks.c.step["then"]), 0) > 0).label("releases"),
        )
        .cte("claimed")
    )
    asked = select(_CLAIM_ID.label("id")).subquery("asked")
    before = tasks.alias("before")
    columns = [
        claimed.c.attempts,
        claimed.c.payload,
        claimed.c.owner,
        claimed.c.releases,
        before.c.status,
        before.c.task,
        before.c.run_at,
        before.c.expires_at,
    ]
    if limited:
        columns += [_running_like(before).label("running"), before.c.concurrency_key]
    if ordered:
        columns += [_ahead_of(before).label("ahead"), before.c.ordering_key]
    return select(*riders, *columns).select_from(
        asked.outerjoin(claimed, claimed.c.id == asked.c.id).outerjoin(
            before, before.c.id == asked.c.id
        )
    )


@functools.cache
def claim_statement() -> Any:
    """A delivery's claim alone (:func:`claim_params`)."""
    return _claim_select()


@functools.cache
def limited_claim_statement(limited: bool = True, ordered: bool = False) -> Any:
    """A delivery's claim under a concurrency limit (:func:`claim_params` and ``claim_limit``)
    and/or in its ordering key's line, made after their locks in the same transaction."""
    return _claim_select(limited=limited, ordered=ordered)


@functools.cache
def settle_statement(failure: bool, then: bool) -> Any:
    """An attempt's outcome (:func:`settle_params`), returning the status it left and the
    steps it may release; with ``then``, the next delivery's claim in the same statement."""
    settled = _settle_update(failure).returning(tasks.c.status, tasks.c.step["then"].label("then"))
    if not then:
        return settled
    cte = settled.cte("settled")
    return _claim_select(
        select(cte.c.status).scalar_subquery().label("settled"),
        select(cte.c.then).scalar_subquery().label("then"),
    )


def _claim_of(task_id: uuid.UUID, row: Any) -> Claimed | NotClaimed:
    if row.attempts is not None:
        return Claimed(task_id, row.attempts, row.payload, row.owner, bool(row.releases))
    return NotClaimed(
        task_id, Status(row.status) if row.status else None, row.task, row.run_at, row.expires_at
    )


def _settle_update(failure: bool) -> Any:
    """The conditional update recording one attempt's outcome (see :meth:`TaskStore.settle`)."""
    mine = and_(tasks.c.id == _TASK_ID, tasks.c.claimed_by == _TOKEN)
    running = tasks.c.status == Status.RUNNING.value
    if failure:
        last = or_(
            _FINAL,
            and_(tasks.c.max_attempts.is_not(None), tasks.c.attempts >= tasks.c.max_attempts),
        )
        asked = tasks.c.cancel_requested_at.is_not(None)  # it stopped when asked
        replayed = and_(
            tasks.c.status.in_([Status.QUEUED.value, Status.FAILED.value, Status.CANCELLED.value]),
            tasks.c.error == _ERROR,
        )
        outcome = case((asked, literal_column("'cancelled'")), else_=literal_column("'failed'"))
        return (
            update(tasks)
            .where(mine, or_(running, replayed))
            .values(
                status=case(
                    (asked, Status.CANCELLED.value),
                    (last, Status.FAILED.value),
                    else_=Status.QUEUED.value,
                ),
                error=_ERROR,
                lease_until=None,
                finished_at=case((or_(asked, last), func.now()), else_=None),
                retry_at=case(
                    (or_(asked, last), null()),
                    (running, func.now() + _back_off()),
                    else_=tasks.c.retry_at,  # a replayed outcome: as its first write left it
                ),
                history=case(
                    (running, history_with(attempt_entry(outcome, _ENTRY))), else_=tasks.c.history
                ),
                updated_at=func.now(),
            )
        )
    return (
        update(tasks)
        .where(mine, tasks.c.status.in_([Status.RUNNING.value, Status.SUCCEEDED.value]))
        .values(
            status=Status.SUCCEEDED.value,
            result=_RESULT,
            error=None,
            lease_until=None,
            finished_at=func.coalesce(tasks.c.finished_at, func.now()),
            retry_at=None,
            history=case(
                (running, history_with(attempt_entry(literal_column("'succeeded'"), _ENTRY))),
                else_=tasks.c.history,
            ),
            updated_at=func.now(),
        )
    )


class Claims(StoreBase):
    """A delivery's claim, its lease, and the outcome it settles."""

    def end_run(self, task_id: uuid.UUID, token: str, status: Status) -> bool:
        """An adopted Celery task's run has ended (its result, if any, is Celery's backend's
        to store): the row leaves ``running`` while this delivery still holds it."""
        with unavailable_as_error(), self.engine.begin() as conn:
            ended = conn.execute(
                update(tasks)
                .where(
                    tasks.c.id == task_id,
                    tasks.c.status == Status.RUNNING.value,
                    tasks.c.claimed_by == token,
                )
                .values(
                    status=status.value,
                    lease_until=None,
                    updated_at=func.now(),
                    finished_at=func.now() if status.terminal else None,
                    # a task that ignores its results: its error is stored nowhere
                    history=ended_history(status),
                )
            )
        return ended.rowcount == 1

    def claim(self, claim: Claim, lease_seconds: float) -> Claimed | NotClaimed:
        """Claim a task for one delivery, in one round trip; the attempt counts a run.

        Claimable: ``pending``/``queued`` and due, or ``running`` with an expired lease (its
        consumer died), and the message names the row's task. A claim this delivery already
        holds is returned again without counting (its commit's reply was lost).
        """
        with unavailable_as_error(), self._single() as conn:
            row = conn.execute(claim_statement(), claim_params(claim, lease_seconds)).one()
            return _claim_of(claim.id, row)

    def claim_limited(
        self,
        claim: Claim,
        lease_seconds: float,
        concurrency: Concurrency | None = None,
        rate: RateLimit | None = None,
        ordering: Ordering | None = None,
    ) -> Claimed | NotClaimed:
        """:meth:`claim` under a task's limits, all consumers and workers together: fewer than
        ``concurrency.limit`` of its namesakes with its key running, and its turn under
        ``rate`` come. One transaction:

        - a concurrency limit's lock of the task's name and key, so claims of one key are
          made one at a time (the count is read after every claim committed before it); and
          likewise an ordering key's, whose claim finds no task of the key ahead of it;
        - a rate limit's turn: the one written on the task, or the next free moment of its
          key's bucket, which moves on by one interval (the bucket's row lock orders them);
          a turn still to come is written on the task, which waits for it;
        - the claim, counting the running under a concurrency limit. A claim that does not
          happen gives its bucket back the moment it took.

        A task that waits says why (``waiting_on``, :attr:`NotClaimed.waiting_on`, and for a
        rate limit how long, :attr:`NotClaimed.wait_s`); its claim clears it.
        """
        params = claim_params(claim, lease_seconds) | {
            "claim_limit": concurrency.limit if concurrency else 0
        }
        with unavailable_as_error(), self.engine.begin() as conn:
            if concurrency is not None:
                conn.execute(_LIMIT_LOCK, params)
            if ordering is not None:
                conn.execute(_ORDER_LOCK, params)
            took = None
            if rate is not None and (concurrency is not None or ordering is not None):
                # held by the other limit: no turn taken (a turn kept while it waits would let
                # the held start together later, past the rate)
                held = self._held(conn, claim, concurrency, ordering)
                if held is not None:
                    return held
            if rate is not None:
                turn = self._rate_turn(conn, claim.id, rate)
                if isinstance(turn, NotClaimed):
                    return turn
                took = turn
            if concurrency is None and ordering is None:
                statement = claim_statement()
            else:
                statement = limited_claim_statement(concurrency is not None, ordering is not None)
            row = conn.execute(statement, params).one()
            taken = _claim_of(claim.id, row)
            if isinstance(taken, Claimed):
                return taken
            if took is not None:  # not run: the moment it took is free again
                conn.execute(
                    update(rate_buckets)
                    .where(rate_buckets.c.name == took)
                    .values(next_free=rate_buckets.c.next_free - _interval(rate))
                )
            held = _hold(conn, claim.id, row, concurrency, ordering)
        if held is None:
            return taken  # not for a limit's sake
        why, behind = held
        return dataclasses.replace(taken, waiting_on=why, behind=behind)

    @staticmethod
    def _held(
        conn: Connection,
        claim: Claim,
        concurrency: Concurrency | None,
        ordering: Ordering | None,
    ) -> NotClaimed | None:
        """Whether the task, waiting to run, is held by its concurrency limit or the task
        ahead of it (read under their locks): why, recorded on it (its turn under a rate
        limit, if it had one, is dropped: it takes a new one when it may run)."""
        row = conn.execute(
            select(
                tasks.c.task,
                tasks.c.status,
                _running_like(tasks).label("running"),
                tasks.c.concurrency_key,
                _ahead_of(tasks).label("ahead"),
                tasks.c.ordering_key,
            ).where(tasks.c.id == claim.id)
        ).first()
        held = None if row is None else _hold(conn, claim.id, row, concurrency, ordering)
        if held is None:
            return None
        why, behind = held
        return NotClaimed(claim.id, Status(row.status), row.task, waiting_on=why, behind=behind)

    @staticmethod
    def _rate_turn(
        conn: Connection, task_id: uuid.UUID, rate: RateLimit
    ) -> str | NotClaimed | None:
        """The task's turn under ``rate``: None to go on with the turn it was given (or no
        turn to take: a task not waiting to run), the bucket's name when it took the bucket's
        free moment now, or :class:`NotClaimed` when its turn is to come (written on it)."""
        row = conn.execute(
            select(
                tasks.c.task,
                tasks.c.status,
                tasks.c.rate_key,
                tasks.c.rate_slot,
                func.clock_timestamp().label("now"),
            ).where(tasks.c.id == task_id)
        ).first()
        if row is None or row.status not in (Status.PENDING.value, Status.QUEUED.value):
            return None  # the claim says why not, or claims its own again
        if row.rate_slot is not None:
            if row.rate_slot <= row.now:
                return None  # its turn has come
            wait = (row.rate_slot - row.now).total_seconds()
            why = rate.waiting(row.rate_key, row.rate_slot)
            return NotClaimed(task_id, Status(row.status), row.task, waiting_on=why, wait_s=wait)
        bucket = f"{row.task}\x1f{row.rate_key or ''}"
        interval = _interval(rate)
        horizon = literal(timedelta(seconds=rate.horizon_s), Interval)
        taken = conn.execute(
            pg_insert(rate_buckets)
            .values(name=bucket, next_free=func.clock_timestamp() + interval)
            .on_conflict_do_update(
                index_elements=[rate_buckets.c.name],
                set_={
                    "next_free": func.greatest(rate_buckets.c.next_free, func.clock_timestamp())
                    + interval
                },
                # turns are given at most a horizon ahead: one given to a task that never
                # runs (cancelled, expired) delays the others by that much at most
                where=rate_buckets.c.next_free <= func.clock_timestamp() + horizon,
            )
            .returning(rate_buckets.c.next_free - interval, func.clock_timestamp())
        ).first()
        if taken is None:  # the turns within the horizon are all given: ask again later
            next_free, now = conn.execute(
                select(rate_buckets.c.next_free, func.clock_timestamp()).where(
                    rate_buckets.c.name == bucket
                )
            ).one()
            wait = (next_free - now).total_seconds() - rate.horizon_s / 2
            why = rate.waiting(row.rate_key, next_free)
            conn.execute(
                update(tasks)
                .where(tasks.c.id == task_id, tasks.c.status == row.status)
                .values(waiting_on=why, updated_at=func.now())
            )
            return NotClaimed(
                task_id, Status(row.status), row.task, waiting_on=why, wait_s=max(wait, 2.0)
            )
        turn, now = taken
        if turn <= now + RATE_TOLERANCE:
            return bucket
        why = rate.waiting(row.rate_key, turn)
        conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status == row.status)
            .values(rate_slot=turn, waiting_on=why, updated_at=func.now())
        )
        return NotClaimed(
            task_id,
            Status(row.status),
            row.task,
            waiting_on=why,
            wait_s=(turn - now).total_seconds(),
        )

    def release_next(self, task_id: uuid.UUID) -> TaskRecord | None:
        """The next task of ``task_id``'s ordering key's line (its owner's), released to run
        (``pending``, to be sent) now that no task of the line is ahead of it: the oldest
        ``waiting`` one, if none of the line is pending, queued or running. Under the line's
        lock, so one end releases one task."""
        with unavailable_as_error(), self.engine.begin() as conn:
            conn.execute(_ORDER_LOCK, {"claim_id": task_id})
            me = conn.execute(
                select(tasks.c.task, tasks.c.owner, tasks.c.ordering_key).where(
                    tasks.c.id == task_id
                )
            ).first()
            if me is None or me.ordering_key is None:
                return None
            row = conn.execute(_release(me.task, me.owner, me.ordering_key)).first()
        return TaskRecord.from_row(row) if row is not None else None

    def release_stalled(self, grace_seconds: float, limit: int) -> list[TaskRecord]:
        """Ordered keys' lines whose first task has waited ``grace_seconds`` though none of
        the line is on its way (the task ahead ended and its process died before releasing
        the next, or it was cancelled, or it failed for good): that task, released."""
        first = tasks.alias("first")
        busy = _line_busy(first.c.task, first.c.owner, first.c.ordering_key)
        heads = (
            select(first.c.id, first.c.updated_at)
            .where(
                first.c.ordering_key.is_not(None),
                first.c.status == Status.WAITING.value,
                ~busy,  # before the limit: a busy line is not stalled
            )
            .ext(distinct_on(first.c.task, first.c.owner, first.c.ordering_key))
            .order_by(
                first.c.task,
                first.c.owner,
                first.c.ordering_key,
                first.c.created_at,
                first.c.ordering_pos,
                first.c.id,
            )
            .subquery("heads")
        )
        grace = func.now() - literal(timedelta(seconds=grace_seconds), Interval)
        stalled = (
            select(heads.c.id).where(heads.c.updated_at < grace).limit(limit).scalar_subquery()
        )
        # still none on its way when the row is written
        still_busy = _line_busy(tasks.c.task, tasks.c.owner, tasks.c.ordering_key)
        stmt = (
            update(tasks)
            .where(tasks.c.id.in_(stalled), tasks.c.status == Status.WAITING.value, ~still_busy)
            .values(status=Status.PENDING.value, waiting_on=None, updated_at=func.now())
            .returning(*PUBLIC)
        )
        with unavailable_as_error(), self.engine.begin() as conn:
            return [TaskRecord.from_row(r) for r in conn.execute(stmt)]

    def outcome_of(self, task_id: uuid.UUID, token: str) -> Status | None:
        """The task's status if delivery ``token`` was the last to hold it (else None)."""
        stmt = select(tasks.c.status).where(tasks.c.id == task_id, tasks.c.claimed_by == token)
        with unavailable_as_error(), self.engine.connect() as conn:
            status = conn.execute(stmt).scalar_one_or_none()
        return Status(status) if status else None

    def settle(
        self,
        task_id: uuid.UUID,
        token: str,
        outcome: str | Failure,
        then: Claim | None = None,
        lease_seconds: float = 0,
        connection: Connection | None = None,
        releases: bool = True,
    ) -> Settled:
        """Record an attempt's outcome (``outcome``: the result's JSON text, or a
        :class:`Failure`) if delivery ``token`` still holds the claim; and, in the same round
        trip, claim ``then``, the next task its consumer will run.

        Returns the task's status after the write (None: the claim was lost, nothing written),
        ``then``'s claim, and the workflow steps this success released (:meth:`_release`), in
        the same transaction, for the caller to send. A failure leaves the task ``queued`` for
        a retry, or ``failed`` on its last attempt (``max_attempts``) or when final. Replaying
        the same write after a lost reply finds the delivery's own committed outcome and
        returns it again.

        ``releases``: whether the task may release workflow steps (its claim says,
        :attr:`Claimed.releases`). One that cannot is settled by one statement in autocommit;
        one that can, in a transaction with the release.
        """
        failure = isinstance(outcome, Failure)
        params = settle_params(task_id, token, outcome)
        if connection is not None:  # inside a transactional run: commits with its writes
            with data_errors_as_invalid():
                row = connection.execute(settle_statement(failure, False), params).first()
            return Settled(*self._after_settle(connection, row.status if row else None, row))
        atomic = self.engine.begin() if releases else self._single()
        with unavailable_as_error(), atomic as conn, data_errors_as_invalid():
            if then is None:
                row = conn.execute(settle_statement(failure, False), params).first()
                return Settled(*self._after_settle(conn, row.status if row else None, row))
            params |= claim_params(then, lease_seconds)
            row = conn.execute(settle_statement(failure, True), params).one()
            status, _, released = self._after_settle(conn, row.settled, row)
            return Settled(status, _claim_of(then.id, row), released)

    def _after_settle(
        self, conn: Connection, status: str | None, row: Any
    ) -> tuple[Status | None, None, Sequence[TaskRecord]]:
        if status != Status.SUCCEEDED.value or row is None or not row.then:
            return (Status(status) if status else None), None, []
        return Status.SUCCEEDED, None, self._release(conn, row.then)

    def release(self, task_id: uuid.UUID, token: str) -> bool:
        """Give back a claim whose run was cut short by the platform, not the task (a worker's
        broker connection lost, a transactional run's deadlock): ``queued`` again, and the run
        does not count; but a run asked to stop is over: ``cancelled``, never run again."""
        asked = tasks.c.cancel_requested_at.is_not(None)
        stmt = (
            update(tasks)
            .where(*held(task_id, token))
            .values(
                status=case((asked, Status.CANCELLED.value), else_=Status.QUEUED.value),
                error=case((asked, literal(STOPPED, JSONB)), else_=tasks.c.error),
                attempts=tasks.c.attempts - 1,
                lease_until=None,
                finished_at=case((asked, func.now()), else_=None),
                updated_at=func.now(),
            )
        )
        with unavailable_as_error(), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def extend_lease(self, task_id: uuid.UUID, token: str, seconds: float) -> bool:
        """Keep a running attempt's claim alive (the Celery lane's heartbeat)."""
        stmt = (
            update(tasks)
            .where(*held(task_id, token))
            .values(lease_until=func.now() + literal(timedelta(seconds=seconds), Interval))
        )
        with unavailable_as_error(), self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def mark_dead(
        self, task_id: uuid.UUID, message_id: str, error: dict, max_requeues: int
    ) -> tuple[Status, str] | None:
        """A message that SQS moved to a dead-letter queue: what it means for its task.

        - It carried the task's latest claim: the attempts it carried are over, the task is
          ``failed`` (keeping its last error).
        - No delivery ever claimed the task (every receive found Postgres down, or no consumer
          that knew the task): it never ran, so it goes back to ``pending`` for the
          reconciler, at most ``max_requeues`` times; then it is ``failed``, saying why.
        - Another message holds or held the claim: this one was a duplicate, and the task is
          left to that message's delivery. So is a task running under a live lease.
        - A task asked to stop ends ``cancelled`` rather than ``failed``: no retry of failed
          tasks takes it.

        Returns the status written and the task's lane (None: nothing changed).
        """
        never_claimed = tasks.c.claimed_by.is_(None)
        carried_it = func.split_part(tasks.c.claimed_by, "#", 1) == message_id
        requeue = and_(never_claimed, tasks.c.dead_letters + 1 < max_requeues)
        never_ran = {
            "type": "DeadLetter",
            "message": f"the task never ran: its messages reached the dead-letter queue "
            f"{max_requeues} times (no consumer could claim it)",
        }
        live = and_(tasks.c.status == Status.RUNNING.value, tasks.c.lease_until >= func.now())
        asked = tasks.c.cancel_requested_at.is_not(None)
        stmt = (
            update(tasks)
            .where(
                tasks.c.id == task_id,
                tasks.c.status.in_([s.value for s in IN_FLIGHT]),
                ~live,
                or_(never_claimed, carried_it),
            )
            .values(
                dead_letters=tasks.c.dead_letters + case((never_claimed, 1), else_=0),
                status=case(
                    (asked, Status.CANCELLED.value),
                    (requeue, Status.PENDING.value),
                    else_=Status.FAILED.value,
                ),
                error=case(
                    (asked, literal(STOPPED, JSONB)),
                    (requeue, tasks.c.error),
                    (never_claimed, literal(never_ran, JSONB)),
                    else_=func.coalesce(tasks.c.error, literal(error, JSONB)),
                ),
                lease_until=None,
                finished_at=case((and_(requeue, ~asked), None), else_=func.now()),
                retry_at=None,
                history=case(
                    (tasks.c.status == Status.RUNNING.value, lost_attempt()),
                    else_=tasks.c.history,
                ),
                updated_at=func.now(),
            )
            .returning(tasks.c.status, tasks.c.lane)
        )
        with unavailable_as_error(), self.engine.begin() as conn:
            row = conn.execute(stmt).first()
        return (Status(row.status), row.lane) if row else None

    def cancel_requested(self, task_id: uuid.UUID) -> bool:
        """Whether a task was asked to stop (read now: a running task polls it)."""
        stmt = select(tasks.c.cancel_requested_at.is_not(None)).where(tasks.c.id == task_id)
        with unavailable_as_error(), self.engine.connect() as conn:
            return bool(conn.execute(stmt).scalar_one_or_none())
