"""The emulated SQS event source and function runtime, against the AWS semantics they copy."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from tasklane.local.events import queue_arn
from tasklane.local.eventsource import SqsEventSource
from tasklane.local.runtime import FunctionPool, InvocationError, InvocationTimeout

PROBE = Path(__file__).resolve().parents[1] / "fixtures" / "functions" / "probe"


class Recorder:
    """A handler that records its events and answers with a chosen response."""

    def __init__(self, respond=None, sleep: float = 0.0, raise_=False):
        self.events: list[dict] = []
        self.contexts: list = []
        self.respond, self.sleep, self.raise_ = respond, sleep, raise_

    def __call__(self, event, context):
        self.events.append(event)
        self.contexts.append(context)
        time.sleep(self.sleep)
        if self.raise_:
            raise RuntimeError("handler failed")
        return self.respond(event) if callable(self.respond) else self.respond


def make(stack, handler, **kw) -> SqsEventSource:
    kw.setdefault("report_batch_item_failures", True)
    kw.setdefault("timeout", 5)
    return SqsEventSource(
        stack.sqs, stack.lambda_queue, queue_arn("tl-lambda"), handler, function_name="probe", **kw
    )


def send(stack, n: int) -> None:
    for i in range(n):
        stack.sqs.send_message(QueueUrl=stack.lambda_queue, MessageBody=f"m{i}")


def fail_first(event):
    return {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}


def test_records_have_the_lambda_shape(stack):
    send(stack, 1)
    recorder = Recorder(respond=None)
    make(stack, recorder).poll_once()
    (record,) = recorder.events[0]["Records"]
    assert set(record) >= {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    }
    assert record["eventSource"] == "aws:sqs" and record["body"] == "m0"
    assert record["eventSourceARN"].endswith(":tl-lambda")
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert 0 < recorder.contexts[0].get_remaining_time_in_millis() <= 5000


def test_partial_batch_failure_deletes_all_but_the_failed(stack):
    send(stack, 5)
    result = make(stack, Recorder(respond=fail_first), batch_size=5).poll_once()
    assert result.records == 5 and result.deleted == 4 and len(result.failed_ids) == 1
    assert stack.depth(stack.lambda_queue) == 1


def test_without_report_batch_item_failures_the_response_is_ignored(stack):
    send(stack, 3)
    result = make(stack, Recorder(respond=fail_first), report_batch_item_failures=False).poll_once()
    assert result.deleted == 3  # all or nothing: the handler returned, so all are deleted
    assert stack.depth(stack.lambda_queue) == 0


@pytest.mark.parametrize("report", [True, False])
def test_a_raising_handler_returns_the_whole_batch(stack, report):
    send(stack, 3)
    result = make(stack, Recorder(raise_=True), report_batch_item_failures=report).poll_once()
    assert result.deleted == 0 and result.error
    assert stack.depth(stack.lambda_queue) == 3


def test_an_invalid_failure_report_fails_the_whole_batch(stack):
    send(stack, 2)
    bogus = {"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]}
    result = make(stack, Recorder(respond=bogus)).poll_once()
    assert result.deleted == 0 and stack.depth(stack.lambda_queue) == 2


def test_a_timed_out_invocation_returns_its_batch(stack):
    send(stack, 2)
    result = make(stack, Recorder(respond=None, sleep=2.5), timeout=1).poll_once()
    assert result.timed_out and result.deleted == 0
    assert stack.depth(stack.lambda_queue) == 2


def test_failed_records_come_back_with_a_higher_receive_count(stack):
    send(stack, 1)
    source = make(stack, Recorder(respond=fail_first))
    source.poll_once()
    recorder = Recorder(respond=None)
    source.handler = recorder
    deadline = time.monotonic() + 10
    while not recorder.events and time.monotonic() < deadline:
        source.poll_once()
    assert recorder.events[0]["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"


def test_the_batching_window_gathers_messages_sent_apart(stack):
    def trickle():
        for i in range(3):
            stack.sqs.send_message(QueueUrl=stack.lambda_queue, MessageBody=f"late{i}")
            time.sleep(0.4)

    recorder = Recorder(respond=None)
    thread = threading.Thread(target=trickle)
    thread.start()
    make(stack, recorder, batch_size=10, batching_window=1.8).poll_once()  # < visibility (2 s)
    thread.join()
    assert len(recorder.events[0]["Records"]) == 3

    recorder = Recorder(respond=None)
    thread = threading.Thread(target=trickle)
    thread.start()
    make(stack, recorder, batch_size=10, batching_window=0).poll_once()
    thread.join()
    assert len(recorder.events[0]["Records"]) < 3  # no window: invoked with what is there


def test_batch_size_is_honoured(stack):
    send(stack, 7)
    recorder = Recorder(respond=None)
    make(stack, recorder, batch_size=3).poll_once()
    assert len(recorder.events[0]["Records"]) == 3


# ------------------------------------------------------------------ function processes
def pool(**kw) -> FunctionPool:
    env = kw.pop("env", {})
    import os

    return FunctionPool(
        PROBE,
        "app.lambda_handler",
        "probe",
        os.environ | env,
        timeout=kw.pop("timeout", 5),
        memory=128,
        layers=[],
        **kw,
    )


def test_a_function_keeps_a_warm_process_with_its_own_environment():
    a, b = pool(env={"PROBE_VALUE": "a"}), pool(env={"PROBE_VALUE": "b"})
    try:
        first, second = a({}), a({})
        assert first["pid"] == second["pid"] and second["calls"] == 2  # warm: same container
        other = b({})
        assert (first["env"], other["env"]) == ("a", "b") and other["pid"] != first["pid"]
        assert first["function_name"] == "probe" and 0 < first["remaining_ms"] <= 5000
    finally:
        a.close()
        b.close()


def test_a_timeout_kills_the_process_and_the_next_call_starts_cold():
    p = pool(timeout=1)
    try:
        warm = p({})
        with pytest.raises(InvocationTimeout):
            p({"sleep": 3})
        after = p({})
        assert after["pid"] != warm["pid"] and after["calls"] == 1
    finally:
        p.close()


def test_a_handler_error_is_reported_and_the_process_survives():
    p = pool()
    try:
        pid = p({})["pid"]
        with pytest.raises(InvocationError, match="RuntimeError: boom"):
            p({"raise": "boom"})
        assert p({})["pid"] == pid
    finally:
        p.close()
