"""The moments tasklane accepts, wherever one comes in (an API field, a cursor, a Celery
``eta``): those Postgres and the driver store, and near which time arithmetic cannot overflow.

Python's datetimes end at years 1 and 9999: ``9999-12-31T23:59:59-14:00`` is a valid RFC 3339
moment that has no UTC form there, and a day's margin on either side keeps ``run_at + delay``
and the like inside the range.
"""

from __future__ import annotations

from datetime import UTC, datetime

EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def in_range(moment: datetime, field: str) -> datetime:
    """``moment`` itself if it lies between ``EARLIEST`` and ``LATEST``; else a
    ``ValueError`` naming ``field``."""
    try:
        utc = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise ValueError(
            f"{field} must lie between {EARLIEST.date().isoformat()} and "
            f"{LATEST.date().isoformat()} (UTC), "
            f"not {moment.isoformat()}"
        )
    return moment
