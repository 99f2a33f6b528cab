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
    "WHERE c.relname = :name"
)


def is_valid(name: str) -> bool | None:
    """Whether the index is valid; ``None`` when there is none of that name."""
    return op.get_bind().execute(_VALID, {"name": name}).scalar()


def create_indexes(indexes: dict[str, str]) -> None:
    """Build each index (name: its ``CREATE ... INDEX CONCURRENTLY IF NOT EXISTS`` statement)
    outside a transaction, rebuilding one an interrupted earlier run left INVALID. Call it
    inside ``op.get_context().autocommit_block()``."""
    for name, create in indexes.items():
        if is_valid(name) is False:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        op.execute(create)
