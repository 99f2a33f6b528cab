"""Keys made of a task's payload: named fields, or a function of the payload.

A unique task's key (:mod:`tasklane.unique`) and a limit's key (:mod:`tasklane.limits`: "at
most 5 running per account") both name the part of a payload that makes two tasks the same
work or the same tenant. Declared as field names, a key reads ``account=42`` (several:
``account=42,report="daily"``, each value as canonical JSON, so equal values make equal
keys; past 255 characters, their SHA-256); declared as a function, it is the string the
function returns. Pure functions: the
declaration is checked when the task is defined, the key made when a task is submitted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any

from tasklane.errors import ConfigurationError, InvalidRequest

#: The longest key stored (a longer one, from a function or a call, is refused).
MAX_KEY_CHARS = 255

KeyFunction = Callable[[Any], str]
#: Payload field names, or a function of the payload.
KeySource = tuple[str, ...] | KeyFunction


def declared_source(task: str, option: str, given: str | Iterable[str] | KeyFunction) -> KeySource:
    """``given`` as a key's source (one field name, several, or a function), checked now:
    :class:`ConfigurationError` at definition, not at the first submission."""
    if callable(given):
        return given
    fields = (given,) if isinstance(given, str) else tuple(given)
    if not fields or not all(isinstance(field, str) and field for field in fields):
        raise ConfigurationError(
            f"task {task!r}: {option} is payload field names (or a function of the payload)"
        )
    return fields


def key_of(source: KeySource, payload: Any, option: str) -> str:
    """The key of ``payload``; :class:`InvalidRequest` (400) if it has none."""
    if callable(source):
        try:
            key = source(payload)
        except Exception as exc:  # the application's function: its error is the reason
            raise InvalidRequest(f"{option} could not be made: {exc!r}") from None
        return checked_key(key, option)
    if not isinstance(payload, dict):
        raise InvalidRequest(
            f"{option} names payload fields ({', '.join(source)}): the payload must be a "
            "JSON object"
        )
    missing = [field for field in source if field not in payload]
    if missing:
        raise InvalidRequest(
            f"{option} names {', '.join(repr(f) for f in missing)}, missing from the payload"
        )
    key = ",".join(f"{field}={_canonical(payload[field])}" for field in source)
    if len(key) > MAX_KEY_CHARS:  # values too long to show: the same values, the same hash
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return checked_key(key, option)


def _canonical(value: Any) -> str:
    """A value as one JSON text, whatever its spelling: keys sorted, ``1.0`` as ``1`` (JSON
    clients send either), characters as they are."""
    return json.dumps(_integral(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def checked_key(key: Any, option: str) -> str:
    """A key as stored: a non-empty string of at most :data:`MAX_KEY_CHARS` characters,
    without NUL (which Postgres' text cannot hold)."""
    if not isinstance(key, str) or not key:
        raise InvalidRequest(f"{option} must be a non-empty string")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidRequest(f"{option} is {len(key)} characters, over {MAX_KEY_CHARS}")
    if "\x00" in key:
        raise InvalidRequest(f"{option} must not contain NUL (\\u0000)")
    return key
