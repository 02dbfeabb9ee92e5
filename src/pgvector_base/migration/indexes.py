"""Building and dropping indexes without blocking writes, for migrations on tables that hold data.

``CREATE INDEX`` locks the table against writes for the whole build, which for an HNSW index on
millions of rows can take hours. ``CREATE INDEX CONCURRENTLY`` does not, but it cannot run inside
a transaction, and when it is interrupted (cancelled, killed, out of memory) it leaves an INVALID
index behind that queries ignore and writes still pay for. A migration calls::

    from pgvector_base.migration import indexes

    def upgrade() -> None:
        indexes.create_index_concurrently(
            "ix_item_embedding", "item", ["embedding"],
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
            maintenance_work_mem="2GB",
        )

    def downgrade() -> None:
        indexes.drop_index_concurrently("ix_item_embedding", "item")

Both run in Alembic's ``autocommit_block()``, which first commits the migration's transaction, so
keep each such call in a migration of its own, and without the migration timeouts
(:func:`pgvector_base.migration.timeouts.lifted`): a concurrent build blocks no one, may take hours,
and waits for every older transaction. Running the migration again after an interruption rebuilds an
INVALID leftover and skips an index that was completed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from alembic import op
from alembic.operations import ops
from sqlalchemy import ColumnElement, TextClause, text
from sqlalchemy.schema import CreateIndex

from pgvector_base.migration import builds, timeouts

log = logging.getLogger(__name__)

# A memory size as PostgreSQL accepts it, such as 512MB or 2GB; anything else is refused before
# it can reach the SET statement.
MEMORY_SIZE = re.compile(r"\d+\s*(?:B|kB|MB|GB|TB)?")

CURRENT_SETTING = text("SELECT current_setting(:name)")
# The partitions of a table (`:table`, a quoted name), as schema and name.
PARTITIONS = text(
    "SELECT namespace.nspname, child.relname FROM pg_inherits "
    "JOIN pg_class AS child ON child.oid = inhrelid "
    "JOIN pg_namespace AS namespace ON namespace.oid = child.relnamespace "
    "WHERE inhparent = to_regclass(CAST(:table AS text)) ORDER BY 2"
)
# The indexes attached to a partitioned index (`:index`, a quoted name).
ATTACHED = text(
    "SELECT child.relname FROM pg_inherits JOIN pg_class AS child ON child.oid = inhrelid "
    "WHERE inhparent = to_regclass(CAST(:index AS text))"
)
INDEX_VALIDITY = text(
    """
    SELECT ix.indisvalid
    FROM pg_index AS ix
    JOIN pg_class AS index_class ON index_class.oid = ix.indexrelid
    JOIN pg_namespace AS namespace ON namespace.oid = index_class.relnamespace
    WHERE index_class.relname = :name
      AND namespace.nspname = coalesce(:schema, current_schema())
    """
)


def create_index_concurrently(
    index_name: str,
    table_name: str,
    columns: Sequence[str | TextClause | ColumnElement[Any]],
    *,
    schema: str | None = None,
    maintenance_work_mem: str | None = None,
    max_parallel_maintenance_workers: int | None = None,
    **kw: Any,
) -> None:
    """Build an index with ``CREATE INDEX CONCURRENTLY``; arguments as for ``op.create_index``.

    ``maintenance_work_mem`` (such as ``"2GB"``) and ``max_parallel_maintenance_workers`` are set
    on the migration's session for this build only and reset after it. An INVALID index of the
    same name, left by an interrupted build, is dropped and built again; a valid one is kept.
    With ``--sql`` the script drops any index of that name first, as it cannot look.
    """
    context = op.get_context()
    with context.autocommit_block(), timeouts.lifted():
        if context.as_sql:
            drop_if_exists(index_name, table_name, schema)
        elif children := partitions(table_name, schema):
            with build_settings(maintenance_work_mem, max_parallel_maintenance_workers):
                build_on_partitions(
                    index_name, table_name, columns, schema=schema, children=children, kw=kw
                )
            return
        else:
            valid = op.get_bind().scalar(INDEX_VALIDITY, {"name": index_name, "schema": schema})
            if valid:
                log.info("Index %r exists and is valid; not building it again", index_name)
                return
            if valid is False:
                log.info("Index %r is INVALID (an interrupted build); rebuilding it", index_name)
                op.drop_index(index_name, table_name, schema=schema, postgresql_concurrently=True)
        with build_settings(maintenance_work_mem, max_parallel_maintenance_workers):
            op.create_index(
                index_name,
                table_name,
                columns,
                schema=schema,
                postgresql_concurrently=True,
                **kw,
            )


def partitions(table_name: str, schema: str | None) -> list[tuple[str, str]]:
    """The partitions of ``table_name`` as (schema, name); none if it is not partitioned."""
    return [
        (str(child_schema), str(child))
        for child_schema, child in op.get_bind().execute(
            PARTITIONS, {"table": qualified(table_name, schema)}
        )
    ]


def qualified(table_name: str, schema: str | None) -> str:
    """``schema.table_name`` quoted, for ``to_regclass``."""
    preparer = op.get_bind().dialect.identifier_preparer
    name = preparer.quote(table_name)
    return f"{preparer.quote_schema(schema)}.{name}" if schema else name


def build_on_partitions(
    index_name: str,
    table_name: str,
    columns: Sequence[str | TextClause | ColumnElement[Any]],
    *,
    schema: str | None,
    children: list[tuple[str, str]],
    kw: dict[str, Any],
) -> None:
    """Build an index of a partitioned table without blocking its writes.

    PostgreSQL cannot build one concurrently on a partitioned table, so, as its documentation
    ("CREATE INDEX", "Notes") advises: the parent's index alone (``ON ONLY``, invalid until every
    partition has one), then each partition's concurrently, each attached to it. Running again
    after an interruption keeps what was completed and attached, and rebuilds an INVALID
    leftover.
    """
    bind = op.get_bind()
    if bind.scalar(INDEX_VALIDITY, {"name": index_name, "schema": schema}) is None:
        parent = ops.CreateIndexOp(index_name, table_name, columns, schema=schema, **kw).to_index()
        ddl = str(CreateIndex(parent).compile(dialect=bind.dialect))
        op.execute(ddl.replace(" ON ", " ON ONLY ", 1))
    attached = {
        str(name) for name in bind.scalars(ATTACHED, {"index": qualified(index_name, schema)})
    }
    for child_schema, child in children:
        # A name of the partition's and the index's, within PostgreSQL's 63 bytes.
        child_index = f"{child}_{index_name}"[:63]
        if child_index in attached:
            continue
        valid = bind.scalar(INDEX_VALIDITY, {"name": child_index, "schema": child_schema})
        if valid is False:
            log.info("Index %r is INVALID (an interrupted build); rebuilding it", child_index)
            drop_if_exists(child_index, child, child_schema)
        if not valid:
            op.create_index(
                child_index,
                child,
                columns,
                schema=child_schema,
                postgresql_concurrently=True,
                **kw,
            )
        op.execute(
            f"ALTER INDEX {qualified(index_name, schema)} "
            f"ATTACH PARTITION {qualified(child_index, child_schema)}"
        )


def drop_index_concurrently(index_name: str, table_name: str, *, schema: str | None = None) -> None:
    """Drop an index with ``DROP INDEX CONCURRENTLY IF EXISTS``, without blocking the table."""
    with op.get_context().autocommit_block(), timeouts.lifted():
        drop_if_exists(index_name, table_name, schema)


def drop_if_exists(index_name: str, table_name: str, schema: str | None) -> None:
    """``DROP INDEX CONCURRENTLY IF EXISTS``; call it inside an autocommit block.

    The index of a partitioned table is dropped without ``CONCURRENTLY``, which PostgreSQL
    refuses for one; the drop takes a moment's lock on each partition.
    """
    context = op.get_context()
    partitioned = not context.as_sql and bool(partitions(table_name, schema))
    op.drop_index(
        index_name,
        table_name,
        schema=schema,
        if_exists=True,
        postgresql_concurrently=not partitioned,
    )


@contextmanager
def build_settings(
    maintenance_work_mem: str | None, max_parallel_maintenance_workers: int | None
) -> Iterator[None]:
    """Set the given index build settings on the migration's session, and restore them after.

    A plain ``SET`` (not ``SET LOCAL``) because the build runs outside any transaction. The
    previous values (those :mod:`~pgvector_base.migration.builds` sized for the session) come
    back even when the build fails; ``--sql`` cannot read them, and sets the overrides again.
    """
    settings: dict[str, str] = {}
    if maintenance_work_mem is not None:
        if not MEMORY_SIZE.fullmatch(maintenance_work_mem):
            raise ValueError(
                f"maintenance_work_mem={maintenance_work_mem!r} is not a memory size like '2GB'"
            )
        settings["maintenance_work_mem"] = f"'{maintenance_work_mem}'"
    if max_parallel_maintenance_workers is not None:
        settings["max_parallel_maintenance_workers"] = str(int(max_parallel_maintenance_workers))
    context = op.get_context()
    previous = (
        {}
        if context.as_sql
        else {name: op.get_bind().scalar(CURRENT_SETTING, {"name": name}) for name in settings}
    )
    for name, value in settings.items():
        op.execute(f"SET {name} = {value}")
    try:
        yield
    finally:
        for name in settings:
            if context.as_sql:
                op.execute(f"RESET {name}")
            else:
                value = str(previous[name]).replace("'", "''")
                op.execute(f"SET {name} = '{value}'")
        if context.as_sql and settings:
            for statement in builds.statements():
                op.execute(statement)
