"""Each caller sees only its own tasks: two identities, and an operator, through real HTTP API
v2 events for both authorization modes (as API Gateway passes the authenticated identity)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from tasklane import database
from tasklane.local.events import LambdaContext, http_event, iam_identity, jwt_identity
from tasklane.testing import refresh

from tests.integration.helpers import call_api, consumer_source, handler

ACCOUNT = "123456789012"
ALICE = iam_identity(f"arn:aws:sts::{ACCOUNT}:assumed-role/AppRole/alice")
#: Every session of a role is the role.
APP_ROLE = f"arn:aws:iam::{ACCOUNT}:role/AppRole"
BOB = iam_identity(f"arn:aws:iam::{ACCOUNT}:user/bob")
#: A session of the operators' role, named by its role ARN in OPERATORS.
OPS = iam_identity(f"arn:aws:sts::{ACCOUNT}:assumed-role/OpsRole/carol")
ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_EXAMPLE"
ANN = jwt_identity({"iss": ISSUER, "sub": "ann-0001", "cognito:groups": ["readers"]})
BEN = jwt_identity({"iss": ISSUER, "sub": "ben-0002"})
ADMIN = jwt_identity({"iss": ISSUER, "sub": "admin-0003", "cognito:groups": ["staff", "ops"]})
SCOPED = jwt_identity({"iss": ISSUER, "sub": "robot-0004"}, scopes=["tasklane/operate"])


@pytest.fixture
def iam(stack, monkeypatch):
    monkeypatch.setenv("API_AUTHORIZATION", "AWS_IAM")
    monkeypatch.setenv("OPERATORS", f"arn:aws:iam::{ACCOUNT}:role/OpsRole")
    refresh()
    yield
    refresh()


@pytest.fixture
def jwt(stack, monkeypatch):
    monkeypatch.setenv("API_AUTHORIZATION", "JWT")
    monkeypatch.setenv("OPERATORS", "ops, tasklane/operate")
    refresh()
    yield
    refresh()


def submit_as(who: dict, task: str = "test.echo", payload=1, headers=None) -> str:
    status, _, body = call_api(
        "POST", "/tasks", {"task": task, "payload": payload}, headers=headers, authorizer=who
    )
    assert status in (200, 202), body
    return body["id"]


def fail(task_id: str) -> None:
    with database.engine().begin() as conn:
        conn.execute(
            text("UPDATE tasks SET status = 'failed', finished_at = now() WHERE id = :id"),
            {"id": task_id},
        )


def owner_of(task_id: str) -> str:
    with database.engine().connect() as conn:
        query = text("SELECT owner FROM tasks WHERE id = :id")
        return conn.execute(query, {"id": task_id}).scalar_one()


@pytest.mark.parametrize("mode", ["iam", "jwt"])
def test_another_callers_task_is_not_found_and_cannot_be_touched(request, mode):
    request.getfixturevalue(mode)
    mine, theirs, operator = (ALICE, BOB, OPS) if mode == "iam" else (ANN, BEN, ADMIN)
    task_id = submit_as(mine)
    assert call_api("GET", f"/tasks/{task_id}", authorizer=mine)[0] == 200
    unknown = call_api("GET", "/tasks/00000000-0000-0000-0000-000000000000", authorizer=theirs)
    hidden = call_api("GET", f"/tasks/{task_id}", authorizer=theirs)
    assert hidden[0] == unknown[0] == 404  # as if it did not exist: ids cannot be probed
    assert hidden[2]["error"]["code"] == unknown[2]["error"]["code"] == "not_found"
    assert call_api("POST", f"/tasks/{task_id}/cancel", authorizer=theirs)[0] == 404
    fail(task_id)
    assert call_api("POST", f"/tasks/{task_id}/retry", authorizer=theirs)[0] == 404
    assert call_api("GET", f"/tasks/{task_id}", authorizer=mine)[2]["status"] == "failed"
    assert call_api("GET", f"/tasks/{task_id}", authorizer=operator)[0] == 200
    assert call_api("POST", f"/tasks/{task_id}/retry", authorizer=mine)[0] == 202


def test_the_owner_is_the_authenticated_identity(iam):
    alice = submit_as(ALICE)
    assert owner_of(alice) == APP_ROLE
    status, _, body = call_api(
        "POST", "/tasks/batch", {"tasks": [{"task": "test.echo", "payload": 2}]}, authorizer=BOB
    )
    assert status == 202 and owner_of(body["tasks"][0]["id"]) == BOB["iam"]["userArn"]


def test_jwt_owner_is_issuer_and_subject(jwt):
    ann = submit_as(ANN)
    assert owner_of(ann) == f"{ISSUER}#ann-0001"
    # a scope granted by the authorizer makes an operator too
    assert call_api("GET", f"/tasks/{ann}", authorizer=SCOPED)[0] == 200
    # a group that is not an operators' one does not
    assert call_api("GET", f"/tasks/{ann}", authorizer=BEN)[0] == 404


def test_listing_bulk_retry_and_stats_are_scoped(iam):
    alice = [submit_as(ALICE, payload=i) for i in range(3)]
    bob = [submit_as(BOB, payload=i) for i in range(2)]
    for task_id in alice + bob:
        fail(task_id)

    def listed(who, query="") -> set[str]:
        status, _, body = call_api("GET", f"/tasks?limit=500{query}", authorizer=who)
        assert status == 200
        return {t["id"] for t in body["tasks"]}

    assert listed(ALICE) == set(alice)
    assert listed(BOB, "&status=failed") == set(bob)
    assert listed(OPS) >= set(alice) | set(bob)

    status, _, body = call_api("GET", "/stats", authorizer=BOB)
    assert status == 200 and body["counts"] == {"failed": {"lambda": 2}}
    assert body["queue_depths"] == {}  # they count everyone's messages: operators only
    operator_stats = call_api("GET", "/stats", authorizer=OPS)[2]
    assert operator_stats["counts"]["failed"]["lambda"] >= 5
    assert set(operator_stats["queue_depths"]) == {
        *("lambda", "lambda_high", "lambda_dlq"),
        *("celery", "celery_high", "celery_dlq"),
    }

    status, _, body = call_api("POST", "/tasks/retry", {}, authorizer=BOB)
    assert status == 202 and set(body["retried"]) == set(bob) and body["more"] is False
    for task_id in alice:  # bob's bulk retry left alice's failed tasks alone
        assert call_api("GET", f"/tasks/{task_id}", authorizer=ALICE)[2]["status"] == "failed"


def test_the_replicas_of_one_service_are_one_owner(iam):
    """Each ECS task (or instance) of a service signs as its own session of the service's role:
    they see each other's tasks, and a key retried through another replica replays."""
    one = iam_identity(f"arn:aws:sts::{ACCOUNT}:assumed-role/WebRole/4f1a9c0e8d7b4e2a")
    two = iam_identity(f"arn:aws:sts::{ACCOUNT}:assumed-role/WebRole/9b3e77d2c1a04f55")
    key = {"idempotency-key": "order-42"}
    first = submit_as(one, payload={"order": 42}, headers=key)
    assert submit_as(two, payload={"order": 42}, headers=key) == first
    assert call_api("GET", f"/tasks/{first}", authorizer=two)[0] == 200
    assert call_api("GET", f"/tasks/{first}", authorizer=ALICE)[0] == 404  # another role


