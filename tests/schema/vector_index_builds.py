"""Whether the vector indexes of any metadata build on the server as declared.

Model-agnostic, so that ``test_vector_indexes.py`` applies it to the team's models and the
template's corpus of real projects' schemas (``tests/pgvector_base/corpus/``) to theirs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Index, MetaData, text
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateSchema

from pgvector_base.migration.rendering import register_types

VECTOR_METHODS = {"hnsw", "ivfflat"}
# How the index came out: the catalogs' answer, independent of what SQLAlchemy rendered.
BUILT_INDEX = text(
    "SELECT i.indisvalid, a.amname, c.reloptions, "
    "       ARRAY(SELECT o.opcname FROM unnest(i.indclass) WITH ORDINALITY AS k(oid, n) "
    "             JOIN pg_opclass o ON o.oid = k.oid ORDER BY k.n) "
    "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
    "WHERE i.indexrelid = to_regclass(:name)"
)


def vector_indexes(metadata: MetaData) -> list[Index]:
    """Every HNSW or IVFFlat index of ``metadata``, by table and name."""
    return [
        index
        for table in metadata.sorted_tables
        for index in sorted(table.indexes, key=lambda index: str(index.name))
        if index.dialect_options["postgresql"]["using"] in VECTOR_METHODS
    ]


def index_id(index: Index) -> str:
    """``schema.table.index``: a test id that is unique across the models' schemas."""
    assert index.table is not None
    return f"{index.table.fullname}.{index.name}"


def create_all(connection: Connection, metadata: MetaData) -> None:
    """``metadata.create_all``, after creating the schemas its tables and types name.

    ``create_all`` creates tables, indexes and enum types, but no schema; the migrations do
    (``pgvector_base.migration.schemas``). The dialect learns what migrations teach it first, such
    as writing a full-text index's ``'english'::regconfig``. Indexes declared
    ``postgresql_concurrently=True`` are built plainly (see ``built_plainly``), so all of it runs in
    the caller's transaction.
    """
    register_types(connection.dialect)
    schemas = {table.schema for table in metadata.tables.values()}
    schemas |= {
        getattr(column.type, "schema", None)
        for table in metadata.tables.values()
        for column in table.columns
    }
    for schema in sorted(schema for schema in schemas if schema is not None):
        connection.execute(CreateSchema(schema, if_not_exists=True))
    with built_plainly(metadata):
        metadata.create_all(connection)


@contextmanager
def built_plainly(metadata: MetaData) -> Iterator[None]:
    """Render ``metadata``'s concurrent indexes as plain ``CREATE INDEX`` while inside.

    ``CREATE INDEX CONCURRENTLY`` cannot run in a transaction block, and builds the same index as a
    plain build: it changes only how the build locks the table, which the migrations handle
    (``pgvector_base.migration.indexes``). The models' declarations are restored on the way out.
    """
    concurrent = [
        index
        for table in metadata.tables.values()
        for index in table.indexes
        if index.dialect_options["postgresql"]["concurrently"]
    ]
    for index in concurrent:
        index.dialect_options["postgresql"]["concurrently"] = False
    try:
        yield
    finally:
        for index in concurrent:
            index.dialect_options["postgresql"]["concurrently"] = True


def qualified_name(index: Index, dialect: Dialect) -> str:
    """The index's name as the server knows it (naming convention applied), schema-qualified."""
    preparer = dialect.identifier_preparer
    name = preparer.format_index(index)
    schema = index.table.schema if index.table is not None else None
    return f"{preparer.quote_schema(schema)}.{name}" if schema else name


def declared_operator_classes(index: Index) -> list[str | None]:
    """The operator class declared for each indexed column or expression; ``None`` for none.

    ``postgresql_ops`` is keyed as SQLAlchemy's DDL compiler reads it: by each expression's
    ``key`` (a column's key, or a label's name).
    """
    ops = index.dialect_options["postgresql"]["ops"] or {}
    return [ops.get(getattr(expression, "key", None)) for expression in index.expressions]


def assert_built_as_declared(connection: Connection, metadata: MetaData, index: Index) -> None:
    """Create ``metadata`` (rolled back afterwards) and compare ``index`` with the catalogs."""
    transaction = connection.begin()
    try:
        create_all(connection, metadata)
        found = connection.execute(
            BUILT_INDEX, {"name": qualified_name(index, connection.dialect)}
        ).one_or_none()
    finally:
        transaction.rollback()
    assert found is not None, f"{index_id(index)} was not created"
    valid, method, options, operator_classes = found
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
