"""Tasks used by the tests (loaded through TASK_MODULES, like any project's tasks)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from tasklane import task


@task(name="test.echo", lane="lambda")
def echo(payload):
    return {"echo": payload}


@task(name="test.size", lane="lambda")
def size(payload):
    return {"chars": len(payload["data"])}


@task(name="test.fail", lane="lambda")
def fail(payload):
    raise ValueError(f"always fails: {payload.get('why', 'no reason')}")


@task(name="test.fail_twice", lane="lambda", max_attempts=2)
def fail_twice(payload):
    raise RuntimeError("fails on every attempt, two attempts allowed")


@task(name="test.flaky", lane="lambda")
def flaky(payload):
    """Fails until it has run ``fail_times`` times; counts its runs in a file."""
    marker = Path(payload["marker"])
    runs = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(runs))
    if runs <= payload["fail_times"]:
        raise ConnectionError(f"transient failure {runs}")
    return {"runs": runs}


@task(name="test.ledger", lane="lambda")
def ledger(payload):
    """Appends one line per execution, so a test can count how often the task really ran."""
    with open(payload["ledger"], "a") as f:
        f.write(f"{payload['n']}\n")
    return {"n": payload["n"]}


task(name="test.ledger_celery", lane="celery")(ledger.fn)


@task(name="test.sleep", lane="lambda")
def sleep(payload):
    time.sleep(payload["seconds"])
    return {"slept": payload["seconds"]}


@task(name="test.stubborn", lane="lambda")
def stubborn(payload):
    """Sleeps through anything raised into it (a task stuck in C code behaves so)."""
    deadline = time.monotonic() + payload["seconds"]
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            time.sleep(0.05)
    return {"slept": payload["seconds"]}


@task(name="test.echo_celery", lane="celery")
def echo_celery(payload):
    return {"echo": payload, "pid": os.getpid()}


@task(name="test.fail_celery", lane="celery")
def fail_celery(payload):
    raise ValueError("celery lane failure")


@task(name="test.sleep_once_celery", lane="celery")
def sleep_once_celery(payload):
    """Sleeps on its first run only, writing its pid first; counts its runs in a file."""
    marker = Path(payload["marker"])
    runs = len(marker.read_text().splitlines()) + 1 if marker.exists() else 1
    with marker.open("a") as f:
        f.write(f"{os.getpid()}\n")
    if runs == 1:
        time.sleep(payload["seconds"])
    return {"runs": runs}


@task(name="test.stubborn_celery", lane="celery", time_limit=3, max_attempts=1)
def stubborn_celery(payload):
    """Ignores its time limit's signal (as code stuck in C would); counts its runs."""
    with open(payload["marker"], "a") as f:
        f.write(f"{os.getpid()}\n")
    stubborn(payload)


@task(name="test.sleep_celery", lane="celery")
def sleep_celery(payload):
    time.sleep(payload["seconds"])
    return {"slept": payload["seconds"]}


@task(name="test.urgent", lane="lambda", priority=7)
def urgent(payload):
    """Declared high priority: its submissions go by the lambda lane's high queue."""
    return payload


# -- the fault-injection suite's tasks: every execution and every effect goes to a ledger --------
_ledger_engine = None


def _ledger():
    global _ledger_engine
    if _ledger_engine is None:  # per process (Celery forks after import)
        from sqlalchemy import create_engine

        _ledger_engine = create_engine(os.environ["DATABASE_URL"], pool_pre_ping=True)
    return _ledger_engine


