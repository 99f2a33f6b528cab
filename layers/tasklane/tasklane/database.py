"""The Postgres engine: one per process, created on first use and reused by warm containers.

In AWS the URL comes from an RDS-style Secrets Manager secret (``DATABASE_SECRET_ARN``), read
once per container; elsewhere from ``DATABASE_URL``. The pool is tiny on purpose: one Lambda
container serves one request at a time, and RDS Proxy multiplexes the connections.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, exc, make_url

from tasklane.config import Settings, settings
from tasklane.errors import ConfigurationError


def url_from_secret(secret: dict, host: str | None = None, database: str | None = None) -> URL:
    """A SQLAlchemy URL from an RDS secret (username, password; host, port, dbname if present).

    ``host`` and ``database`` override the secret's: an RDS-managed master secret holds only the
    user name and password, and functions connect through RDS Proxy, not the cluster endpoint.
    """
    try:
        host = host or secret["host"]
        return URL.create(
            "postgresql+pg8000",
            username=secret["username"],
            password=secret["password"],
            host=host,
            port=int(secret.get("port", 5432)),
            database=database or secret.get("dbname", "postgres"),
        )
    except KeyError as exc:
        raise ConfigurationError(f"database secret lacks {exc.args[0]!r}") from None


def _read_secret(arn: str) -> dict:
    import boto3  # only in AWS: keep it off the import path of everything else

    value = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    return json.loads(value)


def database_url(config: Settings) -> URL:
    if config.database_url:
        return make_url(config.database_url)
    if config.database_secret_arn:
        return url_from_secret(
            _read_secret(config.database_secret_arn), config.database_host, config.database_name
        )
    raise ConfigurationError("set DATABASE_URL, or DATABASE_SECRET_ARN in AWS")


@functools.cache
def engine() -> Engine:
    """The process's engine. Credentials are read here once, not per request."""
    return make_engine(settings())


def make_engine(config: Settings, socket_timeout: float = 10) -> Engine:
    """An engine as tasklane's own: its pool, its listeners, and a client that gives up on
    the server after ``socket_timeout`` (the store's statements are short; a transactional
    run's connection waits longer, see :meth:`tasklane.store.TaskStore.transaction`)."""
    created = create_engine(
        database_url(config),
        # Connections are opened only as threads ask for them (a Lambda consumer, one thread,
        # holds one), and kept once opened: a Celery worker's main process claims, restores
        # and beats from several threads, and an overflow connection closed after each use
        # cost it a TCP and TLS handshake per statement.
        pool_size=5,
        max_overflow=4,
        # No ping on every checkout (a round trip per statement on the consumer's path): a
        # connection is pinged only after it sat idle (ping_if_idle), and recycled by age.
        pool_recycle=300,
        connect_args=_connect_args(config, socket_timeout=socket_timeout),
    )
    event.listen(created, "connect", _no_delay)
    event.listen(created, "checkin", _checked_in)
    event.listen(created, "checkout", ping_if_idle)
    event.listen(created, "handle_error", discard_after_foreign_error)
    if config.database_prepared_statements:
        # the dialect's own method, not a do_execute event: what wraps the dialect's
        # execute (the fault suite's lost replies) wraps this one
        created.dialect.do_execute = execute_prepared  # type: ignore[method-assign]
    _cache_placeholder_rewrites()
    return created


#: The longest statement whose placeholder rewrite is cached.
PLACEHOLDER_CACHE_CHARS = 4096


def _cache_placeholder_rewrites() -> None:
    """Cache pg8000's rewrite of a statement's placeholders (``%s`` to ``$1``).

    pg8000 rewrites them by scanning the statement character by character on every execute,
    in Python: 11% of the consumer's time went to rewriting the same few statements. For the
    positional styles SQLAlchemy uses, the rewrite depends on the statement's text alone and
    the parameters pass through unchanged, so it is cached (by text; 256 statements of at
    most 4,096 characters, a megabyte at most)."""
    import pg8000.legacy

    rewrite = pg8000.legacy.convert_paramstyle
    if getattr(rewrite, "cached", False):
        return

    @functools.lru_cache(maxsize=256)
    def rewritten(style: str, query: str) -> str:
        return rewrite(style, query, ())[0]

    def convert_paramstyle(style: str, query: str, args: Any) -> tuple[str, Any]:
        # the store's own statements (the claim, the outcomes) are under 2,000 characters;
        # a long one (an IN list of a thousand ids) is rare, and not kept
        if style in ("format", "numeric", "qmark") and len(query) <= PLACEHOLDER_CACHE_CHARS:
            return rewritten(style, query), args
        return rewrite(style, query, args)

    convert_paramstyle.cached = True  # type: ignore[attr-defined]
    pg8000.legacy.convert_paramstyle = convert_paramstyle


