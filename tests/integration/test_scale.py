"""At scale: the listing's queries stay index range scans on a table of a million tasks."""

from __future__ import annotations

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
