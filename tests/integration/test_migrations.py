"""The schema's migrations: online-safe on a table with data, repeatable, and what the code's
table definitions say."""

from __future__ import annotations

import time
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from tasklane import migrate
from tasklane.store import metadata


def revisions() -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def table_file(engine) -> int:
    """The tasks table's file on disk: a migration that rewrites the table changes it."""
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT relfilenode FROM pg_class WHERE relname = 'tasks'")
        ).scalar_one()


def test_each_migration_keeps_the_rows_and_never_rewrites_the_table(fresh_database):
    fresh = fresh_database
    first, *later = revisions()
    migrate.upgrade(fresh, first)
    task_id = uuid.uuid4()
    with fresh.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (id, task, lane, status, payload) "
                "VALUES (:id, 'text.wordcount', 'lambda', 'queued', '{\"text\": \"kept\"}')"
            ),
            {"id": task_id},
        )
    before = table_file(fresh)
    for revision in later:  # one at a time, as deploys would apply them
        migrate.upgrade(fresh, revision)
        assert table_file(fresh) == before, f"{revision} rewrote the tasks table"
    with fresh.connect() as conn:
        row = conn.execute(
            text("SELECT status, payload FROM tasks WHERE id = :id"), {"id": task_id}
        ).one()
        invalid = conn.execute(
            text(
                "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                "WHERE c.relname = 'tasks' AND NOT i.indisvalid"
            )
        ).scalar_one()
    assert row.status == "queued" and row.payload == {"text": "kept"}
    assert invalid == 0  # every index built concurrently finished


def test_migrating_again_changes_nothing_and_matches_the_code(fresh_database):
    fresh = fresh_database
    migrate.upgrade(fresh)
    migrate.upgrade(fresh)  # every deploy runs it
    with fresh.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == revisions()[-1]
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def _autocommit(engine):
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _old_snapshot(engine):
    """A transaction holding a snapshot (a long read, a claim in progress): CREATE INDEX
    CONCURRENTLY waits for it before it can finish."""
    conn = engine.connect().execution_options(isolation_level="REPEATABLE READ")
    conn.execute(text("SELECT 1"))
    return conn


def _lock_waiter(engine, fragment: str = "", timeout: float = 30) -> int | None:
    """The pid of a statement (containing ``fragment``) that waits on a lock within
    ``timeout``; None if none does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _autocommit(engine).connect() as conn:
            pid = conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE query LIKE :q "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                ),
                {"q": f"%{fragment}%"},
            ).scalar()
        if pid:
            return pid
        time.sleep(0.05)
    return None


def _cancel_when_waiting(engine, fragment: str, timeout: float = 30) -> None:
    """Cancel the statement containing ``fragment`` once it waits on a lock (as a timeout
    would)."""
    pid = _lock_waiter(engine, fragment, timeout)
    if pid is None:
        raise AssertionError(f"no statement with {fragment!r} waited")
    with _autocommit(engine).connect() as conn:
        conn.execute(text("SELECT pg_cancel_backend(:p)"), {"p": pid})


def _invalid_indexes(engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "WHERE NOT i.indisvalid"
                )
            ).scalars()
        )


def _interrupted_upgrade(engine, index: str) -> None:
    """Run the migrations while an old snapshot makes ``index``'s build wait, and cancel the
    build there, as a migrator's timeout would: the run fails and leaves ``index`` INVALID."""
    import threading

    failures: list[BaseException] = []

    def run() -> None:
        try:
            migrate.upgrade(engine)
        except Exception as exc:
            failures.append(exc)

    blocker = _old_snapshot(engine)
    worker = threading.Thread(target=run)
    worker.start()
    _cancel_when_waiting(engine, index)
    worker.join(30)
    blocker.close()
    assert failures and "canceling statement" in str(failures[0])
    assert index in _invalid_indexes(engine)
    engine.dispose()


