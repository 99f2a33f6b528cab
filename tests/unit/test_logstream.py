"""The local stack's compact log lines: a JSON line as a person reads it in a terminal."""

from __future__ import annotations

import json

from tasklane.local.logstream import compact

FAILED = {
    "level": "WARNING",
    "location": "_verdict:559",
    "message": "task failed: will retry",
    "timestamp": "2026-12-05 03:18:48,863+0000",
    "service": "tasklane",
    "cold_start": False,
    "function_name": "ConsumerFunction",
    "function_arn": "arn:aws:lambda:us-east-1:123456789012:function:ConsumerFunction",
    "task_id": "01a24436-250d-7485-b4b2-b5ad9e1d8c37",
    "task": "test.fail_twice",
    "attempt": 1,
    "error_message": "fails on every attempt",
    "traceback": 'Traceback (most recent call last):\n  File "t.py", line 3\nRuntimeError: no\n',
}


def test_a_json_log_line_becomes_a_short_one_with_its_traceback_below():
    first, *trace = compact(json.dumps(FAILED)).split("\n")
    assert first == (
        "03:18:48 WARNING task failed: will retry  task_id=01a24436-250d-7485-b4b2-b5ad9e1d8c37 "
        "task=test.fail_twice attempt=1 error_message=fails on every attempt"
    )
    assert trace == [
        "    Traceback (most recent call last):",
        '      File "t.py", line 3',
        "    RuntimeError: no",
    ]
    assert len(first) < len(json.dumps(FAILED)) / 2


def test_other_lines_are_left_as_they_are():
    for line in ("[2026-12-05 03:18:48: INFO/MainProcess] ready", "{not json", '{"a": 1}', "[]"):
        assert compact(line) == line
