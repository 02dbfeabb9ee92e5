"""pgvector types in reflection, and the Python that autogenerate writes for pgvector.

Generated migrations import the pgvector types they use, and an index the model declares with
``postgresql_concurrently=True`` is built and dropped with
:mod:`pgvector_base.migration.indexes`, outside the migration's transaction, since
``CREATE INDEX CONCURRENTLY`` cannot run inside one.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from alembic.autogenerate import render_op_text, renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from pgvector.sqlalchemy import HALFVEC, SPARSEVEC, VECTOR
from sqlalchemy.engine import Dialect

PGVECTOR_MODULE = "pgvector.sqlalchemy"
CONCURRENTLY = "postgresql_concurrently"
INDEXES_IMPORT = "from pgvector_base.migration import indexes"

# Type names as reflection reports them; `bit` is PostgreSQL's own type and needs no entry.
REFLECTED_TYPES: dict[str, type[Any]] = {
    "vector": VECTOR,
    "halfvec": HALFVEC,
    "sparsevec": SPARSEVEC,
}


def register_vector_types(dialect: Dialect) -> None:
    """Let ``dialect`` reflect pgvector columns as pgvector types, not as ``NullType``.

    Without this, ``alembic check`` and type comparison cannot see a vector column's dimensions.
    pgvector-python registers the same names when imported; doing it here does not depend on that.
    """
    dialect.ischema_names.update(REFLECTED_TYPES)  # type: ignore[attr-defined]


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render pgvector types as ``VECTOR(dim=1536)`` and import them in the generated migration.

    Alembic's default writes ``pgvector.sqlalchemy.vector.VECTOR(dim=1536)`` without importing
    ``pgvector``, so the generated file fails with ``NameError``. Everything else renders as usual.
    """
    if type_ == "type" and type(obj).__module__.startswith(PGVECTOR_MODULE + "."):
        name = type(obj).__name__
        autogen_context.imports.add(f"from {PGVECTOR_MODULE} import {name}")
        return repr(obj)
    return False


Creation = TypeVar("Creation", bound=ops.CreateIndexOp)


def index_creation(kind: type[Creation], op: ops.CreateIndexOp) -> Creation:
    """``op`` as an operation of class ``kind``, without ``postgresql_concurrently``."""
    options = {key: value for key, value in op.kw.items() if key != CONCURRENTLY}
    return kind(
        op.index_name,
        op.table_name,
        op.columns,
        schema=op.schema,
        unique=op.unique,
        if_not_exists=op.if_not_exists,
        **options,
    )


class CreateIndexConcurrentlyOp(ops.CreateIndexOp):
    """Creation of an index the model marks ``postgresql_concurrently=True``."""

    def reverse(self) -> DropIndexConcurrentlyOp:
        """Its downgrade: the same index dropped concurrently."""
        assert self.index_name is not None
        return DropIndexConcurrentlyOp(
            self.index_name, self.table_name, schema=self.schema, _reverse=self
        )


class DropIndexConcurrentlyOp(ops.DropIndexOp):
    """The drop of an index created by :class:`CreateIndexConcurrentlyOp`, on downgrade."""

    def reverse(self) -> CreateIndexConcurrentlyOp:
        """Its upgrade: the index built concurrently again."""
        assert isinstance(self._reverse, CreateIndexConcurrentlyOp)
        return self._reverse


def concurrent_builds(operations: list[ops.MigrateOperation]) -> None:
    """Turn the index creations marked ``postgresql_concurrently=True`` into concurrent ones."""
    for position, op in enumerate(operations):
        if isinstance(op, ops.CreateIndexOp) and op.kw.get(CONCURRENTLY):
            operations[position] = index_creation(CreateIndexConcurrentlyOp, op)


@renderers.dispatch_for(CreateIndexConcurrentlyOp)
def render_create_index_concurrently(
    autogen_context: AutogenContext, op: CreateIndexConcurrentlyOp
) -> str:
    """``indexes.create_index_concurrently(...)``, with the arguments ``op.create_index`` takes.

    The flag itself is left out: the helper sets it, in the autocommit block it needs.
    """
    autogen_context.imports.add(INDEXES_IMPORT)
    plain = render_op_text(autogen_context, index_creation(ops.CreateIndexOp, op))
    return "indexes.create_index_concurrently(" + plain.split("create_index(", 1)[1]


@renderers.dispatch_for(DropIndexConcurrentlyOp)
def render_drop_index_concurrently(
    autogen_context: AutogenContext, op: DropIndexConcurrentlyOp
) -> str:
    """``indexes.drop_index_concurrently(name, table)``."""
    autogen_context.imports.add(INDEXES_IMPORT)
    schema = f", schema={op.schema!r}" if op.schema else ""
    return f"indexes.drop_index_concurrently({op.index_name!r}, {op.table_name!r}{schema})"
