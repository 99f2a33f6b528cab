"""A unique task's key, made from its payload (tasklane.unique: pure functions)."""

from __future__ import annotations

import pytest
from tasklane.errors import InvalidRequest
from tasklane.lifecycle import Status
from tasklane.unique import LIVE, Uniqueness, checked_window, declared


def test_the_key_is_the_named_fields_values_in_order_whatever_else_the_payload_holds():
    by_fields = Uniqueness(("account", "report"))
    key = by_fields.key_of({"report": {"b": 1, "a": 2}, "account": 42, "note": "x"})
    assert key == 'account=42,report={"a":2,"b":1}'  # canonical: the same values make the same key
    assert by_fields.key_of({"account": 42, "report": {"a": 2, "b": 1}}) == key
    assert by_fields.key_of({"account": 43, "report": {"a": 2, "b": 1}}) != key


def test_a_function_makes_the_key_and_its_errors_are_the_callers():
    assert Uniqueness(lambda p: f"list-{p['list']}").key_of({"list": "news"}) == "list-news"
    with pytest.raises(InvalidRequest, match="could not be made: KeyError"):
        Uniqueness(lambda p: f"list-{p['list']}").key_of({})
    with pytest.raises(InvalidRequest, match="non-empty string"):
        Uniqueness(lambda p: 7).key_of({})


@pytest.mark.parametrize(
    ("payload", "message"),
    [({"x": 1}, "'account', missing"), ([1], "must be a JSON object"), (None, "JSON object")],
)
def test_a_payload_without_the_key_is_refused(payload, message):
    with pytest.raises(InvalidRequest, match=message):
        Uniqueness(("account",)).key_of(payload)


def test_windows_and_declarations():
    assert checked_window(None) is None and checked_window(0) is None
    assert checked_window(90) == 90.0
    for bad in (-1, float("nan"), True, "60", 10**9):
        with pytest.raises(InvalidRequest):
            checked_window(bad)
    assert declared("t", None, None, None) is None
    assert declared("t", "account", None, None) == Uniqueness(("account",), None, LIVE)
    running_only = declared("t", ["a"], 60, ["running"])
    assert running_only.states == (Status.RUNNING,) and running_only.within_s == 60.0
