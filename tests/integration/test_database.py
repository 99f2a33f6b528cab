"""The engine's connections against a real Postgres: a broken read never poisons the next one."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import text
from tasklane import database
from tasklane.config import settings


def test_a_read_that_raises_midway_does_not_answer_the_next_query(stack):
    """pg8000 decodes jsonb while it reads the reply; a RecursionError there leaves the rest of
    the reply unread. Without the engine's guard, the next query on that pooled connection gets
    the old reply (here: "This result object does not return rows")."""
    engine = database.engine()
    deep = "[" * 3000 + "]" * 3000
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS deep"))
        conn.execute(text("CREATE TABLE deep (v jsonb)"))
        conn.execute(text("INSERT INTO deep VALUES (CAST(:v AS jsonb))"), {"v": deep})
    try:
        with pytest.raises(RecursionError), engine.connect() as conn:
            conn.execute(text("SELECT v, 1 FROM deep")).all()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 41 + 1")).scalar_one() == 42
            assert conn.execute(text("SELECT count(*) FROM deep")).scalar_one() == 1
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE deep"))


def test_errors_the_server_reports_keep_the_connection(stack):
    engine = database.make_engine(settings())  # its own pool: one connection, used in turn
    with engine.connect() as conn:
        before = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with pytest.raises(Exception, match="division by zero"), engine.connect() as conn:
        conn.execute(text("SELECT 1 / 0"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() == before
    engine.dispose()


# -- the consumer's path: autocommit statements, a ping only after idling, cached rewrites ------
def _backends(engine) -> list[int]:
    """The server processes of the engine's pooled connections (used one at a time: one)."""
    with engine.connect() as conn:
        return [conn.execute(text("SELECT pg_backend_pid()")).scalar_one()]


def _kill_backends(engine) -> None:
    pids = _backends(engine)
    with database.engine().connect() as conn:
        for pid in pids:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


def test_a_killed_connection_is_reported_as_unavailable_never_as_a_socket_error(stack):
    """pg8000 lets a reset socket's error through unwrapped; the store must say the database
    was unavailable (the consumer then makes the write again, fenced on its token), not raise
    ConnectionResetError, which nothing retries: an outcome was lost so."""
    from tasklane.errors import StoreUnavailable
    from tasklane.store import Claim, NewTask, TaskStore

    store = TaskStore(database.make_engine(settings()))
    seen = set()
    try:
        for i in range(10):
            (record,) = store.insert([NewTask(uuid.uuid4(), "test.echo", "lambda", "{}", None)])
            _kill_backends(store.engine)
            try:
                store.claim(Claim(record.id, "test.echo", f"m-{i}#t"), 60)
                seen.add("claimed")
            except StoreUnavailable:
                seen.add("unavailable")
    finally:
        store.engine.dispose()
    assert seen <= {"claimed", "unavailable"} and "unavailable" in seen


def test_a_claim_whose_reply_never_came_is_made_again_without_counting(stack):
    """In autocommit the claim commits even when the client gave up waiting (a row lock held
    past its socket timeout): the client is told the store was unavailable, and the same
    delivery's claim made again gets the claim back, its attempt counted once."""
    from tasklane.errors import StoreUnavailable
    from tasklane.store import Claim, Claimed, NewTask, TaskStore

    impatient = TaskStore(database.make_engine(settings(), socket_timeout=1))
    (record,) = impatient.insert([NewTask(uuid.uuid4(), "test.echo", "lambda", "{}", None)])
    delivery = Claim(record.id, "test.echo", "m-1#t")
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with database.engine().begin() as conn:
            conn.execute(text("SELECT 1 FROM tasks WHERE id = :id FOR UPDATE"), {"id": record.id})
            locked.set()
            release.wait(2)

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait()
    try:
        with pytest.raises(StoreUnavailable):
            impatient.claim(delivery, 60)
    finally:
        release.set()
        holder.join()
    again = TaskStore(database.engine()).claim(delivery, 60)
    impatient.engine.dispose()
    assert isinstance(again, Claimed) and again.attempt == 1


