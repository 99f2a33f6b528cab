"""The tables: tasks, workflows, schedules, idempotency keys, Celery's groups and chords.

Alembic's migrations (:mod:`tasklane.migrations`) create them; these definitions are what the
queries are written against, and the indexes are named as the migrations name them.
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = MetaData()


#: The attempts a task's history keeps, the latest.
HISTORY_KEPT = 50

tasks = Table(
    "tasks",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("task", String(200), nullable=False),
    Column("lane", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("payload", JSONB(none_as_null=False)),
    Column("result", JSONB(none_as_null=False)),
    Column("error", JSONB(none_as_null=True)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer),
    #: Who submitted it (:mod:`tasklane.callers`); callers see only their own. '' : no one
    #: in particular (the Python API without an owner), seen by operators only.
    Column("owner", Text, nullable=False, server_default=""),
    #: Unique per owner (ix_tasks_owner_idempotency_key).
    Column("idempotency_key", String(255)),
    #: A unique task's key (:mod:`tasklane.unique`): one live task per name and key.
    Column("unique_key", Text),
    #: Until when that key stays taken whatever the task's status (its ``unique_for``).
    Column("unique_until", DateTime(timezone=True)),
    #: The key its concurrency limit counts by (:mod:`tasklane.limits`); null: the task's.
    Column("concurrency_key", Text),
    #: The key its rate limit counts by; and the turn it was given (it runs then without
    #: taking another; cleared by its claim).
    Column("rate_key", Text),
    Column("rate_slot", DateTime(timezone=True)),
    #: The key it runs in order with, one at a time, and its place in its submission (a
    #: batch's tasks share their ``created_at``): in order of ``created_at``, then this.
    Column("ordering_key", Text),
    Column("ordering_pos", Integer),
    #: Why it waits while it could be delivered (a limit: ``concurrency 5/5 for account=42``);
    #: cleared by its claim.
    Column("waiting_on", Text),
    #: 0 to 9 (null: 0); from 5 on its messages go by the lane's high queue (tasklane.lanes).
    Column("priority", SmallInteger),
    Column("request_hash", String(64)),
    Column("lease_until", DateTime(timezone=True)),
    Column(
        "created_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.statement_timestamp(),
    ),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    #: The delivery holding (or that last held) the claim: ``<SQS message id>#<random>``.
    Column("claimed_by", Text),
    #: Dead letters of the task while it had never run (bounds putting it back to pending).
    Column("dead_letters", Integer, nullable=False, server_default="0"),
    #: When the task is due (eta, countdown); ``scheduled`` until then.
    Column("run_at", DateTime(timezone=True)),
    #: When a running task was asked to stop (it sees it; it then ends ``cancelled``).
    Column("cancel_requested_at", DateTime(timezone=True)),
    #: Not to run after then (a deferred stock message's ``expires``): it ends ``cancelled``.
    Column("expires_at", DateTime(timezone=True)),
    #: Since when consumers meet the task without knowing it (cleared when one claims it).
    Column("unknown_since", DateTime(timezone=True)),
    #: The workflow the task is a step of (:mod:`tasklane.workflows`).
    Column("workflow_id", UUID(as_uuid=True)),
    #: Its place there: ``{"after": [ids], "input": template, "bound": bool, "then": [ids]}``.
    Column("step", JSONB(none_as_null=True)),
    #: The current attempt's start (``started_at`` is the first attempt's).
    Column("attempt_started_at", DateTime(timezone=True)),
    #: Its attempts, oldest first (the last :data:`HISTORY_KEPT`): ``{"attempt", "started_at",
    #: "finished_at", "outcome", "error": {"type", "message"}, "ran_on"}`` each.
    Column("history", JSONB(none_as_null=True)),
    #: When a task queued again after a failed attempt is delivered again (null otherwise).
    Column("retry_at", DateTime(timezone=True)),
    #: A Celery task's meta beyond these columns (:mod:`tasklane.results`): its Celery state,
    #: traceback, children, group and parent, the extended request fields.
    Column("celery", JSONB(none_as_null=True)),
    CheckConstraint(
        "status IN ('waiting', 'pending', 'scheduled', 'queued', 'running', 'succeeded', "
        "'failed', 'cancelled')",
        name="ck_tasks_status",
    ),
    CheckConstraint("lane IN ('lambda', 'celery')", name="ck_tasks_lane"),
)


# Listing newest first (keyset pages on created_at, id), alone or by status or task name.
Index("ix_tasks_created_id", tasks.c.created_at.desc(), tasks.c.id.desc())


# A caller's own tasks (every read of a caller who is not an operator), and its keys.
Index("ix_tasks_owner_created_id", tasks.c.owner, tasks.c.created_at.desc(), tasks.c.id.desc())


Index(
    "ix_tasks_owner_idempotency_key",
    tasks.c.owner,
    tasks.c.idempotency_key,
    unique=True,
    postgresql_where=tasks.c.idempotency_key.is_not(None),
)


# An ordered task's line (tasklane.limits): the live tasks of its name and key, oldest first.
Index(
    "ix_tasks_ordering_line",
    tasks.c.task,
    tasks.c.ordering_key,
    tasks.c.created_at,
    tasks.c.ordering_pos,
    postgresql_where=and_(
        tasks.c.ordering_key.is_not(None),
        tasks.c.status.in_(["waiting", "pending", "scheduled", "queued", "running"]),
    ),
)


# A unique task's newest namesakes (tasklane.unique): only tasks that have a key.
Index(
    "ix_tasks_task_unique_key",
    tasks.c.task,
    tasks.c.unique_key,
    tasks.c.created_at.desc(),
    postgresql_where=tasks.c.unique_key.is_not(None),
)


Index("ix_tasks_status_created_id", tasks.c.status, tasks.c.created_at.desc(), tasks.c.id.desc())


Index("ix_tasks_task_created_id", tasks.c.task, tasks.c.created_at.desc(), tasks.c.id.desc())


# The live tasks only, in the order the reconciler and the scheduler ask for them (migration
# 0009): runs by lease end (dead consumers), waiting tasks by last write (missing messages),
# scheduled tasks by when they are due.
Index("ix_tasks_running_lease", tasks.c.lease_until, postgresql_where=text("status = 'running'"))


Index(
    "ix_tasks_waiting_updated_at",
    tasks.c.status,
    tasks.c.updated_at,
    postgresql_where=text("status IN ('pending', 'queued')"),
)


Index("ix_tasks_scheduled_run_at", tasks.c.run_at, postgresql_where=text("status = 'scheduled'"))


Index(
    "ix_tasks_finished_at",
    tasks.c.finished_at,
    postgresql_where=tasks.c.finished_at.is_not(None),
)


workflows = Table(
    "workflows",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    #: Its tasks, in the order of the description (a group's results come in this order).
    Column("members", ARRAY(UUID(as_uuid=True)), nullable=False),
    #: Where its result comes from: a task id, or a list of them, nested as the description.
    Column("output", JSONB, nullable=False),
    Column(
        "created_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.statement_timestamp(),
    ),
    Column("owner", Text, nullable=False, server_default=""),
)


#: Celery's groups and chords (:mod:`tasklane.results`): a group's results, and a chord's
#: fan-in: how many members have ended, counted under a row lock, and when its body was fired.
celery_groups = Table(
    "celery_groups",
    metadata,
    Column("id", Text, primary_key=True),
    Column("result", JSONB, nullable=False),
    Column("chord_size", Integer),
    Column("done", Integer, nullable=False, server_default="0"),
    Column("fired_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


#: The members of a chord whose end was counted: each once, whatever runs report it.
celery_chord_parts = Table(
    "celery_chord_parts",
    metadata,
    Column("group_id", Text, primary_key=True),
    Column("member_id", Text, primary_key=True),
)


#: Idempotency keys of requests that create several rows (a batch, a workflow): what each
#: created, by owner, kind ("batch", "workflow") and key.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("owner", Text, primary_key=True, server_default=""),
    Column("kind", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("request_hash", Text, nullable=False),
    Column("ids", ARRAY(UUID(as_uuid=True)), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_idempotency_keys_created_at", "created_at"),
)


schedules = Table(
    "schedules",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("expression", Text, nullable=False),
    #: The last tick fired: the next pass fires the ticks after it.
    Column("last_tick", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


#: Celery workers as they last said they were alive (tasklane.heartbeat): what the operator's
#: workers view shows. A row is removed when its worker stops cleanly; one that died is seen
#: by its ``last_seen``.
workers = Table(
    "workers",
    metadata,
    Column("name", Text, primary_key=True),  # Celery's hostname: celery@host
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("queues", Text, nullable=False, server_default=""),
    Column("concurrency", Integer),
    #: The task ids it was running when it last beat.
    Column("active", JSONB(none_as_null=True)),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_seen", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


#: Rate limits' buckets (tasklane.limits): one per task name and key, holding when its next
#: start is free. A claim takes that moment and moves it on by one interval.
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("name", Text, primary_key=True),
    Column("next_free", DateTime(timezone=True), nullable=False),
)
