"""Every AWS call each function's code makes is allowed by that function's role.

moto and the local stack do not enforce IAM, so a missing permission shows up only in AWS (the
consumer's back-off once failed there for want of sqs:ChangeMessageVisibility). Here each
function's handler runs through the paths that call AWS, with every SQS call recorded, and
each call is checked against the role's statements after the SAM transform
(``scripts/iam-policies``).
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from tasklane import broker, database
from tasklane.local.events import LambdaContext

from tests.conftest import wait_for
from tests.integration.helpers import call_api, consumer_source, handler, submit

ROOT = Path(__file__).resolve().parents[2]
#: An SQS API operation → the IAM action that authorises it (batch calls use the single one).
IAM_ACTION = {
    "SendMessageBatch": "sqs:SendMessage",
    "DeleteMessageBatch": "sqs:DeleteMessage",
    "ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}
#: What kombu's SQS transport itself calls in a Celery worker, on the queues it consumes:
#: receive, acknowledge, the back-off policy, and the redrive-policy check before deleting a
#: rejected message (kombu/transport/SQS). The worker's own calls are recorded below.
KOMBU = {
    ("sqs:ReceiveMessage", "CeleryQueue"),
    ("sqs:DeleteMessage", "CeleryQueue"),
    ("sqs:ChangeMessageVisibility", "CeleryQueue"),
    ("sqs:GetQueueAttributes", "CeleryQueue"),
}


@pytest.fixture(scope="module")
def policies() -> dict[str, list[dict]]:
    sam_python = ROOT / ".venv-sam" / "bin" / "python"
    if not sam_python.exists():
        pytest.skip("the SAM translator is not installed (scripts/bootstrap --sam)")
    out = subprocess.run(
        [str(sam_python), str(ROOT / "scripts" / "iam-policies")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def allowed(statements: list[dict], action: str, resource: str) -> bool:
    return any(
        any(fnmatch.fnmatchcase(action, pattern) for pattern in s["actions"])
        and (resource in s["resources"] or "*" in s["resources"])
        for s in statements
    )


class Recorder:
    """The SQS calls made through tasklane's client while the function under test runs (not
    while a scenario sets the scene): (IAM action, the queue's logical id)."""

    def __init__(self, stack) -> None:
        self.names = {url: logical for logical, url in stack.urls.items()}
        self.calls: set[tuple[str, str]] = set()
        self.on = False

    def __call__(self, params: dict, model, **_) -> None:
        if self.on:
            action = IAM_ACTION.get(model.name, f"sqs:{model.name}")
            self.calls.add((action, self.names.get(params.get("QueueUrl"), "?")))

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self.on = True
        try:
            yield
        finally:
            self.on = False

    def during(self, scenario: Callable[[Recorder], None]) -> set[tuple[str, str]]:
        events = broker.sqs().meta.events
        events.register("provide-client-params.sqs", self)
        try:
            scenario(self)
        finally:
            events.unregister("provide-client-params.sqs", self)
        return self.calls


def stock_message(stack, task: str, task_id: uuid.UUID, url: str, **headers) -> None:
    """A stock Celery message (raw JSON envelope) with extra headers, such as an eta."""
    envelope = json.loads(base64.b64decode(broker.message_body(task, task_id, "tl-lambda")))
    envelope["headers"].update(headers)
    stack.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(envelope))


def producer(stack, recorder: Recorder) -> None:
    with recorder.running():
        call_api("POST", "/tasks", {"task": "test.echo", "payload": 1})
        call_api("POST", "/tasks/batch", {"tasks": [{"task": "test.echo_celery", "payload": 1}]})
        call_api("GET", "/stats")  # every queue's depth
        call_api("POST", "/tasks/retry", {})  # the bulk send path


def consumer(stack, recorder: Recorder) -> None:
    later = uuid.UUID(submit("test.echo", "later"))
    heavy = uuid.UUID(submit("test.echo_celery", "later"))
    for url in (stack.lambda_queue, stack.celery_queue):  # only the stock messages below
        stack.sqs.purge_queue(QueueUrl=url)
    submit("test.fail", {})  # a failed attempt: its message's back-off
    eta = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    for task, task_id in (("test.echo", later), ("test.echo_celery", heavy)):  # deferred sends
        stock_message(stack, task, task_id, stack.lambda_queue, eta=eta)
    stack.sqs.send_message(QueueUrl=stack.lambda_queue, MessageBody="poison")  # to the DLQ
    source = consumer_source(stack)
    with recorder.running():
        while (result := source.poll_once()) is not None and result.records:
            pass