def _fault_work(payload, effect=None):
    """Fails its first ``fail_times`` executions (or always), may sleep, then records its effect:
    in a transaction of its own, or through ``effect`` (a transactional task's connection)."""
    from sqlalchemy import text

    with _ledger().begin() as conn:
        conn.execute(
            text("INSERT INTO fault_runs (key, pid) VALUES (:k, :pid)"),
            {"k": payload["key"], "pid": os.getpid()},
        )
        runs = conn.execute(
            text("SELECT count(*) FROM fault_runs WHERE key = :k"), {"k": payload["key"]}
        ).scalar_one()
    if payload.get("sleep"):
        time.sleep(payload["sleep"])
    if payload["mode"] == "cancel_then_deadlock" and effect is not None:
        # written, then asked to stop; its transaction then loses a deadlock (40P01)
        effect.execute(text("INSERT INTO fault_effects (key) VALUES (:k)"), {"k": payload["key"]})
        import tasklane

        deadline = time.monotonic() + 60
        while not tasklane.current_task().cancel_requested and time.monotonic() < deadline:
            time.sleep(0.1)
        lose_a_deadlock(effect)
    if payload["mode"] == "permanent" or runs <= payload.get("fail_times", 0):
        raise RuntimeError(f"injected failure on execution {runs}")
    record = text("INSERT INTO fault_effects (key) VALUES (:k)")
    if effect is not None:  # with the task's outcome: exactly once
        effect.execute(record, {"k": payload["key"]})
    else:
        with _ledger().begin() as conn:  # the task's effect, at least once
            conn.execute(record, {"k": payload["key"]})
    return {"runs": runs}


def _fault_work_in_transaction(payload, db):
    return _fault_work(payload, effect=db)


task(name="fault.lambda", lane="lambda")(_fault_work)
task(name="fault.celery", lane="celery")(_fault_work)
task(name="fault.lambda_tx", lane="lambda", transactional=True)(_fault_work_in_transaction)
task(name="fault.celery_tx", lane="celery", transactional=True)(_fault_work_in_transaction)


# -- the Python API: tasks that submit tasks, and transactional tasks -------------------------
@task(name="test.spawn", lane="lambda")
def spawn(payload):
    """Starts a child task per item (fan-out from inside a running task)."""
    return [str(echo.delay(child).id) for child in payload["children"]]


@task(name="test.spawn_celery", lane="celery")
def spawn_celery(payload):
    return [str(echo.delay(child).id) for child in payload["children"]]


#: Gates a transactional test task can wait on, by name (in-process tests only).
GATES: dict[str, object] = {}


def _tx_write(payload, db):
    """Writes one row through the run's own transaction; may then wait, or fail."""
    from sqlalchemy import text

    db.execute(text("INSERT INTO tx_effects (key) VALUES (:k)"), {"k": payload["key"]})
    if gate := GATES.get(payload.get("gate", "")):
        gate.wait(30)
    if payload.get("fail"):
        raise RuntimeError("fails after its write")
    if payload.get("deadlock"):
        lose_a_deadlock(db)
    return {"wrote": payload["key"]}


def lose_a_deadlock(db) -> None:
    """Postgres picks the run's transaction to roll back (SQLSTATE 40P01), as in a deadlock."""
    from sqlalchemy import text

    db.execute(
        text("DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$")
    )


@task(name="test.tx_sleep", lane="lambda", transactional=True)
def tx_sleep(payload, db):
    """One statement that takes ``payload["sleep"]`` seconds on the server."""
    from sqlalchemy import text

    db.execute(text("SELECT pg_sleep(:s)"), {"s": payload["sleep"]})
    return payload["sleep"]


task(name="test.tx_write", lane="lambda", transactional=True)(_tx_write)
task(name="test.tx_write_celery", lane="celery", transactional=True)(_tx_write)


@task(name="test.cooperative", lane="lambda")
def cooperative(payload):
    """Works in small steps, stopping when asked (tasklane.current_task().check_cancelled())."""
    import tasklane

    marker = Path(payload["marker"])
    for step in range(payload.get("steps", 100)):
        marker.write_text(str(step))
        tasklane.current_task().check_cancelled()
        time.sleep(0.1)
    return {"steps": payload.get("steps", 100)}


# -- workflows ------------------------------------------------------------------------------
@task(name="wf.add", lane="lambda")
def add(payload):
    """A number plus one; ``{"payload": n, "previous": m}`` adds both."""
    if isinstance(payload, dict):
        return payload["payload"] + payload["previous"]
    return payload + 1


@task(name="wf.add_celery", lane="celery")
def add_celery(payload):
    return add.fn(payload)


