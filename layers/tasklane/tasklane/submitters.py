"""The submitting API as the domain's objects reach it: a task's ``.delay()`` and a workflow's
``.apply_async()`` call :func:`submitter`, which :mod:`tasklane.client` binds when it loads, as
Celery's tasks reach their app. The registry and the workflow plans stay below the services:
they name nothing above them, and the import graph has no circle through them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

_bound: dict[str, Callable[..., Any]] = {}


def bind(**submitters: Callable[..., Any]) -> None:
    """Called by :mod:`tasklane.client` on import: ``submit=...``, ``submit_workflow=...``."""
    _bound.update(submitters)


def submitter(name: str) -> Callable[..., Any]:
    """The bound function ``name``; the client is loaded on first use (the package imports it
    lazily, to keep a consumer's cold start short)."""
    if name not in _bound:
        importlib.import_module("tasklane.client")
    return _bound[name]
