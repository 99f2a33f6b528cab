"""Calling the real function handlers with real event shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasklane.local.events import LambdaContext, http_event
from tasklane.local.functions import load_handler

ROOT = Path(__file__).resolve().parents[2]


def handler(function: str):
    return load_handler(ROOT / "functions" / function, "app.lambda_handler")


def call_api(
    method: str, path: str, body: Any = None, headers: dict | None = None, raw: str | None = None
):
    """One HTTP request through the producer function; returns (status, headers, json body)."""
    if raw is None and body is not None:
        raw = json.dumps(body)
    hdrs = {"content-type": "application/json"} | (headers or {})
    event = http_event(method, path, headers=hdrs, body=raw)
    response = handler("producer")(event, LambdaContext(function_name="producer"))
    parsed = json.loads(response["body"]) if response.get("body") else None
    return (
        response["statusCode"],
        {k.lower(): v for k, v in response.get("headers", {}).items()},
        parsed,
    )


def consume(records_event: dict, timeout: float = 30) -> dict:
    return handler("consumer")(
        records_event, LambdaContext(function_name="consumer", timeout_seconds=timeout)
    )
