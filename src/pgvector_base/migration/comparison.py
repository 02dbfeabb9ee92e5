"""What autogenerate must compare for pgvector and Alembic does not.

Alembic compares an index by name, columns, expressions (every cast stripped) and uniqueness. It
does not look at the access method, the ``WITH`` parameters, the operator classes or the
partial-index predicate, so moving an index from ``vector_l2_ops`` to ``vector_cosine_ops``,
changing ``m`` or ``lists``, ``postgresql_where="category = 1"`` becoming ``"category = 2"``, or
``embedding::halfvec(768)`` becoming ``embedding::halfvec(384)`` all go unnoticed. Its type
comparison also passes ``VECTOR`` against ``VECTOR(3)``, since only one side has an argument.

This module is an Alembic plugin (``alembic.runtime.plugins``, Alembic 1.18+). Importing it
registers the plugin; ``env.py`` enables it by name in ``autogenerate_plugins``. It adds:

* a column comparator that compares pgvector types, and ``bit``, by their full DDL;
* an index comparator that drops and recreates each index whose definition differs from the
  model's, that PostgreSQL marks INVALID, or that depends on a column whose pgvector type changes.
  To compare definitions, the server itself deparses both sides: each of the model's own
  ``Index`` objects is built, one at a time, on an empty temporary table of the same name (its
  schema translated to ``pg_temp``), inside a savepoint that is rolled back, and read from the
  catalog as the existing ones are (access method, ``WITH``, operator classes, each indexed
  column or expression, ``WHERE``). No text normalisation of our own can drift from PostgreSQL's,
  and no name is recomputed on a copy: a naming convention, ``index=True`` and unnamed indexes
  keep the name the model gives them.
  A table's index drops come before its other changes and its index creations after them, so a
  type change never meets an index built for the old type, and the downgrade undoes the same steps
  in reverse.
* a column comparator that compares a primary key column as PostgreSQL stores it, ``NOT NULL``,
  whatever ``nullable=`` the model says: PostgreSQL refuses to drop ``NOT NULL`` from one.
* primary keys as PostgreSQL stores them otherwise too: no unique constraint of their own
  (``primary_key=True, unique=True``), which PostgreSQL never creates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import (
    AddConstraintOp,
    AlterColumnOp,
    CreateIndexOp,
    DropIndexOp,
    MigrateOperation,
    ModifyTableOps,
)
from alembic.runtime.plugins import Plugin
from alembic.util import CommandError, DispatchPriority, PriorityDispatchResult
from sqlalchemy import Column, Index, Table, UniqueConstraint, text
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex
from sqlalchemy.types import NullType, TypeEngine

from pgvector_base.migration.rendering import concurrent_builds
from pgvector_base.migration.validation import stored_name

log = logging.getLogger(__name__)

PLUGIN_NAME = "pgvector_base.pgvector"
"""The name ``env.py`` lists in ``autogenerate_plugins``."""

# The types pgvector indexes, as DDL spells them (`bit` includes `bit varying`).
VECTOR_TYPES = ("vector", "halfvec", "sparsevec", "bit")

# The empty copy of a table that the model's indexes are built on, for the server to deparse, has
# the table's name in `pg_temp`, the session's own schema of temporary tables.
TEMPORARY_SCHEMA = "pg_temp"


# One row per index of a table (`:table`, a qualified name), with what the comparison needs,
# straight from the catalog.
INDEX_QUERY = text(
    """
    SELECT index_class.relname AS name,
           access_method.amname AS method,
           coalesce(index_class.reloptions, '{}') AS options,
           ix.indisvalid AS valid,
           ix.indisunique AS unique,
           array(SELECT pg_get_indexdef(ix.indexrelid, position, true)
                 FROM generate_series(1, ix.indnatts) AS position
                 ORDER BY position) AS elements,
           array(SELECT opclass.opcname
                 FROM unnest(ix.indclass::oid[]) WITH ORDINALITY AS key(oid, position)
                 JOIN pg_opclass AS opclass ON opclass.oid = key.oid
                 ORDER BY key.position) AS operator_classes,
           pg_get_expr(ix.indpred, ix.indrelid, true) AS predicate,
           array(SELECT attribute.attname
                 FROM pg_depend AS dependency
                 JOIN pg_attribute AS attribute
                   ON attribute.attrelid = dependency.refobjid
                  AND attribute.attnum = dependency.refobjsubid
                 WHERE dependency.classid = 'pg_class'::regclass
                   AND dependency.objid = ix.indexrelid
                   AND dependency.refclassid = 'pg_class'::regclass
                   AND dependency.refobjid = ix.indrelid
                   AND dependency.refobjsubid > 0) AS columns
    FROM pg_index AS ix
    JOIN pg_class AS index_class ON index_class.oid = ix.indexrelid
    JOIN pg_am AS access_method ON access_method.oid = index_class.relam
    WHERE ix.indrelid = to_regclass(:table)
    """
)


@dataclass(frozen=True)
class IndexShape:
    """An index definition as PostgreSQL deparses it, in the parts Alembic does not compare.

    ``elements`` holds each indexed column or expression (``(embedding)::halfvec(3)``), then
    each ``INCLUDE`` column; ``predicate`` the partial index's ``WHERE`` (``category = 1``), or
    ``None``.
    """

    unique: bool
    method: str
    options: dict[str, str]
    operator_classes: tuple[str, ...]
    elements: tuple[str, ...]
    predicate: str | None


@dataclass(frozen=True)
class ExistingIndex:
    """An index as the database has it: its shape, whether queries can use it (not INVALID),
    and the table columns it depends on."""

    shape: IndexShape
    valid: bool
    columns: frozenset[str]


def compare_vector_type(  # noqa: PLR0917 (Alembic passes a comparator's arguments by position)
    autogen_context: AutogenContext,
    alter_column_op: AlterColumnOp,
    schema: str | None,
    tname: str,
    cname: str,
    conn_col: Column[Any],
    metadata_col: Column[Any],
) -> PriorityDispatchResult:
    """Compare pgvector and ``bit`` columns by their full type, dimensions included.

    Stops Alembic's own type comparison for those columns; other types are left to it.
    """
    dialect = autogen_context.dialect
    assert dialect is not None
    if not (is_vector_type(conn_col.type, dialect) or is_vector_type(metadata_col.type, dialect)):
        return PriorityDispatchResult.CONTINUE
    alter_column_op.existing_type = conn_col.type
    if type_spec(conn_col.type, dialect) != type_spec(metadata_col.type, dialect):
        alter_column_op.modify_type = metadata_col.type
        log.info(
            "Detected type change from %r to %r on '%s.%s'",
            conn_col.type,
            metadata_col.type,
            tname,
            cname,
        )
    return PriorityDispatchResult.STOP


def compare_primary_key_nullable(  # noqa: PLR0917 (Alembic passes a comparator's arguments by position)
    autogen_context: AutogenContext,
    alter_column_op: AlterColumnOp,
    schema: str | None,
    tname: str,
    cname: str,
    conn_col: Column[Any],
    metadata_col: Column[Any],
) -> PriorityDispatchResult:
    """Compare a primary key column's nullability as PostgreSQL stores it: ``NOT NULL``.

    A model may declare one ``nullable=True``; PostgreSQL makes it ``NOT NULL`` anyway and refuses
    the ``DROP NOT NULL`` that Alembic's own comparison would then write on every run. Stops
    Alembic's comparison for primary key columns; other columns are left to it.
    """
    if not metadata_col.primary_key:
        return PriorityDispatchResult.CONTINUE
    alter_column_op.existing_nullable = conn_col.nullable
    if conn_col.nullable:
        alter_column_op.modify_nullable = False
        log.info("Detected NOT NULL on primary key column '%s.%s'", tname, cname)
    return PriorityDispatchResult.STOP


def compare_indexes(  # noqa: PLR0917 (Alembic passes a comparator's arguments by position)
    autogen_context: AutogenContext,
    modify_ops: ModifyTableOps,
    schema: str | None,
    tname: str,
    conn_table: Table | None,
    metadata_table: Table | None,
) -> PriorityDispatchResult:
    """Drop and recreate each index of a table that Alembic's own comparison lets through.

    Runs after Alembic's index comparison and leaves the indexes that one drops or creates alone.
    Then puts the table's index drops first and index creations last, and turns creations the
    model marks ``postgresql_concurrently=True`` into concurrent builds.
    """
    if conn_table is not None and metadata_table is not None:
        with comparing(metadata_table):
            modify_ops.ops.extend(
                changed_indexes(autogen_context, modify_ops, conn_table, metadata_table)
            )
    if metadata_table is not None:
        modify_ops.ops = [
            op for op in modify_ops.ops if not adds_primary_key_twice(op, metadata_table)
        ]
    modify_ops.ops.sort(key=drops_first_creates_last)
    concurrent_builds(modify_ops.ops)
    return PriorityDispatchResult.CONTINUE


def changed_indexes(
    autogen_context: AutogenContext,
    modify_ops: ModifyTableOps,
    conn_table: Table,
    metadata_table: Table,
) -> list[MigrateOperation]:
    """A drop and a create for each index of ``metadata_table`` that the database has otherwise."""
    dialect = autogen_context.dialect
    connection = autogen_context.connection
    assert dialect is not None
    assert connection is not None
    existing = existing_indexes(connection, qualified_name(conn_table, dialect))
    reflected = reflected_indexes(conn_table)
    handled = {
        str(op.index_name) for op in modify_ops.ops if isinstance(op, CreateIndexOp | DropIndexOp)
    }
    # Alembic's own comparison drops and recreates an index whose expressions it reads as text
    # unlike the server's (`coalesce(a, '') || b` against `COALESCE(a, ''::text) || b`); those the
    # server builds alike are compared here too, and Alembic's drop and create withdrawn.
    recreated = {str(op.index_name) for op in modify_ops.ops if isinstance(op, DropIndexOp)} & {
        str(op.index_name) for op in modify_ops.ops if isinstance(op, CreateIndexOp)
    }
    retyped = {
        op.column_name
        for op in modify_ops.ops
        if isinstance(op, AlterColumnOp)
        and op.modify_type is not None
        and (is_vector_type(op.modify_type, dialect) or is_vector_type(op.existing_type, dialect))
    }
    # Each model index by the name PostgreSQL stores it under, the name the database's go by.
    compared = {
        name: index
        for index in sorted(metadata_table.indexes, key=lambda index: str(index.name))
        if (name := stored_name(index, dialect)) is not None
        and (name in recreated or not {name, str(index.name)} & handled)
        and name in existing.keys() & reflected.keys()
    }
    if not compared:
        return []
    declared = declared_indexes(connection, conn_table, metadata_table, compared, dialect)
    changes: list[MigrateOperation] = []
    for name, index in compared.items():
        with comparing(metadata_table, name):
            found = existing[name]
            reasons = differences(declared[index], found)
            if found.columns & retyped:
                reasons.append(f"{', '.join(sorted(found.columns & retyped))} changes type")
            if name in recreated:
                if not reasons:
                    log.info(
                        "Index %r on %r is unchanged as the server builds it", name, conn_table.name
                    )
                    modify_ops.ops = [op for op in modify_ops.ops if not recreates(op, name)]
                continue
            if reasons and autogen_context.run_object_filters(
                index, name, "index", False, reflected[name]
            ):
                log.info(
                    "Detected changed index %r on %r: %s",
                    name,
                    conn_table.name,
                    "; ".join(reasons),
                )
                changes += [
                    DropIndexOp.from_index(reflected[name]),
                    CreateIndexOp.from_index(index),
                ]
    return changes


class ComparisonError(Exception):
    """An unexpected error in the template's comparison, naming the table and index it was on."""


