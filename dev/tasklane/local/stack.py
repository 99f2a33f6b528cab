"""``tasklane dev``: the whole application of ``template.yaml`` on one machine, no Docker, no AWS.

- Postgres: a cluster under ``.tasklane/postgres`` (kept across restarts), or ``DATABASE_URL``;
  migrations applied.
- SQS: moto's server on loopback, or ``AWS_ENDPOINT_URL_SQS``; every ``AWS::SQS::Queue`` of the
  template created with its attributes and redrive policy.
- The HTTP API: every ``HttpApi`` event of the template's functions, served on
  ``http://127.0.0.1:3000``; each request becomes a payload-format-2.0 event for the function.
- Every ``SQS`` event becomes an emulated event source mapping; every ``Schedule``/``ScheduleV2``
  event a timer.
- A real ``celery worker`` process on the celery lane's queue.

Functions run in this process, in their own threads, with their template environment (Globals and
their own, ``!Ref``/``!GetAtt`` of queues resolved to the local ones) and a Lambda context.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasklane.errors import ConfigurationError
from tasklane.local import logstream
from tasklane.local.events import (
    queue_arn,
)
from tasklane.local.eventsource import SqsEventSource
from tasklane.local.httpapi import HttpApi
from tasklane.local.postgres import LocalPostgres, free_port, port_is_free
from tasklane.local.runtime import FunctionPool
from tasklane.local.schedules import schedules_of
from tasklane.local.sqs import FAKE_CREDENTIALS, MotoServer, QueueSpec, create_queues
from tasklane.local.template import Function, Template
from tasklane.logs import logger

STATE_FILE = "stack.json"
#: What differs locally from the template's environment: the local HTTP API has no
#: authorizer, so its callers are one local owner who operates it (tasklane.callers.LOCAL).
LOCAL_ENVIRONMENT = {"API_AUTHORIZATION": "NONE"}
QUEUE_ATTRIBUTES = (
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "DelaySeconds",
    "MaximumMessageSize",
    "ReceiveMessageWaitTimeSeconds",
)


@dataclass
class Options:
    template: Path = Path("template.yaml")
    host: str = "127.0.0.1"
    port: int = 3000
    data_dir: Path = Path(".tasklane")
    postgres_port: int = 54329
    sqs_port: int | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    celery_worker: bool = True
    worker_concurrency: int = 2
    #: Restart the functions and the Celery worker when a Python file of the project changes.
    reload: bool = False


class LocalStack:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.template = Template.load(options.template, options.parameters)
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.processes: list[subprocess.Popen] = []
        self.sources: list[SqsEventSource] = []
        self.refs: dict[str, Any] = {}
        self.handlers: dict[str, FunctionPool] = {}
        self.environments: dict[str, dict[str, str]] = {}
        self.functions: dict[str, Function] = {}
        self.postgres: LocalPostgres | None = None
        self.moto: MotoServer | None = None
        self.api: HttpApi | None = None
        self.database_url = ""
        self.sqs_endpoint = ""
        self.celery_queue: str | None = None

    # -- start --------------------------------------------------------------------------------
    def start(self) -> LocalStack:
        if not port_is_free(self.options.port, self.options.host):
            raise ConfigurationError(
                f"port {self.options.port} is taken: stop what uses it (another `tasklane dev`?) "
                "or pass --port"
            )
        self.options.data_dir.mkdir(parents=True, exist_ok=True)
        logstream.set_part("stack")
        if threading.current_thread() is threading.main_thread():
            # Ctrl-C must stop the stack even when SIGINT was inherited as ignored (a background
            # job of a script): Python installs no KeyboardInterrupt handler then.
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self._start_database()
            self._start_sqs()
            self._load_functions()
            self.api = HttpApi(self.functions, self.handlers).serve(
                self.options.host, self.options.port, self.threads
            )
            self._start_event_sources()
            self._start_schedules()
            if self.options.celery_worker:
                self._start_worker()
            if self.options.reload:
                self._thread("reload", "reload", self._watch, self.stop_event)
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_database(self) -> None:
        from sqlalchemy import create_engine
        from tasklane import migrate

        if url := os.environ.get("DATABASE_URL"):
            self.database_url = url
        else:
            data = (self.options.data_dir / "postgres").resolve()
            port = self.options.postgres_port
            cluster = LocalPostgres(data, port)
            if not cluster.running and not port_is_free(port):
                raise ConfigurationError(
                    f"port {port} is taken, and Postgres listens there: stop what uses it "
                    "(another `tasklane dev`?) or pass --postgres-port"
                )
            self.postgres = cluster.start()
            self.postgres.create_database("tasklane")
            self.database_url = self.postgres.url("tasklane")
        engine = create_engine(self.database_url)
        try:
            migrate.upgrade(engine)
        finally:
            engine.dispose()
        logger.info("postgres ready, schema migrated", extra={"url": self.database_url})

    def _start_sqs(self) -> None:
        import boto3

        for key, value in FAKE_CREDENTIALS.items():
            os.environ.setdefault(key, value)
        if endpoint := os.environ.get("AWS_ENDPOINT_URL_SQS"):
            self.sqs_endpoint = endpoint
        else:
            self.moto = MotoServer(self.options.sqs_port or free_port())
            self.moto.start(log=subprocess.PIPE)
            assert self.moto.process is not None
            # moto logs every request; only its errors are worth a line
            quiet = re.compile(r'" (200|201|204) -$')
            self.threads.append(logstream.pipe(self.moto.process, "sqs", quiet))
            self.sqs_endpoint = self.moto.endpoint
            os.environ["AWS_ENDPOINT_URL_SQS"] = self.sqs_endpoint
        self.sqs = boto3.client("sqs", endpoint_url=self.sqs_endpoint)
        specs = [
            self._queue_spec(lid, res) for lid, res in self.template.of_type("AWS::SQS::Queue")
        ]
        urls = create_queues(self.sqs, specs)
        for spec in specs:
            self.refs |= queue_refs(spec.logical_id, urls[spec.logical_id])
        logger.info("queues ready", extra={"queues": {s.logical_id: s.name for s in specs}})

    def _queue_spec(self, logical_id: str, resource: dict) -> QueueSpec:
        props = resource.get("Properties") or {}
        name = self.template.resolve(props.get("QueueName"), {}) or f"tasklane-local-{logical_id}"
        attributes = {
            key: str(self.template.resolve(props[key], {}))
            for key in QUEUE_ATTRIBUTES
            if key in props
        }
        redrive = props.get("RedrivePolicy")
        target = max_receives = None
        if redrive:
            target_arn = redrive["deadLetterTargetArn"]
            if not (isinstance(target_arn, dict) and "Fn::GetAtt" in target_arn):
                raise ConfigurationError(f"{logical_id}: RedrivePolicy must !GetAtt a queue's Arn")
            target = target_arn["Fn::GetAtt"][0]
            max_receives = int(self.template.resolve(redrive["maxReceiveCount"], {}))
        return QueueSpec(logical_id, name, attributes, target, max_receives)

    def _environment(self, fn: Function) -> dict[str, str]:
        env = {}
        for key, value in fn.environment.items():
            try:
                resolved = self.template.resolve(value, self.refs)
            except ConfigurationError:
                resolved = ""  # an AWS-only resource (e.g. the database secret): not used locally
            env[key] = "" if resolved is None else str(resolved)
        env["DATABASE_URL"] = self.database_url
        env |= {k: v for k, v in LOCAL_ENVIRONMENT.items() if k in env}
        env.pop("POWERTOOLS_METRICS_NAMESPACE", None)  # no metric lines in the local log stream
        return env

    def _load_functions(self) -> None:
        """Start each function's warm "container" (a child process with its own environment)."""
        layers = self.template.layer_paths()
        for fn in self.template.functions(self.refs):
            env = self._environment(fn)
            pool = FunctionPool(
                fn.code_uri,
                fn.handler,
                fn.logical_id,
                os.environ | env,
                timeout=fn.timeout,
                memory=fn.memory,
                layers=layers,
            )
            pool.warm()
            self.functions[fn.logical_id] = fn
            self.handlers[fn.logical_id] = pool
            self.environments[fn.logical_id] = env
            self.celery_queue = self.celery_queue or env.get("CELERY_QUEUE_URL") or None

    # -- HTTP API -----------------------------------------------------------------------------
    # -- event sources, schedules, worker -------------------------------------------------------
    def _start_event_sources(self) -> None:
        arns = {v: k[: -len(".Arn")] for k, v in self.refs.items() if k.endswith(".Arn")}
        for fn in self.functions.values():
            for name, event in fn.events.items():
                if event.get("Type") != "SQS":
                    continue
                props = event.get("Properties") or {}
                if not self.template.resolve(props.get("Enabled", True), self.refs):
                    continue
                arn = self.template.resolve(props["Queue"], self.refs)
                source = SqsEventSource(
                    self.sqs,
                    self.refs[arns[arn]],
                    arn,
                    self.handlers[fn.logical_id],
                    function_name=fn.logical_id,
                    batch_size=int(self.template.resolve(props.get("BatchSize", 10), self.refs)),
                    batching_window=float(
                        self.template.resolve(
                            props.get("MaximumBatchingWindowInSeconds", 0), self.refs
                        )
                    ),
                    report_batch_item_failures="ReportBatchItemFailures"
                    in (props.get("FunctionResponseTypes") or []),
                    timeout=fn.timeout,
                    memory_mb=fn.memory,
                )
                self.sources.append(source)
                self._thread(f"{fn.logical_id}.{name}", fn.logical_id, source.run, self.stop_event)

    def _start_schedules(self) -> None:
        for schedule in schedules_of(self.template, self.functions, self.refs):
            fn = schedule.function
            self._thread(
                f"{fn.logical_id}.{schedule.name}",
                fn.logical_id,
                schedule.run,
                self.handlers[fn.logical_id],
                self.stop_event,
            )

    def _thread(self, name: str, part: str, target: Callable, *args: Any) -> None:
        def run() -> None:
            logstream.set_part(part)
            target(*args)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _start_worker(self) -> None:
        if not self.celery_queue:
            logger.warning("no CELERY_QUEUE_URL in the template: no celery worker started")
            return
        from tasklane.lanes import queue_name

        env = next(e for e in self.environments.values() if e.get("CELERY_QUEUE_URL"))
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasklane.worker",
            "worker",
            "-Q",
            # the high-priority queue first, as the template's workers
            ",".join(
                queue_name(u) for u in (env.get("CELERY_HIGH_QUEUE_URL"), self.celery_queue) if u
            ),
            "--loglevel",
            "INFO",
            "--concurrency",
            str(self.options.worker_concurrency),
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ]
        path = [*self.template.layer_paths(), os.environ.get("PYTHONPATH", "")]
        process = subprocess.Popen(
            command,
            env=os.environ
            | env
            | {"PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(filter(None, path))},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the stack, which stops the worker in order
        )
        self.processes.append(process)
        self.threads.append(logstream.pipe(process, "celery"))

    # -- reload -------------------------------------------------------------------------------
    def _watch(self, stop: threading.Event) -> None:
        """``--reload``: poll the project's Python files (the template's directory, hidden
        directories left out) every second; on a change, reload."""
        root = Path(self.options.template).resolve().parent
        seen = _python_files(root)
        while not stop.wait(1.0):
            now = _python_files(root)
            if now != seen:
                changed = sorted(set(now.items()) ^ set(seen.items()))
                seen = now
                logger.info(
                    "code changed: reloading the functions and the celery worker",
                    extra={"files": sorted({str(p.relative_to(root)) for p, _ in changed})[:5]},
                )
                self.reload()

    def reload(self) -> None:
        """New code everywhere: each function's warm processes are replaced (one running now
        ends its invocation first), and the Celery worker is restarted (a warm shutdown)."""
        for pool in self.handlers.values():
            pool.recycle()
        workers, self.processes = self.processes, []
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if workers:
            self._start_worker()
            logger.info("celery worker restarted", extra={"pid": self.processes[-1].pid})
        self._write_state()

    # -- state, banner, stop --------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://{self.options.host}:{self.options.port}"

    def _write_state(self) -> None:
        state = {
            "api": self.api_url,
            "database_url": self.database_url,
            "sqs_endpoint": self.sqs_endpoint,
            "queues": {k: v for k, v in self.refs.items() if "." not in k},
            "template": str(Path(self.options.template).resolve()),
            "parameters": self.options.parameters,
            "pid": os.getpid(),
            "children": self.child_pids(),
            "client_env": self.client_env(),
        }
        (self.options.data_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    def app_tasks(self) -> list[tuple[str, str]]:
        """The application's own tasks, (name, lane), as its functions see them: its
        ``TASK_MODULES`` imported in a process of their own, with the functions' layers and
        code on the path (what the banner suggests submitting)."""
        fn = next(
            (
                f
                for f in self.functions.values()
                if self.environments[f.logical_id].get("TASK_MODULES")
            ),
            None,
        )
        if fn is None:
            return []
        code = (
            "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
            "from tasklane import registry; "
            "print(json.dumps([[t.name, t.lane.value] for t in registry.all_tasks()]))"
        )
        paths = [*self.template.layer_paths(), str(fn.code_uri)]
        try:
            found = subprocess.run(
                [sys.executable, "-c", code, json.dumps(paths)],
                env=os.environ | self.environments[fn.logical_id],
                capture_output=True,
                text=True,
                timeout=60,
            )
            return [(name, lane) for name, lane in json.loads(found.stdout.splitlines()[-1])]
        except (subprocess.SubprocessError, ValueError, IndexError):
            return []  # the banner then suggests nothing it cannot vouch for

    def client_env(self) -> dict[str, str]:
        """What Python code of the application needs to submit to this stack and read its
        tasks (``tasklane env`` prints it as exports): the functions' own settings, SQS's
        endpoint, a region and moto's credentials."""
        from tasklane.config import ENV_VARS
        from tasklane.local.sqs import FAKE_CREDENTIALS

        chosen: dict[str, str] = {}
        for env in self.environments.values():
            chosen |= {k: v for k, v in env.items() if k in ENV_VARS and k != "API_AUTHORIZATION"}
        return (
            chosen
            | {"DATABASE_URL": self.database_url, "AWS_ENDPOINT_URL_SQS": self.sqs_endpoint}
            | FAKE_CREDENTIALS
        )

    def child_pids(self) -> list[int]:
        pids = [p.pid for p in self.processes]
        if self.moto and self.moto.process:
            pids.append(self.moto.process.pid)
        for pool in self.handlers.values():
            pids += pool.pids
        return pids

    def wait(self) -> None:
        """Block until Ctrl-C or SIGTERM, then stop everything."""
        previous = signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        try:
            while not self.stop_event.wait(0.5):
                for process in self.processes:
                    if process.poll() is not None:
                        logger.error("the celery worker exited", extra={"code": process.returncode})
                        self.processes.remove(process)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.stop()

    def stop(self) -> None:
        """Stop everything it started, in order: the API, the Celery worker (a warm shutdown),
        the functions, moto, Postgres; and remove the state file. Another Ctrl-C meanwhile
        hurries it (what is left is killed, Postgres stops at once) but never cuts it short."""
        logstream.set_part("stack")
        logger.info("stopping: Ctrl-C again to hurry")
        hurry = threading.Event()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, lambda *_: hurry.set())
        try:
            self._stop_parts(hurry)
        finally:
            (self.options.data_dir / STATE_FILE).unlink(missing_ok=True)
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        logger.info("local stack stopped")

    def _stop_parts(self, hurry: threading.Event) -> None:
        self.stop_event.set()
        if self.api:
            self.api.close()
            self.api = None
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # Celery's warm shutdown
        deadline = time.monotonic() + 30
        for process in self.processes:
            while process.poll() is None and time.monotonic() < deadline and not hurry.is_set():
                time.sleep(0.1)
            if process.poll() is None:
                process.kill()
            process.wait()
        self.processes.clear()
        for source in self.sources:
            source.close()
        for pool in self.handlers.values():
            pool.close()
        for thread in self.threads:
            if thread.name != "api":
                thread.join(timeout=0.5 if hurry.is_set() else 5)
        if self.moto:
            self.moto.stop()
            self.moto = None
        if self.postgres:
            self.postgres.stop(mode="immediate" if hurry.is_set() else "fast")
            self.postgres = None


def banner(stack: LocalStack) -> str:
    """What `tasklane dev` prints once the stack is up: where each part listens, and how to
    submit a first task."""
    lines = [
        f"HTTP API        {stack.api_url}"
        f"  ({len(stack.api.routes if stack.api else [])} routes from {stack.template.path.name})",
    ]
    for route in stack.api.routes if stack.api else []:
        lines.append(f"  {route.method:<6} {route.path:<22} → {route.function}")
    lines.append(f"Console         {stack.api_url}/console")
    lines.append(f"Postgres        {stack.database_url}")
    lines.append(f"SQS (moto)      {stack.sqs_endpoint}")
    for source in stack.sources:
        lines.append(
            f"  {source.queue_url.rsplit('/', 1)[-1]:<22} → {source.function_name}"
            f" (batch {source.batch_size}, window {source.batching_window:g}s,"
            f" {'partial failures' if source.report_batch_item_failures else 'all or nothing'})"
        )
    if stack.processes:
        lines.append(f"Celery worker   pid {stack.processes[0].pid} on {stack.celery_queue}")
    tasks = stack.app_tasks()
    if tasks:
        shown = ", ".join(f"{name} ({lane})" for name, lane in tasks[:12])
        lines.append(
            f"Tasks           {shown}" + (f" and {len(tasks) - 12} more" if len(tasks) > 12 else "")
        )
    lines += [
        "",
        *_first_steps(stack.api_url, [name for name, _ in tasks]),
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def _python_files(root: Path) -> dict[Path, float]:
    """Every ``.py`` file under ``root`` with its modification time, hidden directories (the
    virtualenvs, .tasklane, .git) and caches left out."""
    found: dict[Path, float] = {}
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".") and d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = Path(directory) / name
                try:
                    found[path] = path.stat().st_mtime
                except OSError:
                    continue
    return found


def _first_steps(api: str, names: list[str]) -> list[str]:
    """How to submit a first task: the shipped examples' own, or the application's first task
    (with an empty payload: its shape is the application's to know)."""
    if "text.wordcount" in names:
        return [
            "Submit a task:",
            f"  curl -s -X POST {api}/tasks -H 'content-type: application/json' \\",
            """    -d '{"task": "text.wordcount", "payload": {"text": "hello local world"}}'""",
            "  tasklane submit math.primes --payload '{\"limit\": 1000000}' --wait",
            "  tasklane tasks",
        ]
    if names:
        first = names[0]
        return [
            "Submit a task (its payload is yours to fill in):",
            f"  curl -s -X POST {api}/tasks -H 'content-type: application/json' \\",
            f"""    -d '{{"task": "{first}", "payload": {{}}}}'""",
            f"  tasklane submit {first} --payload '{{}}' --wait",
            "  tasklane tasks",
        ]
    return [
        "No task is registered: set TASK_MODULES (the TaskModules parameter).",
        "  tasklane tasks",
    ]


def queue_refs(logical_id: str, url: str) -> dict[str, str]:
    """What ``!Ref`` and ``!GetAtt`` of a local queue resolve to."""
    from tasklane.lanes import queue_name

    name = queue_name(url)
    return {
        logical_id: url,
        f"{logical_id}.Arn": queue_arn(name),
        f"{logical_id}.QueueName": name,
        f"{logical_id}.QueueUrl": url,
    }


def read_state(data_dir: Path = Path(".tasklane")) -> dict | None:
    """What a running ``tasklane dev`` wrote about itself (for the other CLI commands)."""
    path = data_dir / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
