"""The payload rules (pure): what every lane can store and load again."""

from __future__ import annotations

import json

import pytest
from tasklane import payloads
from tasklane.errors import InvalidRequest, PayloadUnreadable


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ("s", 0), ([], 1), ({"a": 1}, 1), ({"a": [1, {"b": []}]}, 4), (nested(7), 7)],
)
def test_depth_is_measured_in_containers(value, depth):
    assert not payloads.depth_exceeds(value, depth)
    assert payloads.depth_exceeds(value, depth - 1) == (depth > 0)


def test_depth_is_measured_without_recursion():
    assert payloads.depth_exceeds(nested(100_000), payloads.MAX_DEPTH)


def test_dumps_is_compact_and_keeps_unicode():
    assert payloads.dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (nested(payloads.MAX_DEPTH + 1), "nested more than"),
        (float("nan"), "not JSON"),
        ({"k": {1, 2}}, "not JSON"),
        ("\ud800", "lone surrogate"),
    ],
)
def test_dumps_refuses_what_cannot_round_trip(value, message):
    with pytest.raises(InvalidRequest, match=message):
        payloads.dumps(value, "payload")


def test_loads_turns_any_decoding_failure_into_one_error():
    assert payloads.loads('{"a": 1}') == {"a": 1}
    with pytest.raises(PayloadUnreadable):
        payloads.loads("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PayloadUnreadable):
        payloads.loads("{not json")
    assert json.loads(payloads.dumps(nested(payloads.MAX_DEPTH))) == nested(payloads.MAX_DEPTH)
