"""Unique tasks: at most one live task per key, or per key within a window.

A task declared ``@task(unique_key=("account", "report"))`` has a key made of those payload
fields (or of a function of the payload, or given per call). A submission whose key matches a
task of the same name that is still live (pending, scheduled, queued or running), or whose
window is not over (``unique_for`` seconds from its creation, stored with it as
``unique_until``), returns that task instead of creating another: a second
"rebuild the report for account 42" while one is waiting or running is the same work.

This is not an ``Idempotency-Key``, which replays one request (the same body gets the same
answer, another body a 422); a unique key deduplicates different
requests that mean the same work, for as long as that work is live.

Postgres decides, so it holds across every producer at once: the insert takes a transaction
lock on the task's name and key, reads the newest task with that key, and inserts only if none
matches (:meth:`tasklane.store.submission.Submissions.insert`). Pure functions here: the
declaration and the key of one payload.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tasklane.errors import ConfigurationError, InvalidRequest
from tasklane.keys import KeyFunction, KeySource, checked_key, declared_source, key_of
from tasklane.lifecycle import Status

#: The statuses a unique key covers unless the task names others: a task not yet finished.
LIVE = (Status.PENDING, Status.SCHEDULED, Status.QUEUED, Status.RUNNING)
#: The longest window: a year.
MAX_WINDOW_S = 366 * 86400


@dataclass(frozen=True, slots=True)
class Uniqueness:
    """A task's uniqueness: its key (payload fields, or a function of the payload:
    :mod:`tasklane.keys`), its window in seconds after a task's creation (None: while live
    only) and the statuses it covers."""

    key: KeySource
    within_s: float | None = None
    states: tuple[Status, ...] = LIVE

    def key_of(self, payload: Any) -> str:
        """The key of ``payload``; :class:`InvalidRequest` (400) if it has none."""
        return key_of(self.key, payload, "unique_key")


def given_key(key: Any) -> str:
    """A key given with a call (the key itself, not fields)."""
    return checked_key(key, "unique_key")


def checked_window(seconds: Any) -> float | None:
    """A window as given (``unique_for``): None, or 0 to a year of seconds."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidRequest("unique_for must be a number of seconds")
    if not 0 <= seconds <= MAX_WINDOW_S:  # (NaN fails this too)
        raise InvalidRequest(f"unique_for must be 0 to {MAX_WINDOW_S} seconds")
    return float(seconds) or None


def declared(
    task: str,
    key: str | Iterable[str] | KeyFunction | None,
    within_s: float | None,
    states: Iterable[str | Status] | None,
) -> Uniqueness | None:
    """A task's ``unique_key``, ``unique_for`` and ``unique_states`` as declared, checked now
    (:class:`ConfigurationError` at definition, not at the first submission)."""
    if key is None:
        if within_s is not None or states is not None:
            raise ConfigurationError(
                f"task {task!r}: unique_for and unique_states need a unique_key"
            )
        return None
    key = declared_source(task, "unique_key", key)
    try:
        window = checked_window(within_s)
        covered = LIVE if states is None else tuple(Status(s) for s in states)
    except (InvalidRequest, ValueError) as exc:
        raise ConfigurationError(f"task {task!r}: {exc}") from None
    if not covered and window is None:
        raise ConfigurationError(f"task {task!r}: unique_states is empty and there is no window")
    return Uniqueness(key, window, covered)
