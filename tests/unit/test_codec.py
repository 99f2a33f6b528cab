"""The wire codec against stock Celery 5.7 / kombu 5.7 messages (shared/vectors)."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from tasklane import codec
from tasklane.errors import MessageDecodeError


def test_every_vector_decodes_to_its_expected_fields(vectors):
    assert len(vectors) >= 7
    for name, vector in vectors.items():
        message = codec.decode(vector["sqs_body"])
        expected = vector["expected"]
        got = {
            "task": message.task,
            "id": message.id,
            "args": message.args,
            "kwargs": message.kwargs,
            "retries": message.retries,
            "eta": message.eta,
            "expires": message.expires,
            "content_type": message.content_type,
            "routing_key": message.routing_key,
        }
        assert got == expected, name


@pytest.mark.parametrize(
    "case", ["celery-claim-check", "celery-dash-queue", "celery-raw-json-body"]
)
def test_encode_reproduces_stock_celery_bytes(vectors, case):
    """Golden: given the same process-derived fields, the encoder writes Celery's exact body."""
    vector = vectors[case]
    raw = vector["sqs_body"]
    is_raw_json = raw.startswith("{")
    envelope = json.loads(raw if is_raw_json else base64.b64decode(raw))
    message = codec.decode(raw)
    props = envelope["properties"]
    body = codec.encode(
        message.task,
        message.args[0] if message.id == message.args[0] else message.id,
        routing_key=message.routing_key,
        origin=message.headers["origin"],
        reply_to=props["reply_to"],
        delivery_tag=props["delivery_tag"],
        base64_envelope=not is_raw_json,
    )
    if message.id == message.args[0]:
        assert body == raw
    else:  # send_task without task_id: Celery's id differs from the argument; compare the rest
        mine = json.loads(body if is_raw_json else base64.b64decode(body))
        assert mine["headers"]["task"] == envelope["headers"]["task"]
        assert mine["properties"]["delivery_info"] == props["delivery_info"]


def test_claim_check_is_the_only_argument(vectors):
    message = codec.decode(vectors["celery-claim-check"]["sqs_body"])
    assert message.claim_check == uuid.UUID("f8d554d3-3ac1-489e-a4f0-d08816517b47")


def test_messages_with_kwargs_are_not_claim_checks(vectors):
    message = codec.decode(vectors["celery-unicode-kwargs"]["sqs_body"])
    assert message.kwargs == {"note": "héllo ✓ 日本"}
    with pytest.raises(MessageDecodeError, match="claim-check"):
        _ = message.claim_check


def test_round_trip_of_a_fresh_message():
    task_id = str(uuid.uuid4())
    body = codec.encode(
        "a.task", task_id, routing_key="q", origin="o", reply_to="r", delivery_tag="d"
    )
    message = codec.decode(body)
    assert (message.task, message.id, message.args, message.kwargs) == (
        "a.task",
        task_id,
        [task_id],
        {},
    )
    assert message.routing_key == "q"
    raw = codec.encode(
        "a.task",
        task_id,
        routing_key="q",
        origin="o",
        reply_to="r",
        delivery_tag="d",
        base64_envelope=False,
    )
    assert raw.startswith("{") and codec.decode(raw) == message


def _envelope(**changes):
    task_id = str(uuid.uuid4())
    env = json.loads(
        codec.encode(
            "a.task",
            task_id,
            routing_key="q",
            origin="o",
            reply_to="r",
            delivery_tag="d",
            base64_envelope=False,
        )
    )
    env.update(changes)
    return json.dumps(env)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "base64|JSON"),
        ("not base64 at all!", "base64"),
        (base64.b64encode(b"\xff\xfe").decode(), "UTF-8 JSON"),
        (base64.b64encode(b"[1, 2]").decode(), "not a JSON object"),
        ("{}", "lacks"),
        (_envelope(**{"content-type": "application/x-python-serialize"}), "only JSON"),
        (_envelope(**{"content-type": "application/x-yaml"}), "only JSON"),
        (_envelope(**{"content-encoding": "binary"}), "content encoding"),
        (_envelope(headers={"lang": "py"}), "task name or id"),
        (_envelope(body="!!!"), "base64"),
        (_envelope(body=base64.b64encode(b'{"a": 1}').decode()), r"\[args, kwargs, embed\]"),
        (_envelope(body=base64.b64encode(b"[{}, [], {}]").decode()), "args must be a list"),
    ],
)
def test_anything_else_raises_one_named_error(body, message):
    with pytest.raises(MessageDecodeError, match=message):
        codec.decode(body)


def test_pickle_is_refused_even_when_it_would_decode():
    import pickle

    payload = base64.b64encode(pickle.dumps(((), {}, {}))).decode()
    body = _envelope(**{"content-type": "application/x-python-serialize"}, body=payload)
    with pytest.raises(MessageDecodeError, match="refused"):
        codec.decode(body)


def test_eta_and_expires_read_as_aware_times(vectors):
    countdown = codec.decode(vectors["celery-countdown"]["sqs_body"])
    assert countdown.eta_at.isoformat() == "2026-11-24T00:19:50.428858+00:00"
    assert countdown.expires_at is None
    expires = codec.decode(vectors["celery-expires"]["sqs_body"])
    assert expires.expires_at.utcoffset().total_seconds() == 0 and expires.eta_at is None


def test_a_naive_eta_is_utc_and_a_malformed_one_is_poison():
    message = codec.CeleryMessage("t", "i", [], {}, eta="2026-01-01T00:00:00")
    assert message.eta_at.tzinfo is not None and message.eta_at.hour == 0
    with pytest.raises(MessageDecodeError, match="eta"):
        _ = codec.CeleryMessage("t", "i", [], {}, eta="next tuesday").eta_at


@pytest.mark.parametrize("eta", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_an_eta_past_the_calendars_edge_is_poison(eta):
    """It could be neither stored nor run when it says: to the DLQ at once, not re-sent."""
    with pytest.raises(MessageDecodeError, match="eta must lie between"):
        _ = codec.CeleryMessage("t", "i", [], {}, eta=eta).eta_at


@pytest.mark.parametrize("where", ["envelope", "payload"])
def test_a_body_too_deep_to_decode_is_a_decode_error_not_a_crash(where):
    deep = "[" * 5000 + "]" * 5000
    if where == "envelope":
        body = '{"body": ' + deep + "}"
    else:
        body = codec.encode(
            "t",
            str(uuid.uuid4()),
            routing_key="q",
            origin="o",
            reply_to="r",
            delivery_tag="d",
            base64_envelope=False,
        )
        envelope = json.loads(body)
        envelope["body"] = base64.b64encode(deep.encode()).decode()
        body = json.dumps(envelope)
    with pytest.raises(MessageDecodeError, match="nested too deeply"):
        codec.decode(body)
