"""At scale: the listing's queries stay index range scans on a table of a million tasks."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from tasklane import migrate
from tasklane.lifecycle import Status
from tasklane.store import TaskFilter, find_statement

ROWS = 1_000_000


@pytest.fixture(scope="module")
def million(pg_cluster):
    """A migrated database holding a million tasks: 20 task names, both lanes, every status,
    created over the last 12 days."""
    from sqlalchemy import create_engine

    if pg_cluster is None:
        pytest.skip("needs the throwaway cluster")
    name = f"scale_{uuid.uuid4().hex[:8]}"
    pg_cluster.create_database(name)
    engine = create_engine(pg_cluster.url(name))
    migrate.upgrade(engine)
    statuses = "ARRAY['succeeded','succeeded','succeeded','failed','queued','running','pending']"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (id, task, lane, status, payload, created_at, updated_at) "
                "SELECT gen_random_uuid(), 'app.task' || (n % 20), "
                "CASE WHEN n % 3 = 0 THEN 'celery' ELSE 'lambda' END, "
                f"({statuses})[1 + n % 7], '{{}}'::jsonb, "
                "now() - make_interval(secs => n), now() - make_interval(secs => n) "
                f"FROM generate_series(1, {ROWS}) AS n"
            )
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE tasks"))
    yield engine
    engine.dispose()


def plan(engine, statement) -> str:
    sql = str(
        statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    )
    with engine.connect() as conn:
        return "\n".join(conn.execute(text(f"EXPLAIN {sql}")).scalars())


@pytest.mark.slow
@pytest.mark.parametrize(
    "where",
    [
        TaskFilter(),
        TaskFilter(status=Status.FAILED),
        TaskFilter(task="app.task7"),
        TaskFilter(status=Status.QUEUED, lane="celery"),
        TaskFilter(status=Status.SUCCEEDED, task="app.task3"),
    ],
    ids=["all", "status", "task", "status+lane", "status+task"],
)
def test_every_page_of_the_listing_is_an_index_range_scan(million, where):
    from datetime import UTC, datetime

    first = plan(million, find_statement(where, 51))
    deep = plan(
        million, find_statement(where, 51, (datetime(2026, 11, 20, tzinfo=UTC), uuid.UUID(int=0)))
    )
    for shown in (first, deep):
        assert "Index Scan" in shown or "Index Only Scan" in shown, shown
        assert "Seq Scan" not in shown and "Sort" not in shown.split("->")[0], shown


def executed(engine, call) -> list[tuple[str, object]]:
    """The statements ``call`` sends through ``engine``, with their parameters."""
    from sqlalchemy import event

    statements: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    return statements


def explain(engine, statement: str, parameters, generic: bool = False) -> str:
    """The plan of ``statement`` with its parameters; ``generic``: the plan a prepared
    statement reused without looking at them gets (another driver, a pooler's prepared
    statements)."""
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()
        if generic:
            numbered = iter(range(1, statement.count("%s") + 1))
            prepared = re.sub(r"%s", lambda _: f"${next(numbered)}", statement)
            cursor.execute("PREPARE planned AS " + prepared.replace("%%", "%"))
            cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            values = ", ".join(_sql_literal(v) for v in parameters)  # EXECUTE binds none
            cursor.execute(f"EXPLAIN EXECUTE planned({values})")
        else:
            cursor.execute("EXPLAIN " + statement, parameters)
        shown = "\n".join(row[0] for row in cursor.fetchall())
        conn.rollback()
        if generic:
            cursor.execute("DEALLOCATE planned")
    return shown


def _sql_literal(value) -> str:
    """A parameter of the statements planned here, as SQL text."""
    from datetime import timedelta

    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "NULL"}[value]
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, timedelta):
        return f"interval '{value.total_seconds()} seconds'"
    if isinstance(value, list | tuple):
        return "ARRAY[" + ", ".join(_sql_literal(v) for v in value) + "]"
    if isinstance(value, str | uuid.UUID):
        return "'" + str(value).replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {value!r}")


@pytest.mark.slow
def test_the_hot_paths_read_through_their_indexes(million):
    """What every task costs (claim, outcome, read), the reconciler's scans, the prune and one
    owner's listing: each through an index, never a scan of the whole table."""
    from datetime import UTC, datetime, timedelta

    from tasklane.store import Claim, TaskStore

    store = TaskStore(million)
    with million.connect() as conn:
        task_id, name = conn.execute(
            text("SELECT id, task FROM tasks WHERE status = 'queued' LIMIT 1")
        ).one()
    long_ago = datetime.now(UTC) - timedelta(days=365)
    hot = {
        "read": (lambda: store.get(task_id), "tasks_pkey"),
        "claim": (lambda: store.claim(Claim(task_id, name, "plan#1"), 900), "tasks_pkey"),
        "outcome": (lambda: store.settle(task_id, "plan#1", '{"ok": 1}'), "tasks_pkey"),
        "missing messages": (
            lambda: store.claim_stale(60, 900, quiet_lanes=("lambda", "celery"), limit=1),
            "ix_tasks_waiting_updated_at",
        ),
        "due tasks": (lambda: store.claim_due(900), "ix_tasks_scheduled_run_at"),
        "prune": (lambda: store.prune(long_ago, long_ago, dry_run=True), "ix_tasks_finished_at"),
    }
    for what, (call, index) in hot.items():
        statements = executed(million, call)
        plans = [explain(million, s, p) for s, p in statements]
        assert plans, what
        assert any(index in shown for shown in plans), (what, plans)
        if what in ("missing messages", "due tasks"):  # partial indexes, with a generic plan
            generic = [explain(million, s, p, generic=True) for s, p in statements]
            assert any(index in shown for shown in generic), (what, generic)
        for shown in plans:
            assert "Seq Scan on tasks" not in shown, (what, shown)
        if what == "missing messages":
            # both its statements (the dead runs asked to stop, the messages to send again)
            # find expired leases through the running tasks' own index, not by reading every
            # running task: the scan that grew with the table before it (migration 0009)
            updates = [shown for shown in plans if shown.startswith("Update")]
            assert len(updates) == 2, plans
            for shown in updates:
                assert "ix_tasks_running_lease" in shown, shown
    owner_page = plan(million, find_statement(TaskFilter(owner="arn:aws:iam::1:user/x"), 51))
    assert "ix_tasks_owner_created_id" in owner_page, owner_page
