"""The engine's connections against a real Postgres: a broken read never poisons the next one."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from tasklane import database


def test_a_read_that_raises_midway_does_not_answer_the_next_query(stack):
    """pg8000 decodes jsonb while it reads the reply; a RecursionError there leaves the rest of
    the reply unread. Without the engine's guard, the next query on that pooled connection gets
    the old reply (here: "This result object does not return rows")."""
    engine = database.engine()
    deep = "[" * 3000 + "]" * 3000
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS deep"))
        conn.execute(text("CREATE TABLE deep (v jsonb)"))
        conn.execute(text("INSERT INTO deep VALUES (CAST(:v AS jsonb))"), {"v": deep})
    try:
        with pytest.raises(RecursionError), engine.connect() as conn:
            conn.execute(text("SELECT v, 1 FROM deep")).all()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 41 + 1")).scalar_one() == 42
            assert conn.execute(text("SELECT count(*) FROM deep")).scalar_one() == 1
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE deep"))


def test_errors_the_server_reports_keep_the_connection(stack):
    engine = database.engine()
    with engine.connect() as conn:
        before = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with pytest.raises(Exception, match="division by zero"), engine.connect() as conn:
        conn.execute(text("SELECT 1 / 0"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() == before