@contextmanager
def comparing(table: Table, index: str | None = None) -> Iterator[None]:
    """Re-raise an unexpected error in the block as one naming ``table`` (and ``index``).

    The original stays chained, with its traceback. Expected failures pass unchanged: a
    one-line ``CommandError``, and a database error, which ``errors.py`` explains or shows with
    the statement that failed.
    """
    try:
        yield
    except (CommandError, DBAPIError, ComparisonError):
        raise
    except Exception as error:
        what = f"index {index} of table {table.fullname}" if index else f"table {table.fullname}"
        raise ComparisonError(
            f"unexpected error while comparing {what} with the database: "
            f"{type(error).__name__}: {error}"
        ) from error


def adds_primary_key_twice(op: MigrateOperation, table: Table) -> bool:
    """Whether ``op`` adds a unique constraint on just ``table``'s primary key columns.

    PostgreSQL does not create one (``Column(primary_key=True, unique=True)``): the primary key
    is that constraint already, so Alembic would find it missing on every run.
    """
    if not isinstance(op, AddConstraintOp):
        return False
    constraint = op.to_constraint()
    return isinstance(constraint, UniqueConstraint) and list(constraint.columns.keys()) == list(
        table.primary_key.columns.keys()
    )


def recreates(op: MigrateOperation, name: str) -> bool:
    """Whether ``op`` is the drop or the create of the index ``name``."""
    return isinstance(op, CreateIndexOp | DropIndexOp) and str(op.index_name) == name


