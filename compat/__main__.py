"""Run Celery's integration suite in configurations A, B and C; print and save the comparison.

python -m compat                       # all three, test_tasks.py and test_canvas.py in full
python -m compat --configs A C         # some configurations
python -m compat -k "test_chain"       # a subset (pytest's -k)
python -m compat --markdown compat/results.md   # also write the tables for the docs

Results: .tasklane/celery-compat/run/results.json (every test's outcome per configuration).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".tasklane" / "celery-compat"
FILES = ("t/integration/test_tasks.py", "t/integration/test_canvas.py")
#: What each configuration changes, as the docs' table says it.
CONFIGS = {
    "A": "stock Celery: SQS, Celery's database result backend",
    "B": "A with tasklane.results.TaskTableBackend",
    "C": "B with tasklane.celery.claim_check(app)",
}
#: A test that waits longer than this has hung (the suite's own waits are at most 60 s).
TEST_TIMEOUT_S = 150


@dataclass
class Outcome:
    outcome: str  # passed, failed, error, skipped
    reason: str = ""
    seconds: float = 0.0


def fetch_suite() -> Path:
    """Celery's sdist of the installed version, unpacked once: its tests live only there."""
    release = version("celery")
    tree = WORK / f"celery-{release}"
    if (tree / "t" / "integration" / "conftest.py").exists():
        return tree
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", f"celery=={release}"),
                *("--no-binary", ":all:", "--no-deps", "--quiet", "-d", download),
            ],
            check=True,
        )
        (archive,) = Path(download).glob("celery-*.tar.gz")
        with tarfile.open(archive) as tar:
            members = [
                m
                for m in tar.getmembers()
                if m.name.split("/", 1)[-1].startswith(("t/", "pyproject.toml"))
            ]
            tar.extractall(WORK, members=members, filter="data")
    return tree


def queue_urls(moto: object, prefix: str) -> dict[str, str]:
    """The suite's one queue, ``celery``, with a DLQ; and a lambda lane's, for tasklane."""
    import boto3
    from tasklane.local.sqs import QueueSpec, create_queues

    moto.reset()
    client = boto3.client("sqs", endpoint_url=moto.endpoint, region_name="us-east-1")
    return create_queues(
        client,
        [
            QueueSpec("CeleryDeadLetterQueue", f"{prefix}-celery-dlq"),
            QueueSpec("LambdaDeadLetterQueue", f"{prefix}-lambda-dlq"),
            QueueSpec(
                "CeleryQueue", "celery", {"VisibilityTimeout": "60"}, "CeleryDeadLetterQueue", 5
            ),
            QueueSpec(
                "LambdaQueue",
                f"{prefix}-lambda",
                {"VisibilityTimeout": "60"},
                "LambdaDeadLetterQueue",
                5,
            ),
        ],
    )


def run_config(
    name: str,
    suite: Path,
    pg: object,
    moto: object,
    keyword: str | None,
    out: Path,
    extra: list[str],
) -> dict[str, Outcome]:
    from sqlalchemy import create_engine
    from tasklane import migrate
    from tasklane.local.sqs import FAKE_CREDENTIALS

    database = f"compat_{name.lower()}_{int(time.time())}"
    pg.create_database(database)
    url = pg.url(database)
    urls = queue_urls(moto, f"compat-{name.lower()}")
    overrides = {
        "broker_transport_options": {
            "region": "us-east-1",
            "predefined_queues": {"celery": {"url": urls["CeleryQueue"]}},
            "wait_time_seconds": 1,
            "polling_interval": 0.1,
        }
    }
    # Celery's conftest reads its overrides from the suite's root: a copy of the suite each
    suite = shutil.copytree(suite, out / f"suite-{name}")
    (suite / "integration-tests-config.json").write_text(json.dumps(overrides))
    if name == "A":
        backend = "db+" + url
    else:
        backend = "tasklane.results.TaskTableBackend"
        engine = create_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
    env = (
        os.environ
        | FAKE_CREDENTIALS
        | {
            "TEST_BROKER": "sqs://",
            "TEST_BACKEND": backend,
            "TASKLANE_COMPAT_CONFIG": name,
            "AWS_ENDPOINT_URL_SQS": moto.endpoint,
            "DATABASE_URL": url,
            "CELERY_QUEUE_URL": urls["CeleryQueue"],
            "CELERY_DLQ_URL": urls["CeleryDeadLetterQueue"],
            "LAMBDA_QUEUE_URL": urls["LambdaQueue"],
            "LAMBDA_DLQ_URL": urls["LambdaDeadLetterQueue"],
            # This tree's tasklane, not whichever the virtualenv's editable install names.
            "PYTHONPATH": os.pathsep.join(
                [str(suite), str(ROOT), str(ROOT / "layers" / "tasklane")]
            ),
            "PYTHONUNBUFFERED": "1",
        }
    )
    report = out / f"junit-{name}.xml"
    command = [
        *(sys.executable, "-m", "pytest", *FILES),
        *(
            "-p",
            "celery.contrib.pytest",
            "-p",
            "compat.plugin",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:rerunfailures",
        ),
        *(
            "--timeout",
            str(TEST_TIMEOUT_S),
            "--junitxml",
            str(report),
            "-q",
            "-rN",
            "--durations",
            "15",
        ),
    ]
    if keyword:
        command += ["-k", keyword]
    command += extra
    started = time.monotonic()
    with open(out / f"pytest-{name}.log", "w") as log:
        subprocess.run(command, cwd=suite, env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f"  {name}: {time.monotonic() - started:.0f} s", flush=True)
    return read_junit(report)


