"""``tasklane``: run the local stack, invoke functions, manage the schema, look at tasks."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from tasklane.errors import TasklaneError

console = Console()
err = Console(stderr=True)
STATUS_STYLE = {
    "waiting": "dim",
    "pending": "yellow",
    "scheduled": "magenta",
    "cancelled": "dim",
    "queued": "cyan",
    "running": "blue",
    "succeeded": "green",
    "failed": "red",
}


def _use_local_stack(data_dir: Path) -> dict | None:
    """Point the commands at a running ``tasklane dev``: its database and its SQS endpoint."""
    from tasklane.local.stack import read_state

    state = read_state(data_dir)
    if state:
        os.environ["DATABASE_URL"] = state["database_url"]
        os.environ["AWS_ENDPOINT_URL_SQS"] = state["sqs_endpoint"]
    return state


def _age(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def cmd_dev(args: argparse.Namespace) -> int:
    from tasklane.local import logstream
    from tasklane.local.stack import LocalStack, Options, banner

    compact = args.log_format == "compact" or (
        args.log_format == "auto" and sys.__stdout__.isatty()
    )
    logstream.install(compact)
    options = Options(
        template=args.template,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        postgres_port=args.postgres_port,
        parameters=dict(p.split("=", 1) for p in args.parameter_overrides),
        celery_worker=not args.no_worker,
        worker_concurrency=args.worker_concurrency,
        reload=args.reload,
    )
    stack = LocalStack(options).start()
    logstream.set_part("stack")
    print("tasklane local stack is up\n" + banner(stack))
    stack.wait()
    return 0


def _invoke(args: argparse.Namespace, function: str, event: dict) -> Any:
    """Run one function of the template here, as the local stack runs it: its environment from
    the template, its references resolved to the running stack's resources (a stack's template
    and ``--parameter-overrides`` are the defaults)."""
    from tasklane.local.events import LambdaContext
    from tasklane.local.functions import load_handler
    from tasklane.local.template import Template

    state = _use_local_stack(args.data_dir) or {}
    overrides = dict(p.split("=", 1) for p in getattr(args, "parameter_overrides", None) or [])
    template = Template.load(
        getattr(args, "template", None) or Path(state.get("template", "template.yaml")),
        state.get("parameters", {}) | overrides,
    )
    fn = template.function(function)
    refs = _local_refs(args.data_dir)
    for key, value in fn.environment.items():
        # the shell may override plain values; a running stack's resources always win
        if key in os.environ and (isinstance(value, str) or not state):
            continue
        try:
            resolved = template.resolve(value, refs)
        except TasklaneError:
            continue  # an AWS-only resource; the local stack's DATABASE_URL stands in
        os.environ[key] = str(resolved)
    from tasklane.local.stack import LOCAL_ENVIRONMENT

    os.environ.update({k: v for k, v in LOCAL_ENVIRONMENT.items() if k in fn.environment})
    sys.path.extend(p for p in template.layer_paths() if p not in sys.path)  # /opt/python
    handler = load_handler(fn.code_uri, fn.handler, fn.logical_id)
    context = LambdaContext(
        function_name=fn.logical_id, timeout_seconds=fn.timeout, memory_limit_in_mb=fn.memory
    )
    return handler(event, context)


def cmd_invoke(args: argparse.Namespace) -> int:
    event = json.loads(Path(args.event).read_text()) if args.event else {}
    print(json.dumps(_invoke(args, args.function, event), indent=2, default=str))
    return 0


def _local_refs(data_dir: Path) -> dict[str, Any]:
    """Queue logical ids → URLs/ARNs/names of a running local stack (empty when none runs)."""
    from tasklane.local.stack import queue_refs, read_state

    state = read_state(data_dir) or {}
    if state.get("sqs_endpoint"):
        from tasklane.local.sqs import FAKE_CREDENTIALS

        for key, value in FAKE_CREDENTIALS.items():
            os.environ.setdefault(key, value)
    refs: dict[str, Any] = {}
    for logical_id, url in (state.get("queues") or {}).items():
        refs |= queue_refs(logical_id, url)
    return refs


def cmd_migrate(args: argparse.Namespace) -> int:
    from tasklane import migrate

    _use_local_stack(args.data_dir)
    migrate.upgrade()
    console.print("[green]schema is current[/green]")
    return 0


def _api(args: argparse.Namespace) -> Any:
    """The API the commands call: ``--api`` (a deployed stack; SigV4 or ``--token``), or the
    running ``tasklane dev``."""
    from tasklane.cli.remote import Api
    from tasklane.local.stack import read_state

    url = args.api or (read_state(args.data_dir) or {}).get("api")
    if not url:
        raise TasklaneError("no --api URL, and no `tasklane dev` running here (--data-dir)")
    return Api.to(url, args.token)


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def cmd_tasks(args: argparse.Namespace) -> int:
    """Newest first; more than one page (500) is fetched page by page, with progress. With
    ``--watch``, the table is fetched again every few seconds until Ctrl-C."""
    api = _api(args)
    if not args.watch:
        console.print(_tasks_table(_fetch_tasks(api, args, progress=True)))
        return 0
    from rich.live import Live

    try:
        with Live(console=console, auto_refresh=False) as live:
            while True:
                table = _tasks_table(_fetch_tasks(api, args, progress=False))
                table.caption = f"every {args.watch:g} s, updated {datetime.now():%H:%M:%S}"
                live.update(table, refresh=True)
                time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def _fetch_tasks(api: Any, args: argparse.Namespace, progress: bool) -> list[dict]:
    from rich.progress import Progress

    query = {"status": args.status, "task": args.task, "lane": args.lane}
    found: list[dict] = []
    cursor = None
    with Progress(transient=True, console=err, disable=not progress) as shown:
        fetching = shown.add_task("fetching tasks", total=args.limit)
        while len(found) < args.limit:
            size = min(500, args.limit - len(found))
            page = api.request("GET", "/tasks", query=query | {"limit": size, "cursor": cursor})
            found += page["tasks"]
            shown.update(fetching, completed=len(found))
            cursor = page["next_cursor"]
            if cursor is None:
                break
    return found


def _tasks_table(found: list[dict]) -> Table:
    table = Table(title=f"{len(found)} most recent tasks", title_justify="left")
    # an id is never cut (a cut one answers 404), nor a status: a long task name folds
    table.add_column("id", no_wrap=True, min_width=36)
    table.add_column("task", overflow="fold")
    table.add_column("lane", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("age", justify="right", no_wrap=True)
    for task in found:
        style = STATUS_STYLE.get(task["status"], "")
        waiting = task["status"] == "queued" and task.get("retry_at")
        table.add_row(
            task["id"],
            task["task"],
            task["lane"],
            f"[{style}]{task['status']}[/{style}]"
            + (" (retrying)" if waiting else "")
            + (f" ({task['waiting_on']})" if task.get("waiting_on") else ""),
            str(task["attempts"]),
            _age(_moment(task["created_at"])),
        )
    return table


def _print_task(task: dict) -> None:
    """A task as ``show`` and ``submit --wait`` print it: its state, times, input (when read
    with it), result, and error with its traceback."""
    style = STATUS_STYLE.get(task["status"], "")
    console.print(
        f"[bold]{task['id']}[/bold]  {task['task']} ({task['lane']} lane)  "
        f"[{style}]{task['status']}[/{style}]  attempts {task['attempts']}"
    )
    times = [f"created {_age(_moment(task['created_at']))} ago"]
    started, finished = _moment(task.get("started_at")), _moment(task.get("finished_at"))
    if started:
        times.append(f"started {_age(started)} ago")
    if started and finished:
        times.append(f"ran {(finished - started).total_seconds():.3f} s")
    if task.get("run_at"):
        times.append(f"run at {task['run_at']}")
    if task.get("workflow_id"):
        times.append(f"workflow {task['workflow_id']}")
    console.print("  ".join(times), style="dim")
    if task.get("retry_at") and task["status"] == "queued":
        console.print(f"[yellow]waiting to retry: due again {task['retry_at']}[/yellow]")
    if task.get("waiting_on"):
        console.print(f"[yellow]waiting: {task['waiting_on']}[/yellow]")
    if task.get("unique_key"):
        console.print(f"unique key {task['unique_key']}", style="dim")
    if history := task.get("history"):
        _print_history(history)
    if "payload" in task:
        _print_input(task)
    if task.get("result") is not None:
        console.print("[bold]result[/bold]")
        console.print_json(json.dumps(task["result"]))
    if error := task.get("error"):
        if error.get("traceback"):
            console.print(error["traceback"].rstrip(), style="red", markup=False, highlight=False)
        console.print(f"[red]{error.get('type')}: {error.get('message')}[/red]")


def _print_history(history: list[dict]) -> None:
    table = Table(title="attempts", title_justify="left", box=None, pad_edge=False)
    for column in ("#", "outcome", "started", "took", "error", "ran on"):
        table.add_column(column, overflow="fold")
    for entry in history:
        started, finished = _moment(entry.get("started_at")), _moment(entry.get("finished_at"))
        took = f"{(finished - started).total_seconds():.3f} s" if started and finished else "-"
        error = entry.get("error") or {}
        style = STATUS_STYLE.get(entry["outcome"], "yellow")
        table.add_row(
            str(entry["attempt"]),
            f"[{style}]{entry['outcome']}[/{style}]",
            entry.get("started_at") or "-",
            took,
            f"{error.get('type')}: {error.get('message')}" if error else "",
            entry.get("ran_on") or "",
        )
    console.print(table)


def _print_input(task: dict) -> None:
    if task.get("payload_pruned"):
        console.print("[bold]input[/bold] [dim](pruned)[/dim]")
    elif task.get("payload_truncated"):
        console.print(
            f"[bold]input[/bold] [dim](the first {len(task['payload']):,} of "
            f"{task['payload_chars']:,} characters)[/dim]"
        )
        console.print(task["payload"], markup=False, highlight=False)
    else:
        console.print("[bold]input[/bold]")
        console.print_json(json.dumps(task["payload"]))


def cmd_show(args: argparse.Namespace) -> int:
    query = {"include": None if args.no_input else "payload"}
    _print_task(_api(args).request("GET", f"/tasks/{args.id}", query=query))
    return 0


def cmd_workflow(args: argparse.Namespace) -> int:
    """A workflow: its status, result or the error that failed it, and its tasks in the order
    of its description (every page of them)."""
    api = _api(args)
    body = api.request("GET", f"/workflows/{args.id}")
    tasks = list(body["tasks"])
    while body.get("next_cursor"):
        body = api.request("GET", f"/workflows/{args.id}", query={"cursor": body["next_cursor"]})
        tasks += body["tasks"]
    style = STATUS_STYLE.get(body["status"], "")
    console.print(
        f"[bold]workflow {body['id']}[/bold]  [{style}]{body['status']}[/{style}]  "
        f"{len(tasks)} tasks, created {_age(_moment(body['created_at']))} ago"
    )
    table = Table(box=None, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("id", no_wrap=True, min_width=36)
    table.add_column("task", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("after", overflow="fold")  # the steps it waits for: the graph
    number_of = {task["id"]: number for number, task in enumerate(tasks, 1)}
    for number, task in enumerate(tasks, 1):
        task_style = STATUS_STYLE.get(task["status"], "")
        table.add_row(
            str(number),
            task["id"],
            task["task"],
            f"[{task_style}]{task['status']}[/{task_style}]",
            ", ".join(f"#{number_of.get(i, '?')}" for i in task.get("after", [])) or "-",
        )
    console.print(table)
    if error := body.get("error"):
        console.print(
            f"[red]failed by {error['task']} {error['task_id']}: "
            f"{error.get('type')}: {error.get('message')}[/red]"
        )
    elif body.get("result_omitted"):
        console.print(f"[dim]result left out: {body['result_omitted']}[/dim]")
    elif body["status"] == "succeeded":
        console.print("[bold]result[/bold]")
        console.print_json(json.dumps(body["result"]))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    raw = Path(args.payload[1:]).read_text() if args.payload.startswith("@") else args.payload
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise TasklaneError(f"--payload is not JSON: {exc}") from None
    request: dict = {"task": args.name, "payload": payload}
    if args.countdown is not None:
        request["delay_seconds"] = args.countdown
    if args.eta is not None:
        request["run_at"] = args.eta
    if args.unique_key is not None:
        request["unique_key"] = args.unique_key
    if args.unique_for is not None:
        request["unique_for"] = args.unique_for
    if args.ordering_key is not None:
        request["ordering_key"] = args.ordering_key
    if args.priority is not None:
        request["priority"] = args.priority
    key = {"idempotency-key": args.idempotency_key} if args.idempotency_key else None
    api = _api(args)
    status, body = api.answer("POST", "/tasks", request, headers=key)
    said = "submitted" if status == 202 else "existing"
    console.print(f"{said} [bold]{body['id']}[/bold] ({body['lane']} lane, {body['status']})")
    if status != 202:
        console.print("(the live task with this unique key, or this Idempotency-Key's task)")
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    with console.status("waiting…") as spinner:
        while time.monotonic() < deadline:
            task = api.request("GET", f"/tasks/{body['id']}")
            spinner.update(f"{task['status']} (attempt {task['attempts']})…")
            if task["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.3)
    _print_task(task)
    return 0 if task["status"] == "succeeded" else 1


def cmd_retry(args: argparse.Namespace) -> int:
    """One failed task by id, or (``--failed``) every failed task matching, 1,000 a call."""
    from rich.progress import Progress

    api = _api(args)
    if args.id:
        task = api.request("POST", f"/tasks/{args.id}/retry")
        console.print(f"{task['id']} is {task['status']} again")
        return 0
    if not args.failed:
        raise TasklaneError("give a task id, or --failed (with --task, --lane) to retry in bulk")
    body = {"task": args.task, "lane": args.lane}
    retried = 0
    with Progress(transient=True, console=err) as progress:
        going = progress.add_task("retrying failed tasks", total=None)
        while True:
            answer = api.request("POST", "/tasks/retry", {k: v for k, v in body.items() if v})
            retried += len(answer["retried"])
            progress.update(going, completed=retried)
            if not answer["more"]:
                break
    console.print(f"{retried} failed tasks queued again")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    task = _api(args).request("POST", f"/tasks/{args.id}/cancel")
    asked = task["status"] == "running"
    console.print(f"{task['id']} is {task['status']}" + (" (asked to stop)" if asked else ""))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    stats = _api(args).request("GET", "/stats")
    lanes = ("lambda", "celery")
    table = Table(title="tasks", title_justify="left")
    table.add_column("status")
    for lane in lanes:
        table.add_column(lane, justify="right")
    for status, by_lane in sorted(stats["counts"].items()):
        style = STATUS_STYLE.get(status, "")
        table.add_row(
            f"[{style}]{status}[/{style}]", *(str(by_lane.get(lane, 0)) for lane in lanes)
        )
    console.print(table)
    queues = Table(title="queues", title_justify="left")
    for column in ("lane", "waiting", "high priority", "dead letters", "oldest queued"):
        queues.add_column(column, justify="left" if column == "lane" else "right")
    depths, oldest = stats["queue_depths"], stats["oldest_queued_seconds"]
    for lane in lanes:
        age = oldest.get(lane)
        queues.add_row(
            lane,
            str(depths.get(lane, "-")),
            str(depths.get(f"{lane}_high", "-")),
            str(depths.get(f"{lane}_dlq", "-")),
            f"{age:.0f} s" if age is not None else "-",
        )
    console.print(queues)
    minutes = stats["finished_per_minute"]
    done = sum(m["succeeded"] for m in minutes)
    failed = sum(m["failed"] for m in minutes)
    console.print(f"last 15 minutes: {done} succeeded, {failed} failed")
    _print_by_task(_api(args).request("GET", "/stats/tasks", query={"window": args.window}))
    return 0


def _print_by_task(figures: dict) -> None:
    window = timedelta(seconds=figures["window_seconds"])
    table = Table(title=f"by task, last {window}", title_justify="left")
    for column in ("task", "created", "finished", "failed", "p50", "p95"):
        table.add_column(column, justify="left" if column == "task" else "right")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"

    for row in figures["tasks"]:
        rate = row["failure_rate"]
        table.add_row(
            row["task"],
            str(sum(row["counts"].values())),
            str(row["finished"]),
            "-" if rate is None else f"{rate:.0%}",
            ms(row["runtime_p50_ms"]),
            ms(row["runtime_p95_ms"]),
        )
    console.print(table)


def cmd_workers(args: argparse.Namespace) -> int:
    """The Celery workers heard of lately, what each runs, and each lane's running tasks."""
    view = _api(args).request("GET", "/workers")
    table = Table(title="celery workers", title_justify="left")
    for column in ("name", "pid", "queues", "concurrency", "running", "last seen", "up"):
        table.add_column(column, justify="right" if column in ("pid", "concurrency") else "left")
    for worker in view["workers"]:
        seen = f"{worker['seen_seconds_ago']:.0f} s ago"
        table.add_row(
            worker["name"],
            str(worker["pid"]),
            ", ".join(worker["queues"]),
            str(worker["concurrency"] or "-"),
            "\n".join(worker["active"]) or "-",
            seen if worker["alive"] else f"[red]{seen} (gone?)[/red]",
            _age(_moment(worker["started_at"])),
        )
    console.print(table)
    running = ", ".join(f"{lane} {n}" for lane, n in view["running"].items())
    console.print(f"running now: {running or 'not shown (operators only)'}")
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    """The console's URL: the API's own ``/console`` when a browser can reach it as it is (a
    local stack), else a local proxy that signs each request (IAM) or adds ``--token`` (JWT)."""
    import time

    from tasklane.cli.proxy import serve

    api = _api(args)
    if not (api.sign or api.token):
        console.print(f"console: [bold]{api.url}/console[/bold]")
        return 0
    server = serve(api, args.port)
    how = "signed with your AWS credentials" if api.sign else "with your token"
    console.print(
        f"console: [bold]http://127.0.0.1:{server.server_address[1]}/console[/bold]\n"
        f"  a local proxy to {api.url}, every request {how}; Ctrl-C stops it"
    )
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()


