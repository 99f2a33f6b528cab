from __future__ import annotations
from tasklane import submit
from tasklane.eager import eager
from tests.integration.helpers import call_api


def test_review_idempotency_and_unique_with_priority(stack):
    h = {"idempotency-key": "k-1"}
    s1, _, a1 = call_api("POST", "/tasks", {"task": "test.echo", "payload": 1}, headers=h)
    s2, _, a2 = call_api("POST", "/tasks", {"task": "test.echo", "payload": 1, "priority": 9}, headers=h)
    s3, _, a3 = call_api("POST", "/tasks", {"task": "test.echo", "payload": 1, "priority": 0}, headers=h)
    print("idempotent:", s1, s2, a2.get("error", a2.get("id")), s3)
    # the task's own default (test.urgent: 7) vs an explicit 7: the same request?
    h2 = {"idempotency-key": "k-2"}
    t1 = call_api("POST", "/tasks", {"task": "test.urgent", "payload": 1}, headers=h2)
    t2 = call_api("POST", "/tasks", {"task": "test.urgent", "payload": 1, "priority": 7}, headers=h2)
    print("default vs explicit 7:", t1[0], t2[0])
    u1 = submit("test.echo", {"u": 1}, unique_key="same")
    u2 = submit("test.echo", {"u": 1}, unique_key="same", priority=9)
    print("unique dup:", u1.id == u2.id, stack.query("SELECT priority FROM tasks WHERE id=:i", i=u1.id),
          "high depth", stack.depth(stack.lambda_high_queue))
    with eager():
        h3 = submit("test.echo", {"e": 1}, priority=9)
    print("eager:", h3.status())
    bad = call_api("POST", "/tasks/batch", {"tasks": [{"task": "test.echo", "payload": 1, "priority": 5.0}]})
    print("batch 5.0:", bad[0], bad[2].get("error"))
