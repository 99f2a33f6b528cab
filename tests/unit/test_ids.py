"""Task ids: UUID version 7, time-ordered, unguessable."""

from __future__ import annotations

import time
import uuid

from tasklane.ids import new_id


def test_ids_are_version_7_rfc_uuids_carrying_the_time():
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000
    assert made.version == 7 and made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after
    assert uuid.UUID(str(made)) == made  # a plain UUID in and out


def test_later_ids_sort_after_earlier_ones_and_none_repeat():
    first = [new_id() for _ in range(1000)]
    time.sleep(0.002)
    second = [new_id() for _ in range(1000)]
    assert max(first) < min(second)  # a new millisecond: to the right of the index
    assert len(set(first + second)) == 2000
    # within one millisecond the order is random: 74 bits of it
    assert len({i.int & ((1 << 62) - 1) for i in first}) == 1000