def drops_first_creates_last(op: MigrateOperation) -> int:
    """Sort key that moves index drops to the front and index creations to the back, stably."""
    if isinstance(op, DropIndexOp):
        return 0
    if isinstance(op, CreateIndexOp):
        return 2
    return 1


def is_vector_type(type_: TypeEngine[Any] | None, dialect: Dialect) -> bool:
    """Whether ``type_`` is a pgvector type or ``bit``, the types pgvector indexes."""
    spec = type_spec(type_, dialect)
    return spec is not None and spec.startswith(VECTOR_TYPES)


def type_spec(type_: TypeEngine[Any] | None, dialect: Dialect) -> str | None:
    """``type_`` as DDL spells it, lowercase without spaces (``vector(3)``); ``None`` if unknown."""
    if type_ is None or isinstance(type_, NullType):
        return None
    return type_.compile(dialect=dialect).lower().replace(" ", "")


def existing_indexes(connection: Connection, table: str) -> dict[str, ExistingIndex]:
    """The indexes of ``table`` (a qualified, quoted name) as the catalog describes them."""
    indexes = {}
    for row in connection.execute(INDEX_QUERY, {"table": table}).mappings():
        indexes[row["name"]] = ExistingIndex(
            shape=IndexShape(
                unique=row["unique"],
                method=row["method"],
                options=dict(option.split("=", 1) for option in row["options"]),
                operator_classes=tuple(row["operator_classes"]),
                elements=tuple(row["elements"]),
                predicate=row["predicate"],
            ),
            valid=row["valid"],
            columns=frozenset(row["columns"]),
        )
    return indexes