def test_idempotency_keys_are_each_owners_own(iam):
    key = {"idempotency-key": "order-42"}
    alice = submit_as(ALICE, payload={"who": "alice"}, headers=key)
    bob = submit_as(BOB, payload={"who": "bob"}, headers=key)  # another body: still fine
    assert alice != bob
    status, _, again = call_api(
        "POST",
        "/tasks",
        {"task": "test.echo", "payload": {"who": "alice"}},
        headers=key,
        authorizer=ALICE,
    )
    assert status == 200 and again["id"] == alice
    status, _, conflict = call_api(
        "POST",
        "/tasks",
        {"task": "test.echo", "payload": {"who": "eve"}},
        headers=key,
        authorizer=BOB,
    )
    assert status == 422 and conflict["error"]["code"] == "idempotency_conflict"


def test_workflows_are_their_submitters(iam):
    body = {"chain": [{"task": "test.echo", "payload": 1}, {"task": "test.echo"}]}
    status, _, created = call_api("POST", "/workflows", body, authorizer=ALICE)
    assert status == 202
    workflow = created["id"]
    assert all(owner_of(t["id"]) == APP_ROLE for t in created["tasks"])
    assert call_api("GET", f"/workflows/{workflow}", authorizer=BOB)[0] == 404
    assert call_api("POST", f"/workflows/{workflow}/cancel", authorizer=BOB)[0] == 404
    assert call_api("GET", f"/workflows/{workflow}", authorizer=ALICE)[2]["status"] == "running"
    assert call_api("GET", f"/workflows/{workflow}", authorizer=OPS)[0] == 200
    status, _, cancelled = call_api("POST", f"/workflows/{workflow}/cancel", authorizer=ALICE)
    assert status == 200 and cancelled["status"] == "cancelled"