def test_a_time_limit_striking_while_an_idle_connection_is_pinged_is_not_swallowed(
    stack, monkeypatch
):
    """The ping of an idle connection replaces a dead one on the driver's errors only: a task's
    time limit (its alarm) raised while the ping waits on a stalled server stops the task."""
    import os
    import signal
    import time

    from tasklane.errors import TimeLimitExceeded
    from tasklane.executor import time_limit
    from tasklane.store import NewTask, TaskStore

    store = TaskStore(database.make_engine(settings()))
    (record,) = store.insert([NewTask(uuid.uuid4(), "test.echo", "lambda", "{}", None)])
    monkeypatch.setattr(database, "IDLE_PING_S", 0.0)  # every checkout pings
    pids = _backends(store.engine)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)  # the server stalls (a hung primary)
    resume = threading.Timer(2.0, lambda: [os.kill(p, signal.SIGCONT) for p in pids])
    resume.start()
    started = time.monotonic()
    try:
        with pytest.raises(TimeLimitExceeded), time_limit(0.5):
            store.get(record.id)
            time.sleep(3)
    finally:
        resume.join()
        store.engine.dispose()
    assert time.monotonic() - started < 2.9


def test_an_autocommit_statement_commits_and_leaves_the_connection_transactional(stack):
    """The consumer's single statements run in autocommit, seen at once from elsewhere; the
    pooled connection then serves an ordinary transaction that rolls back whole."""
    from tasklane.store import Claim, NewTask, TaskStore

    store = TaskStore(database.make_engine(settings(), socket_timeout=10))
    (record,) = store.insert([NewTask(uuid.uuid4(), "test.echo", "lambda", "{}", None)])
    store.claim(Claim(record.id, "test.echo", "m-1#t"), 60)
    with database.engine().connect() as other:
        status = other.execute(
            text("SELECT status FROM tasks WHERE id = :id"), {"id": record.id}
        ).scalar_one()
    assert status == "running"
    with pytest.raises(RuntimeError), store.engine.begin() as conn:
        conn.execute(text("UPDATE tasks SET status = 'failed' WHERE id = :id"), {"id": record.id})
        raise RuntimeError("the transaction is abandoned")
    assert store.get(record.id).status.value == "running"
    store.engine.dispose()


def test_a_connection_lost_after_a_transactional_enqueue_is_unavailable(stack, monkeypatch):
    """Once an application has enqueued in a transaction of tasklane's own engine, the outbox
    listens to that engine's rollbacks. A connection lost mid-statement is rolled back as it
    closes: the listener must not turn the loss into a PendingRollbackError, which nothing
    retries (a worker's outcome was lost so); the store says it was unavailable."""
    from tasklane import outbox
    from tasklane.errors import StoreUnavailable
    from tasklane.store import NewTask, TaskStore

    engine = database.engine()
    outbox._install_engine(engine)
    store = TaskStore(engine)
    (record,) = store.insert([NewTask(uuid.uuid4(), "test.echo", "lambda", "{}", None)])
    dialect, execute = engine.dialect, engine.dialect.do_execute
    lost = {"left": 1}

    def do_execute(cursor, statement, parameters, context=None):
        if lost["left"]:
            lost["left"] -= 1
            raise dialect.loaded_dbapi.InterfaceError("network error")
        return execute(cursor, statement, parameters, context)

    monkeypatch.setattr(dialect, "do_execute", do_execute)
    with pytest.raises(StoreUnavailable):
        store.get(record.id)
    assert store.get(record.id).id == record.id  # and the next statement gets through


# -- prepared statements: each statement parsed and planned once per connection ---------------
def _prepared(conn) -> dict[str, int]:
    """This session's prepared statements: their text and how many times each was executed."""
    rows = conn.exec_driver_sql(
        "SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements"
    )
    return dict(rows.all())


def test_a_statement_is_prepared_once_per_connection_and_reused(stack):
    engine = database.make_engine(settings())
    try:
        with engine.connect() as conn:
            for i in range(12):
                assert conn.execute(text("SELECT :n + 1"), {"n": i}).scalar_one() == i + 1
            ours = {sql: n for sql, n in _prepared(conn).items() if "+ 1" in sql}
        assert list(ours.values()) == [12], ours  # one statement, executed twelve times
    finally:
        engine.dispose()