def declared_indexes(
    connection: Connection,
    conn_table: Table,
    metadata_table: Table,
    indexes: dict[str, Index],
    dialect: Dialect,
) -> dict[Index, IndexShape | str]:
    """The shape of each of ``indexes`` (by name, of ``metadata_table``), as the server builds it
    on ``conn_table``.

    Each of the model's ``Index`` objects is itself built, one at a time, on an empty temporary
    table of the same name with ``conn_table``'s columns: the model's schema is translated to
    ``pg_temp``, so no copy of the index is made and no naming convention renames it. All of it
    happens in a savepoint that is rolled back: nothing is left behind. An index the server
    refuses to build there (it needs a column this migration adds) maps to the server's reason.
    """
    preparer = dialect.identifier_preparer
    scratch = f"{TEMPORARY_SCHEMA}.{preparer.quote(metadata_table.name)}"
    translated = connection.execution_options(
        schema_translate_map={metadata_table.schema: TEMPORARY_SCHEMA}
    )
    declared: dict[Index, IndexShape | str] = {}
    savepoint = connection.begin_nested()
    try:
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {scratch} (LIKE {qualified_name(conn_table, dialect)})"
        )
        for name, index in indexes.items():
            with comparing(metadata_table, name):
                declared[index] = built_shape(translated, index, scratch)
    finally:
        savepoint.rollback()
    return declared


