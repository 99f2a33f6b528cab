"""The cache of pg8000's placeholder rewrites gives what pg8000 gives, for any statement text."""

from __future__ import annotations

import random

import pg8000.dbapi
import pg8000.legacy
import pytest
from tasklane import database

PIECES = ["%s", "%%", "%", "'", '"', "E'", "$$", "--", "\n", "?", ":1", ":a", "::", "\\", " x "]


@pytest.mark.parametrize("style", ["format", "numeric", "qmark"])
def test_cached_rewrites_equal_the_drivers_own(style):

    database._cache_placeholder_rewrites()
    cached = pg8000.legacy.convert_paramstyle
    original = pg8000.dbapi.convert_paramstyle
    rng = random.Random(7)
    for _ in range(2000):
        query = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12)))
        args = (1, 2, 3)
        try:
            want = original(style, query, args)
        except Exception as exc:  # the driver refuses it: so must the cache
            with pytest.raises(type(exc)):
                cached(style, query, args)
            continue
        assert cached(style, query, args) == want
        assert cached(style, query, args) == want  # from the cache, the second time


def test_a_long_statement_is_rewritten_but_not_kept():

    database._cache_placeholder_rewrites()
    cached = pg8000.legacy.convert_paramstyle
    query = "SELECT 1 WHERE x IN (" + ", ".join(["%s"] * 3000) + ")"
    assert len(query) > database.PLACEHOLDER_CACHE_CHARS
    args = tuple(range(3000))
    assert cached("format", query, args) == pg8000.dbapi.convert_paramstyle("format", query, args)