def read_junit(report: Path) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    if not report.exists():
        return outcomes
    for case in ET.parse(report).getroot().iter("testcase"):
        test = f"{case.get('classname', '').removeprefix('t.integration.')}::{case.get('name')}"
        seconds = float(case.get("time") or 0)
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                message = (node.get("message") or node.text or "").strip().splitlines()
                reason = message[0][:300] if message else ""
                outcome = (
                    "skipped" if kind == "skipped" else ("error" if kind == "error" else "failed")
                )
                outcomes[test] = Outcome(outcome, reason, seconds)
                break
        else:
            outcomes[test] = Outcome("passed", "", seconds)
    return outcomes


def summarize(results: dict[str, dict[str, Outcome]]) -> dict:
    baseline = {t for t, o in results.get("A", {}).items() if o.outcome == "passed"}
    summary: dict = {"baseline": len(baseline), "configs": {}}
    for name, outcomes in results.items():
        passed = {t for t, o in outcomes.items() if o.outcome == "passed"}
        missing = sorted(baseline - passed)
        summary["configs"][name] = {
            "what": CONFIGS[name],
            "passed": len(passed),
            "of_baseline": len(baseline & passed),
            "ratio": round(len(baseline & passed) / len(baseline), 3) if baseline else None,
            "not_passing": {
                t: {
                    "outcome": outcomes[t].outcome if t in outcomes else "not run",
                    "reason": outcomes[t].reason if t in outcomes else "",
                }
                for t in missing
            },
        }
    return summary


def table(summary: dict) -> str:
    """The passes per configuration, as docs/celery.md shows them."""
    lines = [
        f"Celery {version('celery')}, `t/integration/test_tasks.py` and `test_canvas.py`, "
        f"one run of `make celery-compat`. The baseline: the {summary['baseline']} tests stock "
        "Celery passes on SQS (A).",
        "",
        "| configuration | passes | of A's passes |",
        "|---|---:|---:|",
    ]
    for name, config in summary["configs"].items():
        ratio = f" ({config['ratio']:.1%})" if config["ratio"] is not None else ""
        lines.append(
            f"| {name}: {config['what']} | {config['passed']} | {config['of_baseline']}{ratio} |"
        )
    return "\n".join(lines) + "\n"


def differences(summary: dict) -> str:
    """Each test A passes that B or C does not: what pytest said, and why (``KNOWN``)."""
    lines = ["| configuration | test | outcome | why |", "|---|---|---|---|"]
    for name, config in summary["configs"].items():
        for test, seen in config["not_passing"].items():
            why = KNOWN.get(test) or f"not yet explained: {seen['reason']}"
            why = why.replace("|", "\\|")
            lines.append(f"| {name} | `{test}` | {seen['outcome']} | {why} |")
    if len(lines) == 2:
        lines.append("| | none | | |")
    return "\n".join(lines) + "\n"


#: Why a test stock Celery passes cannot pass with tasklane (the docs name each).
KNOWN: dict[str, str] = {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compat", description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("-k", dest="keyword", help="pytest's -k: run a subset of the suite")
    parser.add_argument("--pytest", action="append", default=[], help="one argument for pytest")
    parser.add_argument("--out", type=Path, default=WORK / "run", help="logs and results")
    parser.add_argument("--markdown", type=Path, help="write the table for the docs here")
    parser.add_argument(
        "--min-ratio", type=float, default=0.0, help="exit 1 if B or C passes less of A's passes"
    )
    parser.add_argument(
        "--render", action="store_true", help="only write the tables again, from --out's results"
    )
    args = parser.parse_args(argv)
    if args.render:
        summary = json.loads((args.out / "results.json").read_text())["summary"]
        return report(summary, args)

    from tasklane.local.postgres import LocalPostgres, free_port
    from tasklane.local.sqs import FAKE_CREDENTIALS

    os.environ.update(FAKE_CREDENTIALS)
    from tasklane.local.sqs import MotoServer

    suite = fetch_suite()
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    data = Path(tempfile.mkdtemp(prefix="tasklane-compat-pg-"))
    pg = LocalPostgres(data, free_port(), durable=False).start()
    moto = MotoServer(free_port()).start()
    results: dict[str, dict[str, Outcome]] = {}
    try:
        print(f"Celery {version('celery')}'s integration suite, logs in {out}", flush=True)
        for name in args.configs:
            results[name] = run_config(name, suite, pg, moto, args.keyword, out, args.pytest)
    finally:
        moto.stop()
        pg.stop(mode="immediate")
        shutil.rmtree(data, ignore_errors=True)

    summary = summarize(results)
    (out / "results.json").write_text(
        json.dumps(
            {
                "summary": summary,
                "tests": {n: {t: vars(o) for t, o in r.items()} for n, r in results.items()},
            },
            indent=2,
        )
    )
    return report(summary, args)


def report(summary: dict, args: argparse.Namespace) -> int:
    """Print the tables (and write them for the docs); 1 if B or C passes too few."""
    print(table(summary))
    print(differences(summary))
    if args.markdown:
        args.markdown.write_text(table(summary))
        args.markdown.with_name(f"{args.markdown.stem}-differences.md").write_text(
            differences(summary)
        )
    short = [
        n
        for n, c in summary["configs"].items()
        if n != "A" and c["ratio"] is not None and c["ratio"] < args.min_ratio
    ]
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