@task(name="wf.total", lane="lambda")
def total(payload):
    """Sums a (nested) list of numbers: a chord's body."""
    if isinstance(payload, list):
        return sum(total.fn(p) for p in payload)
    return payload


@task(name="wf.total_celery", lane="celery")
def total_celery(payload):
    return total.fn(payload)


@task(name="wf.gate", lane="lambda", max_attempts=1)
def gate(payload):
    """Fails while the file ``payload["file"]`` is missing: a member fixed, then retried."""
    if not Path(payload["file"]).exists():
        raise RuntimeError("the gate is shut")
    return payload["value"]


@task(name="wf.record", lane="lambda")
def record(payload):
    """A chord body that appends one line per execution to ``payload["payload"]["ledger"]``."""
    with open(payload["payload"]["ledger"], "a") as f:
        f.write("body\n")
    return {"members": len(payload["previous"])}


def _fault_body(payload, db):
    """A chord's body in the fault suite: its effect commits with its outcome (exactly once),
    and it records how many results it was given."""
    assert isinstance(payload["previous"], list), payload
    return _fault_work(payload["payload"], effect=db) | {"members": len(payload["previous"])}


task(name="fault.body_lambda", lane="lambda", transactional=True)(_fault_body)
task(name="fault.body_celery", lane="celery", transactional=True)(_fault_body)


@task(name="test.nul_result", lane="lambda")
def nul_result(payload):
    """Returns what Postgres cannot store in jsonb (a NUL character)."""
    with open(payload["ledger"], "a") as f:
        f.write("ran\n")
    return {"text": "a\u0000b"}


@task(name="test.nan_result", lane="lambda")
def nan_result(payload):
    """Returns what JSON cannot say (NaN)."""
    return {"value": float("nan")}


@task(name="test.nul_result_tx", lane="lambda", transactional=True)
def nul_result_tx(payload, db):
    """Writes through its transaction, then returns what jsonb cannot hold."""
    from sqlalchemy import text

    db.execute(text("INSERT INTO tx_effects (key) VALUES ('nul')"))
    return {"text": "a\u0000b"}


# Unique tasks (tasklane.unique): one live report per account; a digest once an hour per list.
@task(name="test.report", lane="lambda", unique_key=("account",))
def report(payload):
    return {"account": payload["account"]}


@task(
    name="test.digest_celery",
    lane="celery",
    unique_key=lambda payload: f"list-{payload['list']}",
    unique_for=3600,
)
def digest_celery(payload):
    return payload["list"]


# Concurrency limits (tasklane.limits): two at once in all; one at once per account.
@task(name="test.limited", lane="lambda", concurrency=2)
def limited(payload):
    time.sleep(payload.get("seconds", 0.3))
    return payload.get("n")


@task(name="test.limited_by_account", lane="lambda", concurrency=1, concurrency_key="account")
def limited_by_account(payload):
    time.sleep(payload.get("seconds", 0.3))
    return payload.get("n")


@task(name="test.limited_celery", lane="celery", concurrency=1)
def limited_celery(payload):
    time.sleep(payload.get("seconds", 0.3))
    return payload.get("n")


# Rate limits (tasklane.limits): starts spaced across every consumer and worker.
@task(name="test.rated", lane="lambda", rate_limit="60/m")
def rated(payload):
    return payload.get("n")


@task(name="test.rated_fast", lane="lambda", rate_limit="4/s", rate_limit_key="account")
def rated_fast(payload):
    return payload.get("n")


@task(name="test.rated_celery", lane="celery", rate_limit="2/s")
def rated_celery(payload):
    return payload.get("n")


# Ordered keys (tasklane.limits): one at a time per key, in submission order.
@task(name="test.ordered", lane="lambda", ordering_key="key")
def ordered(payload):
    time.sleep(0.02)
    return payload.get("n")


@task(name="test.ordered_celery", lane="celery", ordering_key="key")
def ordered_celery(payload):
    time.sleep(0.1)
    return payload.get("n")


@task(name="test.limited_rated", lane="lambda", concurrency=1, rate_limit="60/m")
def limited_rated(payload):
    return payload.get("n")