def cmd_schedules(args: argparse.Namespace) -> int:
    from tasklane import periodic, registry
    from tasklane.store import default_store

    _use_local_stack(args.data_dir)
    now = datetime.now(UTC)
    fired = {row.name: row.last_tick for row in default_store().schedules()}
    table = Table("task", "schedule", "payload", "last tick fired", "next tick")
    for spec in registry.all_tasks():
        if spec.schedule is None:
            continue
        after = max(now, fired.get(spec.name, now))
        upcoming = periodic.ticks(spec.schedule.expression, after, after + timedelta(days=366))
        table.add_row(
            spec.name,
            spec.schedule.expression + (" (catch up)" if spec.schedule.catch_up else ""),
            json.dumps(spec.schedule.payload),
            str(fired.get(spec.name, "-")),
            str(upcoming[0]) if upcoming else "-",
        )
    console.print(table)
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    result = _invoke(args, "ReconcilerFunction", {})
    console.print(f"sent {len(result['resent'])} of {result['found']} tasks due or left behind")
    return 0


def _duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    try:
        amount, unit = int(text[:-1]), units[text[-1]]
    except (ValueError, KeyError, IndexError):
        raise argparse.ArgumentTypeError(f"{text!r}: a number and d, h or m (30d)") from None
    if amount <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: more than nothing")
    return timedelta(**{unit: amount})