@pytest.mark.parametrize(
    "interrupted", ["ix_tasks_owner_created_id", "ix_tasks_owner_idempotency_key"]
)
def test_0008_interrupted_during_an_index_build_runs_again_to_a_valid_schema(
    fresh_database, interrupted
):
    """The builds wait for every older transaction; interrupted there (the migrator timing
    out), the next deploy's run must finish the job: the columns already there, the INVALID
    index built again, and per-owner keys enforced before the old constraint goes."""
    import uuid

    from tasklane.store import NewTask, TaskStore

    migrate.upgrade(fresh_database, "0007")
    if interrupted == "ix_tasks_owner_idempotency_key":  # the first build done before
        with _autocommit(fresh_database).connect() as conn:
            for table in ("tasks", "workflows"):
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN owner text NOT NULL DEFAULT ''"))
            conn.execute(
                text(
                    "CREATE INDEX ix_tasks_owner_created_id "
                    "ON tasks (owner, created_at DESC, id DESC)"
                )
            )
    _interrupted_upgrade(fresh_database, interrupted)

    migrate.upgrade(fresh_database)  # the next deploy
    assert _invalid_indexes(fresh_database) == []
    store = TaskStore(fresh_database)
    first = store.insert_idempotent(NewTask(uuid.uuid4(), "t", "lambda", "1"), "k", "h", owner="a")
    again = store.insert_idempotent(NewTask(uuid.uuid4(), "t", "lambda", "1"), "k", "h", owner="a")
    other = store.insert_idempotent(NewTask(uuid.uuid4(), "t", "lambda", "1"), "k", "h", owner="b")
    assert again[0].id == first[0].id and not again[2]
    assert other[2] and other[0].id != first[0].id


def test_0009_interrupted_during_an_index_build_runs_again_and_drops_the_old_index(
    fresh_database,
):
    """The live-task indexes are built while writes go on; a run interrupted in a build leaves
    the old full index in place (the reconciler still has an index), and the next run builds
    what is INVALID again, then drops the old one."""
    migrate.upgrade(fresh_database, "0008")
    _interrupted_upgrade(fresh_database, "ix_tasks_running_lease")
    assert "ix_tasks_status_updated_at" in _index_definitions(fresh_database)

    migrate.upgrade(fresh_database)  # the next deploy
    assert _invalid_indexes(fresh_database) == []
    present = _index_definitions(fresh_database).keys()
    assert {"ix_tasks_running_lease", "ix_tasks_scheduled_run_at"} <= present
    assert "ix_tasks_waiting_updated_at" in present
    assert "ix_tasks_status_updated_at" not in present


@pytest.fixture
def deployed(fresh_database, monkeypatch):
    """tasklane's own configuration pointed at ``fresh_database``, as the migrator function's
    is at its stack's database."""
    from tasklane.config import settings

    url = fresh_database.url.render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", url)
    settings.cache_clear()
    yield fresh_database
    monkeypatch.undo()
    settings.cache_clear()


def test_the_deploy_migrator_leaves_a_schema_newer_than_its_release_as_it_is(deployed):
    """A deploy rolled back after a newer release migrated runs this release's migrator on a
    schema it does not know: it reports success (failing would leave the stack
    UPDATE_ROLLBACK_FAILED) and changes nothing."""
    migrate.upgrade(deployed)
    with deployed.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    response = migrate.handle_custom_resource({"RequestType": "Update"}, None)
    assert response["Status"] == "SUCCESS", response
    assert "9999" in response["Reason"]
    with deployed.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "9999"