def test_a_request_without_an_identity_is_refused_and_stores_nothing(iam):
    """A route left without its authorizer must not serve anyone as anyone, nor tell it
    anything: 401 before any validation (an unknown task name is no 422)."""
    with database.engine().connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM tasks")).scalar_one()
    status, _, body = call_api("POST", "/tasks", {"task": "test.echo", "payload": 1})
    assert status == 401 and body["error"]["code"] == "not_authenticated"
    assert call_api("GET", "/tasks")[0] == 401
    assert call_api("POST", "/tasks", {"task": "no.such.task", "payload": 1})[0] == 401
    assert call_api("POST", "/tasks", {"task": ""})[0] == 401  # nor a 400
    page = handler("producer")(http_event("GET", "/console"), LambdaContext("producer"))
    assert page["statusCode"] == 200  # the console's static page needs none
    with database.engine().connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tasks")).scalar_one() == before


@pytest.mark.parametrize(
    ("route", "method", "path"),
    [
        ("GET /console", "GET", "/tasks"),
        ("GET /openapi.json", "GET", "/stats"),
        ("GET /docs", "POST", "/tasks"),
    ],
)
def test_a_route_named_as_one_served_without_an_identity_does_not_lend_it_to_another(
    iam, route, method, path
):
    """The routes served without an identity are chosen by the event's routeKey. An event
    (a direct invoke, a catch-all route) whose routeKey names one of them but whose path is a
    task route is refused: it is not served as trusted code, which sees every task."""
    submit_as(ALICE)
    body = '{"task": "test.echo", "payload": 1}' if method == "POST" else None
    headers = {"content-type": "application/json"}
    event = http_event(method, path, route_key=route, body=body, headers=headers)
    response = handler("producer")(event, LambdaContext("producer"))
    assert response["statusCode"] == 401, response


def test_a_task_started_by_a_task_belongs_to_the_same_owner(iam, stack):
    parent = submit_as(ALICE, task="test.spawn", payload={"children": ["a", "b"]})
    assert consumer_source(stack).poll_once().records == 1  # the parent runs, submits two
    with database.engine().connect() as conn:
        owners = (
            conn.execute(text("SELECT owner FROM tasks WHERE id <> :id"), {"id": parent})
            .scalars()
            .all()
        )
    assert owners == [APP_ROLE] * 2


def test_the_python_api_records_an_owner_when_given_one(stack, monkeypatch):
    import tasklane
    from tasklane import registry
    from tasklane.config import settings

    handle = tasklane.submit("test.echo", 1, owner="billing-service")
    assert owner_of(str(handle.id)) == "billing-service"
    assert owner_of(str(tasklane.submit("test.echo", 2).id)) == ""
    # and through Celery's own apply_async, for existing Celery tasks
    monkeypatch.setenv("TASK_MODULES", f"{stack.env['TASK_MODULES']},tests.celery_app.tasks")
    settings.cache_clear()
    registry.load_configured()
    from tests.celery_app import tasks as project

    result = project.add.apply_async((2, 3), owner="billing-service")
    assert owner_of(result.id) == "billing-service"