def built_shape(connection: Connection, index: Index, table: str) -> IndexShape | str:
    """``index`` as the server builds it on the empty ``table``, or the server's reason not to.

    The build is rolled back, so ``table`` has no index before or after.
    """
    savepoint = connection.begin_nested()
    try:
        with not_concurrently(index):
            connection.execute(CreateIndex(index))
        (built,) = existing_indexes(connection, table).values()
        return built.shape
    except DBAPIError as error:
        return str(error.orig).splitlines()[0]
    finally:
        savepoint.rollback()


@contextmanager
def not_concurrently(index: Index) -> Iterator[None]:
    """``index`` without ``postgresql_concurrently`` in the block: a transaction cannot build so."""
    options = index.dialect_options["postgresql"]
    concurrently = options["concurrently"]
    options["concurrently"] = False
    try:
        yield
    finally:
        options["concurrently"] = concurrently


def qualified_name(table: Table, dialect: Dialect) -> str:
    """``table``'s name, schema-qualified and quoted as SQL needs it."""
    return str(dialect.identifier_preparer.format_table(table))


def reflected_indexes(conn_table: Table) -> dict[str, Index]:
    """The indexes of the reflected ``conn_table`` by name, to render their drops from.

    Tidied to read like the model in the generated file: reflection reports an empty
    ``postgresql_include`` on every index (Alembic leaves it out of the indexes it reflects
    itself) and ``WITH`` parameters as strings (``{"m": "16"}``).
    """
    for index in conn_table.indexes:
        if index.dialect_kwargs.get("postgresql_include") == []:
            del index.dialect_kwargs["postgresql_include"]
        if index.dialect_kwargs.get("postgresql_with"):
            index.dialect_kwargs["postgresql_with"] = {
                key: int(value) if value.isdigit() else value
                for key, value in index.dialect_kwargs["postgresql_with"].items()
            }
    return {str(index.name): index for index in conn_table.indexes}


def differences(declared: IndexShape | str, found: ExistingIndex) -> list[str]:
    """Why the index in the database is not the ``declared`` one, a phrase per difference."""
    if isinstance(declared, str):
        return [f"the model's definition cannot be built on the table as it is ({declared})"]
    existing = found.shape
    reasons = [
        f"{label} {getattr(existing, part)!r} -> {getattr(declared, part)!r}"
        for part, label in DEFINITION_PARTS
        if getattr(existing, part) != getattr(declared, part)
    ]
    if not found.valid:
        reasons.append("INVALID (a concurrent build or reindex did not finish)")
    return reasons


DEFINITION_PARTS = (
    ("unique", "unique"),
    ("method", "access method"),
    ("options", "WITH"),
    ("operator_classes", "operator classes"),
    ("elements", "indexed columns and expressions"),
    ("predicate", "WHERE"),
)


def setup(plugin: Plugin) -> None:
    """Register the comparators on ``plugin``: Alembic's entry point for a plugin module."""
    plugin.add_autogenerate_comparator(
        compare_vector_type,
        "column",
        "types",
        qualifier="postgresql",
        priority=DispatchPriority.MEDIUM,
    )
    plugin.add_autogenerate_comparator(
        compare_primary_key_nullable,
        "column",
        "nullable",
        qualifier="postgresql",
        priority=DispatchPriority.MEDIUM,
    )
    plugin.add_autogenerate_comparator(
        compare_indexes,
        "table",
        "indexes",
        qualifier="postgresql",
        priority=DispatchPriority.LAST,
    )


# Registered once per process, on first import. env.py is executed afresh by every command of a
# process (the tests run many), and Alembic refuses a second plugin of the same name.
setup(Plugin(PLUGIN_NAME))
