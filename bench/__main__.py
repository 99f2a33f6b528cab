"""Run every benchmark in one environment and print a table; write bench/results/latest.json.

python -m bench            # the full run (a few minutes)
python -m bench --quick    # a tiny run: checks that every benchmark works
python -m bench --only cold_start payload_size
python -m bench --stock-moto   # on unmodified moto (see bench/moto_server.py)
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.env import machine, standalone

MEASUREMENTS = [
    "submit_bulk",
    "submit_latency",
    "consumer_roundtrips",
    "cold_start",
    "celery_lane",
    "end_to_end",
    "payload_size",
    "eta_lateness",
    "workflows",
    "scale",
    "concurrency",
    "due_burst",
    "peers",
    "flow_control",
    "priority",
]
RESULTS = Path(__file__).resolve().parent / "results"


def verdict(value: float, target: tuple[str, float] | None) -> str:
    if target is None:
        return ""
    op, limit = target
    ok = value >= limit if op == ">=" else value <= limit
    return f"{'✓' if ok else '✗'} {op} {limit:g}"


def markdown(summary: dict) -> str:
    """The README's Performance table."""
    machine_ = summary["machine"]
    lines = [
        f"Measured {summary['when'][:10]} on {machine_['cpus']} CPUs, Python "
        f"{machine_['python']}, against a local Postgres and moto's SQS server "
        "(bench/moto_server.py: without moto's scan of the whole queue on every send).",
        "",
        "| benchmark | figure | value | target |",
        "|---|---|---:|---|",
    ]
    for result in summary["results"]:
        for i, (key, value) in enumerate(result["figures"].items()):
            target = result["targets"].get(key)
            name = f"**{result['name']}**<br>{result['workload']}" if i == 0 else ""
            lines.append(
                f"| {name} | {key} | {value:,.2f} | "
                f"{verdict(value, tuple(target) if target else None)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tasklane benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check they all run")
    parser.add_argument("--only", nargs="*", choices=MEASUREMENTS)
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the latest results as a Markdown table (runs nothing)",
    )
    parser.add_argument(
        "--stock-moto",
        action="store_true",
        help="run on unmodified moto (bench/moto_server.py says what the default changes)",
    )
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads((RESULTS / "latest.json").read_text())))
        return 0
    console = Console()
    results = []
    with standalone(quick=args.quick, stock_moto=args.stock_moto) as bench:
        for name in args.only or MEASUREMENTS:
            console.print(f"[dim]running {name}…[/dim]")
            started = time.perf_counter()
            result = importlib.import_module(f"bench.{name}").run(bench)
            result["seconds"] = time.perf_counter() - started
            if args.stock_moto:
                result["workload"] += "; stock moto"
            results.append(result)
    table = Table(title=f"tasklane benchmarks ({'quick' if args.quick else 'full'} run)")
    for column in ("benchmark", "figure", "value", "target"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for result in results:
        for i, (key, value) in enumerate(result["figures"].items()):
            target = result["targets"].get(key)
            table.add_row(
                result["name"] if i == 0 else "",
                key,
                f"{value:,.2f}",
                verdict(value, tuple(target) if target else None),
            )
        table.add_row("", f"[dim]{result['workload']}[/dim]", "", "", end_section=True)
    console.print(table)
    path = RESULTS / ("quick.json" if args.quick else "latest.json")
    when = datetime.now(UTC).isoformat()
    for result in results:
        result["when"] = when
    if args.only and path.exists():  # a partial run updates its measurements, keeps the rest
        fresh = {r["name"]: r for r in results}
        previous = json.loads(path.read_text())["results"]
        names = [r["name"] for r in previous] + [
            n for n in fresh if n not in {r["name"] for r in previous}
        ]
        old = {r["name"]: r for r in previous}
        results = [fresh.get(name) or old[name] for name in names]
    summary = {"when": when, "quick": args.quick, "machine": machine(), "results": results}
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str))
    console.print(f"machine: {summary['machine']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
