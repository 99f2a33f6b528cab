"""Building an index without stopping writes, in a way a second run can finish.

``CREATE INDEX CONCURRENTLY`` waits for every older transaction; a migrator that times out
there leaves the index INVALID (present, but neither used nor enforced), and ``IF NOT EXISTS``
alone would then keep it so. Dropping such a leftover first makes the migration safe to run
again after an interruption.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

_VALID = text(
    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "WHERE c.relname = :name AND i.indrelid = to_regclass(:table)"
)


def is_valid(name: str, table: str = "tasks") -> bool | None:
    """Whether ``table``'s index ``name`` (in the schema search path) is valid; ``None`` when
    it has none of that name."""
    return op.get_bind().execute(_VALID, {"name": name, "table": table}).scalar()


def require_valid(names: list[str], table: str = "tasks") -> None:
    """Stop before what must not happen without these indexes (dropping the ones they
    replace, a constraint they take over): each must exist on ``table`` and be valid."""
    missing = [name for name in names if is_valid(name, table) is not True]
    if missing:
        raise RuntimeError(f"indexes not valid on {table}: {', '.join(missing)}; run again")


def create_indexes(indexes: dict[str, str]) -> None:
    """Build each index (name: its ``CREATE ... INDEX CONCURRENTLY IF NOT EXISTS`` statement)
    outside a transaction, rebuilding one an interrupted earlier run left INVALID. Call it
    inside ``op.get_context().autocommit_block()``."""
    for name, create in indexes.items():
        if is_valid(name) is False:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        op.execute(create)