def test_the_deploy_migrator_stops_its_statements_in_time_to_report(deployed):
    """The server cancels a statement that would outlast the migrator function (an index
    build waiting on an old transaction): the outcome is reported, nothing of the migrator is
    left running on the server, and the next deploy finishes the job."""
    from tasklane.local.events import LambdaContext

    migrate.upgrade(deployed, "0008")
    blocker = _old_snapshot(deployed)
    try:
        short = LambdaContext("migrator", timeout_seconds=migrate.REPORT_MARGIN_S + 2)
        response = migrate.handle_custom_resource({"RequestType": "Update"}, short)
        with _autocommit(deployed).connect() as conn:
            left = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE query ILIKE '%CREATE INDEX%' AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
    finally:
        blocker.close()
    assert response["Status"] == "FAILED" and "statement timeout" in response["Reason"], response
    assert left == 0
    assert "ix_tasks_running_lease" in _invalid_indexes(deployed)

    response = migrate.handle_custom_resource({"RequestType": "Update"}, LambdaContext("m", 300))
    assert response["Status"] == "SUCCESS", response
    assert _invalid_indexes(deployed) == []


def test_migrations_run_on_a_connection_without_a_socket_timeout(deployed):
    """An index build on a large table reads for minutes: a client socket timeout (tasklane's
    engine has 10 s) would give up while the build goes on on the server."""
    from tasklane.database import engine, migration_engine

    migrations = migration_engine()
    try:
        with migrations.connect() as conn:
            assert conn.connection.driver_connection._usock.gettimeout() is None
    finally:
        migrations.dispose()
    with engine().connect() as conn:  # the functions' engine keeps its timeout
        assert conn.connection.driver_connection._usock.gettimeout() == 10


def _index_definitions(engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = 'public' AND indexname <> 'alembic_version_pkc'"
            )
        )
        return dict(rows.all())


def test_the_migrated_indexes_are_the_ones_the_code_declares(fresh_database, pg_cluster):
    """Alembic's comparison does not see an index's WHERE clause: compare the definitions
    Postgres reports for a migrated database and one created from the code's tables."""
    from sqlalchemy import create_engine

    migrate.upgrade(fresh_database)
    name = f"declared_{uuid.uuid4().hex[:8]}"
    pg_cluster.create_database(name)
    declared = create_engine(pg_cluster.url(name))
    try:
        metadata.create_all(declared)
        assert _index_definitions(fresh_database) == _index_definitions(declared)
    finally:
        declared.dispose()


@pytest.mark.parametrize("revision", revisions()[1:])
def test_each_migration_behind_an_open_transaction_never_stalls_the_application(
    fresh_database, revision, caplog
):
    """An application transaction holds a row lock on ``tasks`` while a deploy migrates: each
    migration's statements wait for their lock at most ``LOCK_TIMEOUT_MS`` (the application's
    reads, queued behind them, go on) and the migration is tried again until the transaction
    ends; then it completes."""
    import threading

    engine = fresh_database
    migrate.upgrade(engine, revisions()[revisions().index(revision) - 1])
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tasks (id, task, lane, status, payload) "
                "VALUES (:id, 't', 'lambda', 'queued', '1')"
            ),
            {"id": uuid.uuid4()},
        )
    holder = engine.connect()
    holder.execute(text("SELECT id FROM tasks FOR UPDATE"))  # an enqueue's transaction, open
    failures: list[BaseException] = []

    def run() -> None:
        try:
            migrate.upgrade(engine, revision)
        except Exception as exc:
            failures.append(exc)

    migrator = threading.Thread(target=run)
    migrator.start()
    waited = _lock_waiter(engine, timeout=5) is not None
    with engine.connect() as reader:  # the application's read, while the migrator waits
        reader.execute(text("SET statement_timeout = '8s'"))
        assert reader.execute(text("SELECT count(*) FROM tasks")).scalar_one() == 1
    if waited:  # give up once at least, then the transaction ends
        time.sleep(migrate.LOCK_TIMEOUT_MS / 1000 + 0.5)
    holder.rollback()
    holder.close()
    migrator.join(90)
    assert not migrator.is_alive() and failures == []
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == revision
    assert _invalid_indexes(engine) == []
    if waited:
        assert "trying again" in caplog.text