def cmd_prune(args: argparse.Namespace) -> int:
    from tasklane import reconciler

    _use_local_stack(args.data_dir)
    counts = reconciler.prune(args.older_than, args.payloads_older_than, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    console.print(
        f"{verb} {counts['tasks']} finished tasks, {counts['workflows']} workflows, and "
        f"{counts['payloads']} payloads of succeeded tasks"
    )
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from tasklane.cli.scaffold import scaffold

    target = scaffold(args.directory, args.name)
    console.print(f"created [bold]{target}[/bold]: cd into it, then `make test` or `make dev`")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Exports for Python code against the running ``tasklane dev`` (``eval "$(tasklane
    env)"``): without them ``.delay()`` cannot reach its SQS and the task stays pending."""
    import shlex

    from tasklane.local.stack import read_state

    state = read_state(args.data_dir)
    if not state or "client_env" not in state:
        raise TasklaneError(f"no `tasklane dev` running here (--data-dir {args.data_dir})")
    for name, value in sorted(state["client_env"].items()):
        print(f"export {name}={shlex.quote(value)}")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from tasklane import api

    document = api.openapi_json()
    if args.output:
        Path(args.output).write_text(document + "\n")
        console.print(f"wrote {args.output}")
    else:
        print(document)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="tasklane", description=__doc__)
    top.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".tasklane"),
        help="where the local stack keeps its state (default .tasklane)",
    )
    top.add_argument(
        "--api",
        default=os.environ.get("TASKLANE_API"),
        help="a deployed stack's API URL (default $TASKLANE_API, else the running tasklane "
        "dev); requests are signed with SigV4 from your AWS credentials",
    )
    top.add_argument(
        "--token",
        default=os.environ.get("TASKLANE_TOKEN"),
        help="a bearer token for a JWT-authorized API (default $TASKLANE_TOKEN)",
    )
    sub = top.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run the whole pipeline locally (no Docker, no AWS)")
    dev.add_argument("--template", type=Path, default=Path("template.yaml"))
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000, help="HTTP API port (default 3000)")
    dev.add_argument("--postgres-port", type=int, default=54329)
    dev.add_argument("--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    dev.add_argument("--no-worker", action="store_true", help="do not start a celery worker")
    dev.add_argument("--worker-concurrency", type=int, default=2)
    dev.add_argument(
        "--reload",
        action="store_true",
        help="restart the functions and the celery worker when a Python file changes",
    )
    dev.add_argument(
        "--log-format",
        choices=["auto", "compact", "json"],
        default="auto",
        help="compact lines for a terminal, JSON for a machine (auto: compact on a terminal)",
    )
    dev.set_defaults(run=cmd_dev)

    invoke = sub.add_parser("invoke", help="invoke one function of template.yaml with an event")
    invoke.add_argument("function", help="the function's logical id, e.g. ConsumerFunction")
    invoke.add_argument("--event", "-e", help="a JSON event file (events/)")
    invoke.add_argument(
        "--template", type=Path, help="default: the running stack's, or template.yaml"
    )
    invoke.add_argument("--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    invoke.set_defaults(run=cmd_invoke)

    init = sub.add_parser("init", help="scaffold a new application in tasklane's layout")
    init.add_argument("directory", type=Path)
    init.add_argument("--name", help="its Python package (default: from the directory's name)")
    init.set_defaults(run=cmd_init)
    sub.add_parser("migrate", help="create or upgrade the schema").set_defaults(run=cmd_migrate)

    tasks = sub.add_parser("tasks", help="list recent tasks (newest first)")
    tasks.add_argument("--limit", type=int, default=20)
    tasks.add_argument("--status", choices=list(STATUS_STYLE))
    tasks.add_argument("--task", help="only this task name")
    tasks.add_argument("--lane", choices=["lambda", "celery"])
    tasks.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=2.0,
        default=None,
        metavar="SECONDS",
        help="fetch it again every SECONDS (2) until Ctrl-C",
    )
    tasks.set_defaults(run=cmd_tasks)

    show = sub.add_parser("show", help="show one task: its input, result or error (traceback)")
    show.add_argument("id")
    show.add_argument("--no-input", action="store_true", help="leave the task's input out")
    show.set_defaults(run=cmd_show)

    sub.add_parser(
        "workers", help="celery workers alive, what each runs; each lane's running tasks"
    ).set_defaults(run=cmd_workers)
    workflow = sub.add_parser("workflow", help="show one workflow: its tasks and result")
    workflow.add_argument("id")
    workflow.set_defaults(run=cmd_workflow)

    submit = sub.add_parser("submit", help="submit a task through the HTTP API")
    submit.add_argument("name")
    submit.add_argument("--payload", default="{}", help="JSON, or @file (default: {})")
    submit.add_argument(
        "--countdown",
        "--delay-seconds",
        type=float,
        help="run it this many seconds from now (Python's countdown, the API's delay_seconds)",
    )
    submit.add_argument(
        "--eta",
        "--run-at",
        help="run it at this ISO 8601 moment (Python's eta, the API's run_at)",
    )
    submit.add_argument("--idempotency-key", help="the API's Idempotency-Key header")
    submit.add_argument(
        "--unique-key", help="while a task of this name and key is live, get it instead"
    )
    submit.add_argument(
        "--unique-for", type=float, help="seconds after creation the unique key stays taken"
    )
    submit.add_argument("--ordering-key", help="its key's tasks run one at a time, in order")
    submit.add_argument(
        "--priority",
        type=int,
        choices=range(10),
        metavar="0-9",
        help="0 to 9, the higher the sooner (5 and up: the lane's high-priority queue)",
    )
    submit.add_argument("--wait", action="store_true", help="wait until the task ends")
    submit.add_argument("--timeout", type=float, default=300)
    submit.set_defaults(run=cmd_submit)

    retry = sub.add_parser("retry", help="re-queue a failed task, or every failed one matching")
    retry.add_argument("id", nargs="?")
    retry.add_argument("--failed", action="store_true", help="every failed task matching")
    retry.add_argument("--task", help="with --failed: only this task name")
    retry.add_argument("--lane", choices=["lambda", "celery"])
    retry.set_defaults(run=cmd_retry)
    stats = sub.add_parser("stats", help="counts, backlog, completions, queue depths, by task")
    stats.add_argument(
        "--window", type=int, default=3600, help="seconds the per-task figures cover (3600)"
    )
    stats.set_defaults(run=cmd_stats)
    cancel = sub.add_parser("cancel", help="cancel a task (a running one is asked to stop)")
    cancel.add_argument("id")
    cancel.set_defaults(run=cmd_cancel)
    console_cmd = sub.add_parser(
        "console", help="open the web console (through a signing proxy for a deployed API)"
    )
    console_cmd.add_argument("--port", type=int, default=8765, help="the proxy's port")
    console_cmd.set_defaults(run=cmd_console)
    sub.add_parser("schedules", help="periodic tasks and their next tick").set_defaults(
        run=cmd_schedules
    )

    sub.add_parser(
        "env", help="print the exports Python code needs to use the running `tasklane dev`"
    ).set_defaults(run=cmd_env)
    openapi = sub.add_parser("openapi", help="print (or write) the API's OpenAPI document")
    openapi.add_argument("--output", "-o", help="a file to write, e.g. openapi.json")
    openapi.set_defaults(run=cmd_openapi)

    prune = sub.add_parser(
        "prune", help="delete old finished tasks and old payloads (never an unfinished task)"
    )
    prune.add_argument(
        "--older-than", type=_duration, help="finished before this (default: RETENTION_DAYS, 30d)"
    )
    prune.add_argument(
        "--payloads-older-than",
        type=_duration,
        help="drop succeeded tasks' payloads finished before this (default: 7d)",
    )
    prune.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    prune.set_defaults(run=cmd_prune)

    reconcile = sub.add_parser(
        "reconcile", help="run the reconciler once: send tasks due, re-send tasks left behind"
    )
    reconcile.set_defaults(run=cmd_reconcile)
    return top


def main(argv: list[str] | None = None) -> int:
    from tasklane import logs

    logs.serve()  # the CLI is tasklane at work (the local stack, a prune): it says what it does
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except TasklaneError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
