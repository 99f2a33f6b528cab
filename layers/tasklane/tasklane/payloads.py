"""Payloads and results: the JSON values tasks take and return, and the limits on them. Pure.

A value is checked once, where it enters (submission, a task's return): it must be JSON that
every part can store and load again. JSON has no NaN; UTF-8 has no lone surrogates; and a value
nested deeper than :data:`MAX_DEPTH` would be stored, then fail to load in a consumer whose stack
is deeper than the producer's (the JSON decoders recurse once per level). Each is refused up
front with a clear error, never found later by a worker. (Postgres also refuses ``\\u0000``
in jsonb; the store reports that one.)
"""

from __future__ import annotations

import json
from typing import Any

from tasklane.errors import InvalidRequest, PayloadUnreadable, ResultTooLarge

#: Nesting allowed: far more than real payloads use, far below the interpreter's recursion
#: limit (1,000) in the deepest stack that loads one (a Celery pool process).
MAX_DEPTH = 100


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists/objects more than ``limit`` deep (iterative: no recursion,
    and it stops at the first branch too deep)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def dumps(value: Any, what: str = "payload") -> str:
    """Compact JSON text for ``value``; :class:`InvalidRequest` when it cannot round-trip."""
    if depth_exceeds(value, MAX_DEPTH):
        raise InvalidRequest(f"{what} is nested more than {MAX_DEPTH} levels deep")
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:  # a set, an object, NaN or Infinity
        raise InvalidRequest(f"{what} is not JSON: {exc}") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{what} is not valid Unicode (a lone surrogate)") from None
    return text


def check_result_size(text: str, max_bytes: int) -> str:
    """A result's JSON ``text`` if it is at most ``max_bytes`` (``MAX_RESULT_BYTES``): every
    read of a result must fit in a response. :class:`ResultTooLarge` otherwise."""
    size = len(text.encode())
    if size > max_bytes:
        raise ResultTooLarge(f"the result is {size} bytes, over {max_bytes} (MAX_RESULT_BYTES)")
    return text


def loads(text: str) -> Any:
    """The value stored as ``text``; :class:`PayloadUnreadable` when this process cannot load it
    (stored before the limits existed, or written to the table by hand)."""
    try:
        return json.loads(text)
    except (RecursionError, MemoryError, ValueError) as exc:
        raise PayloadUnreadable(f"the stored payload cannot be loaded: {exc}"[:500]) from None
