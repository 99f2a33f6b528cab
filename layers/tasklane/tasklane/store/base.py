"""The store's connection to Postgres: one engine, a transaction per operation (or the
caller's own), and the bounded transaction a transactional task runs in.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from sqlalchemy import (
    Connection,
    Engine,
)

from tasklane.database import PREPARE, autocommit, socket_of
from tasklane.store.sql import unavailable_as_error

#: How much longer than a transactional run's time limit its client waits for the server.
SOCKET_MARGIN_S = 5


#: How much sooner than a transactional run's time limit the server stops its statement.
STATEMENT_MARGIN_MS = 500


class StoreBase:
    """The engine and the limits every part of the store shares."""

    def __init__(
        self,
        engine: Engine,
        max_payload_bytes: int = 5 * 1024 * 1024,
        max_result_bytes: int = 1024 * 1024,
    ) -> None:
        self.engine = engine
        #: The largest input a workflow step may be given (``MAX_PAYLOAD_BYTES``).
        self.max_payload_bytes = max_payload_bytes
        #: The largest result a task may record (``MAX_RESULT_BYTES``).
        self.max_result_bytes = max_result_bytes

    @contextlib.contextmanager
    def _single(self) -> Iterator[Connection]:
        """A connection for one statement that is its own transaction: in autocommit.

        A single statement is atomic by itself; run in a transaction, pg8000 sends BEGIN
        before it and COMMIT after it, three round trips for one (the consumer's claims and
        outcomes are most of Postgres's work). Only here, for the length of the block: every
        other use of the engine stays transactional."""
        with self.engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            if raw is None or getattr(raw, "_in_transaction", True):  # not a plain pg8000 one
                yield conn
                conn.commit()
                return
            with autocommit(raw):
                yield conn

    @contextlib.contextmanager
    def _transaction(self, connection: Connection | None) -> Iterator[Connection]:
        """tasklane's own short transaction, or a savepoint inside the caller's open one (so a
        refused insert leaves the caller's transaction usable)."""
        if connection is None:
            with self.engine.begin() as conn:
                yield conn
        else:
            with connection.begin_nested():
                yield connection

    @contextlib.contextmanager
    def transaction(self, limit_s: float | None = None) -> Iterator[Connection]:
        """A transaction of tasklane's engine, for a transactional task's run and outcome.

        ``limit_s``, the run's time limit: the server stops any statement of the run that
        would outlast it (``statement_timeout``, a little before the run's own alarm, so the
        statement ends with an error and the connection stays in step), and the client waits
        for the server that long and ``SOCKET_MARGIN_S`` more, instead of the engine's short
        socket timeout (made for the store's own quick statements). A statement the client
        abandons all the same (the alarm struck in a later statement) is cancelled by the
        server once it sees the connection gone (``client_connection_check_interval``)."""
        with unavailable_as_error(), self.engine.begin() as conn:
            conn.execution_options(**{PREPARE: False})  # the task's own SQL: not prepared
            sock = socket_of(conn.connection.dbapi_connection)
            before = sock.gettimeout() if sock is not None else None
            if limit_s:
                ms = max(100, math.ceil(limit_s * 1000) - STATEMENT_MARGIN_MS)
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
            if (conn.dialect.server_version_info or (0,)) >= (14,):
                conn.exec_driver_sql("SET LOCAL client_connection_check_interval = 1000")
            if sock is not None:
                sock.settimeout(limit_s + SOCKET_MARGIN_S if limit_s else None)
            try:
                yield conn
            finally:
                if sock is not None:
                    sock.settimeout(before)
