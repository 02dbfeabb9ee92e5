"""Every vector index the models declare builds on the server in use, as declared.

The models' tables are created in a fresh database (``metadata.create_all``, in a transaction that
is rolled back), and the server's catalogs say how each HNSW or IVFFlat index came out: valid, with
the declared access method, operator classes and build parameters. pgvector refuses some
declarations only when the index is built (too many dimensions for the method, an operator class
of another type), so this finds them before a migration does.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, Index, text
from sqlalchemy.engine import Dialect

from app.models import Base

VECTOR_METHODS = {"hnsw", "ivfflat"}
# How the index came out: the catalogs' answer, independent of what SQLAlchemy rendered.
BUILT_INDEX = text(
    "SELECT i.indisvalid, a.amname, c.reloptions, "
    "       ARRAY(SELECT o.opcname FROM unnest(i.indclass) WITH ORDINALITY AS k(oid, n) "
    "             JOIN pg_opclass o ON o.oid = k.oid ORDER BY k.n) "
    "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
    "WHERE i.indexrelid = to_regclass(:name)"
)


def vector_indexes() -> list[Any]:
    """One parameter per HNSW or IVFFlat index of the models, or one skip when there is none."""
    found = [
        pytest.param(index, id=f"{table.name}.{index.name}")
        for table in Base.metadata.sorted_tables
        for index in sorted(table.indexes, key=lambda index: str(index.name))
        if index.dialect_options["postgresql"]["using"] in VECTOR_METHODS
    ]
    return found or [pytest.param(None, marks=pytest.mark.skip(reason="no vector index declared"))]


def qualified_name(index: Index, dialect: Dialect) -> str:
    """The index's name as the server knows it (naming convention applied), schema-qualified."""
    preparer = dialect.identifier_preparer
    name = preparer.format_index(index)
    schema = index.table.schema if index.table is not None else None
    return f"{preparer.quote_schema(schema)}.{name}" if schema else name


def declared_operator_classes(index: Index) -> list[str | None]:
    """The operator class declared for each indexed column or expression; ``None`` for none."""
    ops = index.dialect_options["postgresql"]["ops"] or {}
    return [ops.get(getattr(expression, "name", None)) for expression in index.expressions]


@pytest.mark.parametrize("index", vector_indexes())
def test_vector_index_builds_as_declared(vector_engine: Engine, index: Index) -> None:
    with vector_engine.connect() as connection:
        Base.metadata.create_all(connection)
        valid, method, options, operator_classes = connection.execute(
            BUILT_INDEX, {"name": qualified_name(index, connection.dialect)}
        ).one()
        connection.rollback()
    postgresql_options = index.dialect_options["postgresql"]
    assert valid
    assert method == postgresql_options["using"]
    declared = declared_operator_classes(index)
    assert [
        built if wanted is not None else None
        for built, wanted in zip(operator_classes, declared, strict=True)
    ] == declared
    parameters = {f"{name}={value}" for name, value in (postgresql_options["with"] or {}).items()}
    assert parameters <= set(options or [])