def deadletter(stack, recorder: Recorder) -> None:
    task_id = uuid.UUID(submit("test.echo", 1))
    stack.sqs.send_message(
        QueueUrl=stack.lambda_dlq,
        MessageBody=broker.message_body("test.echo", task_id, "tl-lambda"),
    )
    with recorder.running():
        consumer_source(stack, "deadletter", url=stack.lambda_dlq).poll_once()


def reconciler(stack, recorder: Recorder) -> None:
    submit("test.echo", 1)
    submit("test.echo_celery", 1)
    with database.engine().begin() as conn:
        conn.execute(
            text("UPDATE tasks SET status = 'pending', updated_at = now() - interval '1h'")
        )
    with recorder.running():
        handler("reconciler")({}, LambdaContext(function_name="reconciler"))


def worker(stack, recorder: Recorder) -> None:
    """The worker's own calls, made in this process through the same code: the heartbeat, the
    lease read, poison dead-lettered and deleted, an unknown task backed off."""
    from tasklane import celery_run
    from tasklane import worker as celery_worker

    task_id = uuid.UUID(submit("test.echo_celery", 1))
    (message,) = stack.receive(stack.celery_queue)

    class Delivered:
        delivery_info = {"sqs_message": message, "sqs_queue": stack.celery_queue}

    with recorder.running():
        celery_run.lease_seconds(stack.celery_queue)
        beat = celery_worker.Heartbeat(
            stack.celery_queue, message["ReceiptHandle"], task_id, "t#1", 2, lambda: True, 1e12
        )
        beat.stop.wait(1.2)
        beat.cancel()
        celery_run.execute(celery_run.registry.get("test.echo_celery"), "x", "t#2")
        celery_worker._unknown_task(Delivered(), "no.such.task")  # poison: to the DLQ
        celery_worker.registry.get("test.spawn_celery").fn({"children": [1]})  # a child task
        # a task whose row exists, unknown to this worker (mid-deploy): offered again
        recorder.on = False
        submit("test.echo_celery", 2)
        (again,) = wait_for(lambda: stack.receive(stack.celery_queue), 10)
        recorder.on = True
        spec = celery_worker.registry._tasks.pop("test.echo_celery")
        try:

            class Again:
                delivery_info = {"sqs_message": again, "sqs_queue": stack.celery_queue}

            celery_worker._unknown_task(Again(), "test.echo_celery")
        finally:
            celery_worker.registry._tasks["test.echo_celery"] = spec


SCENARIOS = {
    "ProducerFunction": producer,
    "ConsumerFunction": consumer,
    "DeadLetterFunction": deadletter,
    "ReconcilerFunction": reconciler,
    "WorkerTaskRole": worker,
}


@pytest.mark.sam
@pytest.mark.parametrize("role", sorted(SCENARIOS))
def test_every_sqs_call_a_function_makes_is_allowed_by_its_role(stack, policies, role):
    calls = Recorder(stack).during(lambda recorder: SCENARIOS[role](stack, recorder))
    if role == "WorkerTaskRole":
        calls |= KOMBU
    assert role == "DeadLetterFunction" or calls, "the scenario made no SQS call"
    denied = sorted(c for c in calls if not allowed(policies[role], *c))
    assert not denied, f"{role} would be denied in AWS: {denied}"


@pytest.mark.sam
def test_every_function_may_read_the_database_secret(policies):
    """database.py reads DATABASE_SECRET_ARN in every process that opens the database."""
    for role, statements in policies.items():
        assert allowed(statements, "secretsmanager:GetSecretValue", "DatabaseSecretArn"), role


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (
            "ConsumerFunction",
            {
                ("sqs:ChangeMessageVisibility", "LambdaQueue"),  # back-off
                ("sqs:SendMessage", "LambdaDeadLetterQueue"),  # poison
                ("sqs:SendMessage", "LambdaQueue"),  # a deferred task of the lambda lane
                ("sqs:SendMessage", "CeleryQueue"),  # and of the celery lane
            },
        ),
        ("ReconcilerFunction", {("sqs:GetQueueAttributes", "CeleryQueue")}),
        (
            "WorkerTaskRole",
            {
                ("sqs:ChangeMessageVisibility", "CeleryQueue"),
                ("sqs:SendMessage", "CeleryDeadLetterQueue"),
            },
        ),
    ],
)
def test_the_scenarios_reach_the_calls_they_are_there_for(stack, role, expected):
    """The check is only as good as its scenarios: each reaches the calls it exists for."""
    calls = Recorder(stack).during(lambda recorder: SCENARIOS[role](stack, recorder))
    assert expected <= calls