#: How many statements each connection keeps prepared (the store's are a few dozen).
PREPARED_PER_CONNECTION = 64
_PREPARED = "_tasklane_prepared"
_STALE = "_tasklane_stale"
#: An execution option: ``False`` on a connection whose statements are not to be prepared (a
#: transactional task's ``db``: the application's own SQL, ``SELECT *`` after a migration).
PREPARE = "tasklane_prepare"


def execute_prepared(cursor: Any, statement: str, parameters: Any, _context: Any = None) -> None:
    """Execute a statement as a prepared statement of its connection (the engine's dialect's
    ``do_execute``).

    pg8000 sends each statement unnamed: the server parses, analyses and plans it again on
    every execute (two thirds of the server's time on the consumer's outcome statement), and
    pg8000 waits for three replies (parse; describe and bind; execute). A statement prepared
    once per connection is only bound and executed, in one round trip, and after its fifth
    execute Postgres keeps a generic plan when it costs no more than the custom ones
    (``plan_cache_mode``). SQLAlchemy's statement cache keeps a statement's text the same from
    call to call; each connection keeps its ``PREPARED_PER_CONNECTION`` most recently used.

    Statements without parameters (``BEGIN``, ``COMMIT``, DDL), long ones (an ``IN`` list of
    a thousand ids, whose text changes with its length) and those of a connection with the
    execution option ``PREPARE`` off take pg8000's own path. A statement
    whose prepared plan no longer fits its table (a migration changed a column's type while
    the process ran) is prepared again: at once outside a transaction, by the caller's retry
    inside one (the transaction is aborted).
    """
    import pg8000
    import pg8000.legacy
    from pg8000.core import make_params

    unprepared = _context is not None and _context.execution_options.get(PREPARE) is False
    if not parameters or len(statement) > PLACEHOLDER_CACHE_CHARS or unprepared:
        cursor.execute(statement, parameters)
        return
    conn = cursor._c  # pg8000's connection: its protocol methods
    query, values = pg8000.legacy.convert_paramstyle(cursor.paramstyle, statement, parameters)
    params = make_params(conn.py_types, values)
    try:
        if not conn._in_transaction and not conn.autocommit:
            conn.execute_simple("begin transaction")
        try:
            result = _run_prepared(conn, query, params)
        except pg8000.DatabaseError as error:
            if not _stale_plan(error):
                raise
            name = getattr(conn, _PREPARED).pop(query)[0]
            if conn._in_transaction:  # aborted: closed before the next statement prepared
                getattr(conn, _STALE).append(name)
                raise
            conn.close_prepared_statement(name)
            result = _run_prepared(conn, query, params)
    except AttributeError:  # pg8000 after its socket was closed, as its own execute says
        if conn._sock is None:
            raise pg8000.InterfaceError("connection is closed") from None
        raise
    except pg8000.DatabaseError as error:
        raise _as_dbapi_error(error) from None
    cursor._context = result  # what pg8000's own execute leaves on the cursor
    cursor._row_iter = iter(result.rows or ())
    cursor._input_oids = ()
    cursor.input_types = []


def _run_prepared(conn: Any, query: str, params: Any) -> Any:
    from pg8000.core import IN_FAILED_TRANSACTION

    prepared: OrderedDict | None = getattr(conn, _PREPARED, None)
    if prepared is None:
        prepared = OrderedDict()
        setattr(conn, _PREPARED, prepared)
        setattr(conn, _STALE, [])
    stale = getattr(conn, _STALE)
    while stale and conn._transaction_status != IN_FAILED_TRANSACTION:
        conn.close_prepared_statement(stale.pop())
    entry = prepared.get(query)
    if entry is None:
        if len(prepared) >= PREPARED_PER_CONNECTION:
            _, (oldest, *_rest) = prepared.popitem(last=False)
            conn.close_prepared_statement(oldest)
        names = set(conn._statement_nums)
        try:
            entry = prepared[query] = conn.prepare_statement(query, ())
        except Exception:  # pg8000 keeps the name of a statement the server refused
            conn._statement_nums.intersection_update(names)
            raise
    else:
        prepared.move_to_end(query)
    name, columns, input_funcs = entry
    return conn.execute_named(name, params, columns, input_funcs, query)


def _stale_plan(error: Exception) -> bool:
    """Postgres' refusal of a prepared statement whose result's type changed under it."""
    detail = error.args[0] if error.args else None
    return (
        isinstance(detail, dict)
        and detail.get("C") == "0A000"
        and "cached plan" in detail.get("M", "")
    )


