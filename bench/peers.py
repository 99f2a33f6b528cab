"""13. Peers, side by side: tasklane's Postgres work per task against procrastinate's and
PgQueuer's, on one throwaway Postgres, the three taking turns in each of several repetitions.

Each system has a database of its own on one server started with ``pg_stat_statements``. In
each repetition, each system in turn enqueues N trivial jobs (100 a call), then drains them with
1 process, then enqueues N more and drains them with 4 processes (``bench/peers_run.py`` is one
process's part). tasklane's drain is the lambda lane's consumer handler fed SQS records from
memory in batches of 10 (SQS itself is left out: only Postgres is compared).

Figures, medians over the repetitions, and tasklane's ratios to each peer with their spread
(the lowest and highest per-repetition ratio):
- enqueue and drain rates (jobs/s; the drain's from the first process's start of work to the
  last one's end);
- statements reaching the server per job while draining (``pg_stat_statements``: every call,
  BEGIN, COMMIT and pings included);
- the server's CPU per job over its life (enqueue and drain with one process): user and system
  time of every process of the cluster, exited backends included (the postmaster's children's);
- end-to-end latency one job at a time, p50 and p95: from the enqueue call to the job's body,
  with a worker already waiting (tasklane's consumer is handed the message in memory, where SQS
  would deliver it; the peers' workers wake on their LISTEN/NOTIFY).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tasklane.local.postgres import LocalPostgres, free_port

from bench.env import BenchEnv

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("tasklane", "procrastinate", "pgqueuer")
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(postmaster: int) -> float:
    """User and system CPU of the cluster: the postmaster, its live children, and (through the
    postmaster's cutime/cstime) every child it has reaped."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
        if int(pid) == postmaster:
            total += utime + stime + int(fields[13]) + int(fields[14])
        elif ppid == postmaster:
            total += utime + stime
    return total / TICKS


class Server:
    """The throwaway cluster, a database per system, and its counters."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tasklane-peers-"))
        self.dir.chmod(0o755)
        self.cluster = LocalPostgres(
            self.dir / "pg",
            free_port(),
            durable=False,
            settings={"shared_preload_libraries": "pg_stat_statements"},
        ).start()
        for system in SYSTEMS:
            self.cluster.create_database(system)
        self._sql("postgres", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self.postmaster = int((self.cluster.data_dir / "postmaster.pid").read_text().split()[0])

    def url(self, system: str) -> str:
        return self.cluster.url(system)

    def _sql(self, database: str, sql: str, **params: object) -> list:
        return self.sql_at(self.cluster.url(database), sql, **params)

    @staticmethod
    def sql_at(url: str, sql: str, **params: object) -> list:
        import pg8000.native
        from sqlalchemy import make_url

        u = make_url(url)
        conn = pg8000.native.Connection(u.username, host=u.host, port=u.port, database=u.database)
        try:
            return conn.run(sql, **params)
        finally:
            conn.close()

    def reset_statements(self) -> None:
        self._sql("postgres", "SELECT pg_stat_statements_reset()")

    def statements(self, system: str) -> int:
        (row,) = self._sql(
            "postgres",
            "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = :db",
            db=system,
        )
        return int(row[0])

    def cpu(self) -> float:
        return _cpu_seconds(self.postmaster)

    def close(self) -> None:
        self.cluster.stop(mode="immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def _setup(server: Server) -> None:
    """Each system's schema in its own database."""
    for system in SYSTEMS:
        _run(system, "setup", 0, server.url(system))


def _wall(system: str, action: str, n: int, url: str, parts: int = 1) -> float:
    """Run ``parts`` processes of one action; the work's wall time, first start to last end."""
    reports = _run(system, action, n, url, parts)
    return max(r["ended"] for r in reports) - min(r["started"] for r in reports)


def _run(system: str, action: str, n: int, url: str, parts: int = 1) -> list[dict]:
    """Run ``parts`` processes of one action; what each reported."""
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "TASK_MODULES": "bench.tasks",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    if system == "tasklane" and action == "drain":  # its consumer is fed these, from memory
        ids = Path(tempfile.mkstemp(prefix="peers-ids-")[1])
        rows = Server.sql_at(url, "SELECT id::text FROM tasks WHERE status = 'queued' ORDER BY id")
        ids.write_text(json.dumps([r[0] for r in rows]))
        env["PEERS_IDS"] = str(ids)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.peers_run",
                system,
                action,
                str(n),
                url,
                str(i),
                str(parts),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(parts)
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"{system} {action} failed: {err[:2500]} ... {err[-500:]}")
        line = next(x for x in reversed(out.splitlines()) if x.startswith('{"started"'))
        reports.append(json.loads(line))
    if any(r.get("failed") for r in reports):
        raise RuntimeError(f"{system} {action}: records failed: {reports}")
    return reports


def _one(server: Server, system: str, n: int, one_at_a_time: int) -> dict[str, float]:
    url = server.url(system)
    figures: dict[str, float] = {}
    cpu = server.cpu()
    figures["enqueue per s"] = n / _wall(system, "enqueue", n, url)
    server.reset_statements()
    figures["drain per s, 1 process"] = n / _wall(system, "drain", n, url, 1)
    figures["statements per job, draining"] = server.statements(system) / n
    figures["server CPU ms per job"] = (server.cpu() - cpu) / n * 1000
    _wall(system, "enqueue", n, url)
    figures["drain per s, 4 processes"] = n / _wall(system, "drain", n, url, 4)
    (report,) = _run(system, "latency", one_at_a_time, url)
    latencies = sorted(report["latencies"])
    figures["latency ms, one at a time, p50"] = statistics.median(latencies) * 1000
    figures["latency ms, one at a time, p95"] = latencies[int(0.95 * (len(latencies) - 1))] * 1000
    return figures


def run(bench: BenchEnv) -> dict:
    n, repetitions, one_at_a_time = bench.n(5_000, 100), bench.n(3, 1), bench.n(300, 20)
    server = Server()
    per_rep: list[dict[str, dict[str, float]]] = []
    try:
        _setup(server)
        for _ in range(repetitions):
            per_rep.append({s: _one(server, s, n, one_at_a_time) for s in SYSTEMS})
    finally:
        server.close()
    figures: dict[str, float] = {}
    targets: dict[str, tuple[str, float]] = {}
    keys = list(per_rep[0]["tasklane"])
    for system in SYSTEMS:
        for key in keys:
            figures[f"{system}: {key}"] = statistics.median(r[system][key] for r in per_rep)
    for peer in SYSTEMS[1:]:
        for key in keys:
            ratios = [r["tasklane"][key] / r[peer][key] for r in per_rep if r[peer][key]]
            figures[f"tasklane / {peer}: {key}"] = statistics.median(ratios)
            figures[f"tasklane / {peer}: {key} (min)"] = min(ratios)
            figures[f"tasklane / {peer}: {key} (max)"] = max(ratios)
    targets["tasklane: statements per job, draining"] = ("<=", 1.2)
    targets["tasklane / pgqueuer: server CPU ms per job"] = ("<=", 1.0)
    targets["tasklane / procrastinate: server CPU ms per job"] = ("<=", 0.6)
    targets["tasklane / procrastinate: drain per s, 1 process"] = (">=", 1.0)
    targets["tasklane / procrastinate: drain per s, 4 processes"] = (">=", 1.0)
    return {
        "name": "peers, side by side (Postgres only)",
        "workload": (
            f"{n} no-op jobs per phase, {repetitions} repetitions, the systems taking turns on "
            "one Postgres; tasklane's consumer fed from memory, batches of 10"
        ),
        "figures": figures,
        "targets": targets,
    }
