"""12. Work due at once, on the local stack (``tasklane dev``): nothing caps what the reconciler
sends when a great deal falls due together.

- A burst: N lambda-lane tasks ``scheduled`` for the same second, ``lead`` seconds ahead. One
  reconciler pass (``tasklane reconcile``) sends them all with the delay left, so each message
  becomes visible at its ``run_at``; the stack's consumer runs them. Figures: the pass's time,
  how many were sent after their ``run_at`` (none may), how late each started after its
  ``run_at`` (``started_at - run_at``: bound by how fast one local consumer runs tasks), and how
  many started early (none may).
- A volume: M tasks due within one minute, 16 minutes ahead: as tasks scheduled long before,
  they come within SQS's 15-minute delay limit as the clock moves, and the stack's own
  reconciler (every minute, its passes overlapping as EventBridge's do) sends them. Figures: the
  send rate, how many were left ``scheduled`` when the first fell due, and how many were sent
  after their ``run_at`` (none may). They are not run: the benchmark ends when the last is due.

The rows are written straight to the table (as many submits long before would have left them).
"""

from __future__ import annotations

import time

from sqlalchemy import text
from tasklane import database

from bench.env import BenchEnv, local_stack, percentile

INSERT = text(
    "INSERT INTO tasks (id, task, lane, status, payload, run_at) "
    "SELECT gen_random_uuid(), 'bench.noop', 'lambda', 'scheduled', to_jsonb(i), "
    "now() + make_interval(secs => :lead + :spread * i / :n) FROM generate_series(1, :n) i "
    "RETURNING id"
)
LATENESS = text(
    "SELECT count(*) FILTER (WHERE status <> 'succeeded') AS left, "
    "array_agg(extract(epoch FROM started_at - run_at)) AS late FROM tasks "
    "WHERE id = ANY(CAST(:ids AS uuid[]))"
)
SENT = text(
    "SELECT count(*) FILTER (WHERE status = 'scheduled') AS left, "
    "count(*) FILTER (WHERE status <> 'scheduled' AND updated_at > run_at) AS late "
    "FROM tasks WHERE id = ANY(CAST(:ids AS uuid[]))"
)


def _scheduled(n: int, lead: float, spread: float) -> list[str]:
    with database.engine().begin() as conn:
        rows = conn.execute(INSERT, {"n": n, "lead": lead, "spread": spread}).all()
    return [str(r.id) for r in rows]


#: The volume's lead: past SQS's 15-minute delay limit, so the reconciler's passes send it.
VOLUME_LEAD_S = 16 * 60


def run(bench: BenchEnv) -> dict:
    burst, volume = bench.n(10_000, 200), bench.n(100_000, 1_000)
    lead = bench.n(60, 10)
    figures: dict[str, float] = {}
    with local_stack() as stack:
        ids = _scheduled(burst, lead, 0)
        started = time.monotonic()
        stack.cli("reconcile")
        figures["burst: reconciler pass s"] = time.monotonic() - started
        with database.engine().connect() as conn:
            figures["burst: sent after run_at"] = conn.execute(SENT, {"ids": ids}).one().late
        deadline = time.monotonic() + lead + 1200
        while True:
            with database.engine().connect() as conn:
                left, late = conn.execute(LATENESS, {"ids": ids}).one()
            if not left or time.monotonic() > deadline:
                break
            time.sleep(1)
        late = [float(x) for x in late if x is not None]
        figures["burst: not run"] = left
        figures["burst: run per s"] = (burst - left) / max(time.monotonic() - started - lead, 1)
        figures["burst: started late p50 s"] = percentile(late, 50)
        figures["burst: started late p99 s"] = percentile(late, 99)
        figures["burst: started early"] = sum(x < 0 for x in late)

        spread, volume_lead = bench.n(60, 5), bench.n(VOLUME_LEAD_S, 30)
        ids = _scheduled(volume, volume_lead, spread)
        started = time.monotonic()
        stack.cli("reconcile")  # what is already within the window (a quick run's) goes now
        first_due = started + volume_lead
        left_at_first_due = None
        while True:
            with database.engine().connect() as conn:
                left, sent_late = conn.execute(SENT, {"ids": ids}).one()
            now = time.monotonic()
            if left_at_first_due is None and now >= first_due:
                left_at_first_due = left
            if not left or now > first_due + spread + 60:
                break
            time.sleep(2)
        window_opened = started + max(0, volume_lead - 900)
        figures["volume: sent per s (from its window)"] = (volume - left) / max(
            time.monotonic() - window_opened, 1
        )
        figures["volume: left scheduled when the first fell due"] = (
            left if left_at_first_due is None else left_at_first_due
        )
        figures["volume: left scheduled"] = left
        figures["volume: sent after run_at"] = sent_late
    return {
        "name": "work due at once (local stack)",
        "workload": (
            f"{burst} lambda-lane tasks due in the same second {lead} s ahead, sent by one "
            f"reconciler pass and run by the stack's one consumer; {volume} due within one "
            f"minute {volume_lead / 60:g} min ahead, sent by the stack's reconciler, not run"
        ),
        "figures": figures,
        "targets": {
            "burst: sent after run_at": ("<=", 0),
            "burst: started late p99 s": ("<=", 1),
            "burst: started early": ("<=", 0),
            "burst: not run": ("<=", 0),
            "volume: left scheduled": ("<=", 0),
            "volume: sent after run_at": ("<=", 0),
        },
    }