def _as_dbapi_error(error: Exception) -> Exception:
    """The DB-API error pg8000's own ``execute`` raises for a server's error."""
    import pg8000

    detail = error.args[0] if error.args else None
    if not isinstance(detail, dict):
        return pg8000.ProgrammingError(detail)
    code = detail.get("C")
    if code == "28000":
        return pg8000.InterfaceError(detail)
    if code == "23505":
        return pg8000.IntegrityError(detail)
    return pg8000.ProgrammingError(detail)


#: A connection idle for longer is pinged before use: a frozen Lambda container's, or one a
#: proxy or the server closed while nothing used it. One in use back to back is not.
IDLE_PING_S = 10.0
_IDLE_SINCE = "tasklane_idle_since"


def _checked_in(dbapi_connection: Any, record: Any) -> None:
    record.info[_IDLE_SINCE] = time.monotonic()


def ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Ping a connection that sat idle before handing it out; a dead one is replaced (the
    pool opens a new connection when a checkout listener raises ``DisconnectionError``).

    A failover or a restart while connections are in use is not pinged away: the statement
    that meets the dead connection fails (a 503, a record handed back, a write made again),
    and the pool, told it was a disconnect, replaces every connection opened before it.
    Only the driver's and the socket's errors mean a dead connection: anything else (a task's
    time limit, raised by its alarm while the ping waits) goes on up."""
    import pg8000

    idle_since = record.info.get(_IDLE_SINCE)
    if idle_since is None or time.monotonic() - idle_since < IDLE_PING_S:
        return
    try:
        with autocommit(dbapi_connection):  # no transaction for a ping: one round trip
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
    except (pg8000.Error, OSError) as error:
        raise exc.DisconnectionError(f"idle connection is gone: {error}") from error


@contextlib.contextmanager
def autocommit(dbapi_connection: Any) -> Iterator[None]:
    """For the block, each statement on this pg8000 connection is its own transaction: no
    BEGIN before it, no COMMIT after it. The connection is transactional again after."""
    dbapi_connection.autocommit = True
    try:
        yield
    finally:
        dbapi_connection.autocommit = False


def migration_engine() -> Engine:
    """An engine for schema migrations, with no socket timeout: an index built on a large
    table waits for every older transaction and reads for minutes, and a client that gives up
    after 10 s leaves the build running on the server, holding the migrators' lock. The
    migrator bounds its statements on the server instead (``statement_timeout``)."""
    from sqlalchemy.pool import NullPool

    config = settings()
    return create_engine(
        database_url(config),
        poolclass=NullPool,
        connect_args=_connect_args(config, socket_timeout=None),
    )


def _connect_args(config: Settings, socket_timeout: float | None) -> dict:
    # who holds each connection, in pg_stat_activity: the function (or process) and its pid
    who = os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or "app"
    connect_args: dict = {
        "timeout": socket_timeout,
        "application_name": f"tasklane {who} {os.getpid()}",
    }
    if config.database_secret_arn and not config.database_url:
        connect_args["ssl_context"] = True  # RDS and RDS Proxy speak TLS
    return connect_args


def discard_after_foreign_error(context: Any) -> None:
    """Discard a connection after an error the driver did not report as a database error.

    pg8000 reads a whole result before it returns; an exception raised inside that read (a
    RecursionError decoding a deeply nested jsonb value, a MemoryError, an interrupt) leaves
    the rest of the server's reply unread. The connection then answers the *next* query with
    the old reply: a task read as missing, a claim committed while the client saw an error.
    Errors the server reported (``dbapi.Error``) leave the protocol in step and are kept.
    """
    dbapi = context.dialect.loaded_dbapi
    if not isinstance(context.original_exception, dbapi.Error):
        context.is_disconnect = True  # this connection only: the others are in step
        context.invalidate_pool_on_disconnect = False


def _no_delay(dbapi_connection: Any, _record: Any) -> None:
    """Turn off Nagle's algorithm on pg8000's TCP socket.

    pg8000 writes a statement's messages in pieces; with Nagle on, each round trip can wait for
    a delayed ACK (~40 ms). Measured here: a 100-row insert took 94 ms with it, 11 ms without.
    """
    sock = socket_of(dbapi_connection)
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def socket_of(dbapi_connection: Any) -> socket.socket | None:
    """pg8000's socket of a connection (TCP, TLS or Unix)."""
    return getattr(dbapi_connection, "_usock", None)


def reset() -> None:
    """Forget the engine (after a fork, or when tests change the configuration)."""
    if engine.cache_info().currsize:
        engine().dispose(close=False)
    engine.cache_clear()