def test_without_prepared_statements_nothing_is_prepared(stack):
    import dataclasses

    engine = database.make_engine(
        dataclasses.replace(settings(), database_prepared_statements=False)
    )
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT :n + 1"), {"n": 1}).scalar_one() == 2
            assert _prepared(conn) == {}
    finally:
        engine.dispose()


def test_each_connection_keeps_a_bounded_number_of_statements(stack):
    engine = database.make_engine(settings())
    try:
        with engine.connect() as conn:
            for i in range(database.PREPARED_PER_CONNECTION + 10):
                assert conn.execute(text(f"SELECT :n + {i}"), {"n": 0}).scalar_one() == i
            kept = _prepared(conn)
            assert len(kept) == database.PREPARED_PER_CONNECTION
            assert any(f"+ {database.PREPARED_PER_CONNECTION + 9}" in sql for sql in kept)
            assert not any(sql.endswith("+ 0") for sql in kept)  # the oldest went first
    finally:
        engine.dispose()


def test_a_prepared_statement_outlives_a_change_of_its_tables_type(stack):
    """A migration that changes a column's type while processes run: Postgres refuses a
    prepared statement whose result type changed. Outside a transaction it is prepared again
    at once; inside one the transaction fails, and the next one prepares it again."""
    engine = database.make_engine(settings())
    read = text("SELECT v FROM retyped WHERE k = :k")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS retyped")
            conn.exec_driver_sql("CREATE TABLE retyped (k int, v int)")
            conn.exec_driver_sql("INSERT INTO retyped VALUES (1, 7)")
            conn.commit()
            with database.autocommit(conn.connection.dbapi_connection):
                assert conn.execute(read, {"k": 1}).scalar_one() == 7
                conn.exec_driver_sql("ALTER TABLE retyped ALTER v TYPE text")
                assert conn.execute(read, {"k": 1}).scalar_one() == "7"
            conn.exec_driver_sql("ALTER TABLE retyped ALTER v TYPE int USING v::int")
            conn.commit()
            with pytest.raises(Exception, match="cached plan"):
                conn.execute(read, {"k": 1})
            conn.rollback()
            assert conn.execute(read, {"k": 1}).scalar_one() == 7
            # the refused statement was closed on the server before the next one was prepared
            assert len(conn.connection.dbapi_connection._statement_nums) == len(_prepared(conn))
            conn.rollback()
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS retyped")
        engine.dispose()


def test_a_prepared_statements_errors_are_the_drivers_own(stack):
    """A unique violation is an IntegrityError (the store's duplicate-id and key paths read it
    so); another error is a ProgrammingError with the server's message; the connection stays."""
    from sqlalchemy import exc as sa_exc

    engine = database.make_engine(settings())
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE TEMP TABLE once (k int PRIMARY KEY)")
            conn.execute(text("INSERT INTO once VALUES (:k)"), {"k": 1})
            with pytest.raises(sa_exc.IntegrityError):
                conn.execute(text("INSERT INTO once VALUES (:k)"), {"k": 1})
            conn.rollback()
            with pytest.raises(sa_exc.ProgrammingError, match="division by zero"):
                conn.execute(text("SELECT 1 / :z"), {"z": 0})
            conn.rollback()
            assert conn.execute(text("SELECT 2 / :z"), {"z": 1}).scalar_one() == 2
    finally:
        engine.dispose()


def test_a_transactional_tasks_own_sql_is_not_prepared(stack):
    """The connection a transactional task writes through runs the application's SQL, which
    may read ``SELECT *`` of a table a migration is changing: it is not prepared."""
    from tasklane.store import default_store

    with default_store().transaction(5) as db:
        assert db.execute(text("SELECT :n * 2"), {"n": 21}).scalar_one() == 42
        assert not any("* 2" in sql for sql in _prepared(db))


def test_statements_the_server_refuses_leave_nothing_behind(stack):
    engine = database.make_engine(settings())
    try:
        with engine.connect() as conn:
            pg = conn.connection.dbapi_connection
            for _ in range(20):
                with pytest.raises(Exception, match="no_such_table"):
                    conn.execute(text("SELECT * FROM no_such_table WHERE x = :x"), {"x": 1})
                conn.rollback()
            assert conn.execute(text("SELECT :n + 1"), {"n": 1}).scalar_one() == 2
            assert len(pg._statement_nums) == len(_prepared(conn)) == 1
    finally:
        engine.dispose()
