"""What autogenerate must compare for pgvector and Alembic does not.

Alembic compares an index by name, columns, expressions (every cast stripped) and uniqueness. It
does not look at the access method, the ``WITH`` parameters or the operator classes, so moving an
index from ``vector_l2_ops`` to ``vector_cosine_ops``, or changing ``m`` or ``lists``, goes
unnoticed, and so does ``embedding::halfvec(768)`` becoming ``embedding::halfvec(384)``. Its type
comparison also passes ``VECTOR`` against ``VECTOR(3)``, since only one side has an argument.

This module is an Alembic plugin (``alembic.runtime.plugins``, Alembic 1.18+). Importing it
registers the plugin; ``env.py`` enables it by name in ``autogenerate_plugins``. It adds:

* a column comparator that compares pgvector types, and ``bit``, by their full DDL;
* an index comparator that drops and recreates each index whose access method, ``WITH``
  parameters, operator classes or pgvector casts differ from the model, that PostgreSQL marks
  INVALID, or that depends on a column whose pgvector type changes. A table's index drops come
  before its other changes and its index creations after them, so a type change never meets an
  index built for the old type, and the downgrade undoes the same steps in reverse.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import (
    AlterColumnOp,
    CreateIndexOp,
    DropIndexOp,
    MigrateOperation,
    ModifyTableOps,
)
from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import Column, Index, Table, text
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import Cast
from sqlalchemy.types import NullType, TypeEngine

from pgvector_base.migration.rendering import concurrent_builds

log = logging.getLogger(__name__)

PLUGIN_NAME = "pgvector_base.pgvector"
"""The name ``env.py`` lists in ``autogenerate_plugins``."""

# The types pgvector indexes, as DDL spells them (`bit` includes `bit varying`).
VECTOR_TYPES = ("vector", "halfvec", "sparsevec", "bit")

# A cast to one of those types, as PostgreSQL deparses it (`::halfvec(3)`) or as SQLAlchemy
# compiles it (`CAST(embedding AS HALFVEC(3))`).
VECTOR_CAST = re.compile(
    r"(?:::|\bAS\s+)\s*(vector|halfvec|sparsevec|bit(?:\s+varying)?)\b\s*(?:\(\s*(\d+)\s*\))?",
    re.IGNORECASE,
)
# An operator class written at the end of a raw SQL index expression (`... halfvec_l2_ops`).
TRAILING_OPERATOR_CLASS = re.compile(r"\s(\w+_ops)\s*$")

# One row per index of a table, with what the comparison needs, straight from the catalog.
INDEX_QUERY = text(
    """
    SELECT index_class.relname AS name,
           access_method.amname AS method,
           coalesce(index_class.reloptions, '{}') AS options,
           ix.indisvalid AS valid,
           array(SELECT pg_get_indexdef(ix.indexrelid, position, true)
                 FROM generate_series(1, ix.indnkeyatts) AS position
                 ORDER BY position) AS elements,
           array(SELECT opclass.opcname
                 FROM unnest(ix.indclass::oid[]) WITH ORDINALITY AS key(oid, position)
                 JOIN pg_opclass AS opclass ON opclass.oid = key.oid
                 ORDER BY key.position) AS operator_classes,
           array(SELECT opclass.opcdefault
                 FROM unnest(ix.indclass::oid[]) WITH ORDINALITY AS key(oid, position)
                 JOIN pg_opclass AS opclass ON opclass.oid = key.oid
                 ORDER BY key.position) AS defaults,
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
    WHERE ix.indrelid = (
        SELECT table_class.oid
        FROM pg_class AS table_class
        JOIN pg_namespace AS namespace ON namespace.oid = table_class.relnamespace
        WHERE table_class.relname = :table
          AND namespace.nspname = coalesce(:schema, current_schema())
    )
    """
)


@dataclass(frozen=True)
class IndexShape:
    """The parts of an index definition that Alembic does not compare.

    ``operator_classes`` has one entry per key column or expression; in a model's index, ``None``
    stands for the type's default operator class. ``casts`` holds the pgvector casts of each
    element, sorted, such as ``("halfvec(3)",)`` for ``embedding::halfvec(3)``.
    """

    method: str
    options: dict[str, str]
    operator_classes: tuple[str | None, ...]
    casts: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class ExistingIndex:
    """An index as the database has it.

    Besides its shape: which of its operator classes are their type's default, whether queries
    can use it (not INVALID), and the table columns it depends on.
    """

    shape: IndexShape
    defaults: tuple[bool, ...]
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
        modify_ops.ops.extend(
            changed_indexes(autogen_context, modify_ops, conn_table, metadata_table)
        )
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
    existing = existing_indexes(connection, conn_table.schema, conn_table.name)
    reflected = reflected_indexes(conn_table)
    handled = {
        op.index_name for op in modify_ops.ops if isinstance(op, CreateIndexOp | DropIndexOp)
    }
    retyped = {
        op.column_name
        for op in modify_ops.ops
        if isinstance(op, AlterColumnOp)
        and op.modify_type is not None
        and (is_vector_type(op.modify_type, dialect) or is_vector_type(op.existing_type, dialect))
    }
    changes: list[MigrateOperation] = []
    for index in metadata_table.indexes:
        name = str(index.name)
        if name in handled or name not in existing or name not in reflected:
            continue
        found = existing[name]
        reasons = differences(declared_shape(index, dialect), found)
        if found.columns & retyped:
            reasons.append(f"{', '.join(sorted(found.columns & retyped))} changes type")
        if reasons and autogen_context.run_object_filters(
            index, name, "index", False, reflected[name]
        ):
            log.info(
                "Detected changed index %r on %r: %s", name, conn_table.name, "; ".join(reasons)
            )
            changes += [DropIndexOp.from_index(reflected[name]), CreateIndexOp.from_index(index)]
    return changes


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


def existing_indexes(
    connection: Connection, schema: str | None, table: str
) -> dict[str, ExistingIndex]:
    """The indexes of ``schema.table`` as the catalog describes them, by name."""
    indexes = {}
    for row in connection.execute(INDEX_QUERY, {"schema": schema, "table": table}).mappings():
        indexes[row["name"]] = ExistingIndex(
            shape=IndexShape(
                method=row["method"],
                options=dict(option.split("=", 1) for option in row["options"]),
                operator_classes=tuple(row["operator_classes"]),
                casts=tuple(vector_casts(element) for element in row["elements"]),
            ),
            defaults=tuple(row["defaults"]),
            valid=row["valid"],
            columns=frozenset(row["columns"]),
        )
    return indexes


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


def declared_shape(index: Index, dialect: Dialect) -> IndexShape:
    """The shape ``index`` has in the model, from its ``postgresql_*`` options."""
    options = index.dialect_options["postgresql"]
    declared_classes = options["ops"] or {}
    expressions = list(index.expressions)
    elements = [compile_element(expression, dialect) for expression in expressions]
    return IndexShape(
        method=(options["using"] or "btree").lower(),
        options={str(key): str(value).lower() for key, value in (options["with"] or {}).items()},
        operator_classes=tuple(
            declared_classes.get(getattr(expression, "key", None))
            or trailing_operator_class(element)
            for expression, element in zip(expressions, elements, strict=True)
        ),
        casts=tuple(
            declared_casts(expression, element, dialect)
            for expression, element in zip(expressions, elements, strict=True)
        ),
    )


def differences(declared: IndexShape, found: ExistingIndex) -> list[str]:
    """Why the index in the database is not the ``declared`` one, a phrase per difference."""
    existing = found.shape
    reasons = []
    if declared.method != existing.method:
        reasons.append(f"access method {existing.method} -> {declared.method}")
    if declared.options != {key: value.lower() for key, value in existing.options.items()}:
        reasons.append(f"WITH {existing.options} -> {declared.options}")
    if not operator_classes_match(declared.operator_classes, found):
        reasons.append(
            f"operator classes {list(existing.operator_classes)} -> "
            f"{[name or 'default' for name in declared.operator_classes]}"
        )
    if declared.casts != existing.casts:
        reasons.append(f"casts {list(existing.casts)} -> {list(declared.casts)}")
    if not found.valid:
        reasons.append("INVALID (a concurrent build or reindex did not finish)")
    return reasons


def operator_classes_match(declared: tuple[str | None, ...], found: ExistingIndex) -> bool:
    """Whether each declared operator class is the one in use; ``None`` matches a default."""
    used = found.shape.operator_classes
    return len(declared) == len(used) and all(
        is_default if name is None else name == in_use
        for name, in_use, is_default in zip(declared, used, found.defaults, strict=True)
    )


def compile_element(expression: Any, dialect: Dialect) -> str:
    """An index element as ``dialect`` writes it in ``CREATE INDEX``."""
    compile_kwargs = {"literal_binds": True, "include_table": False}
    return str(expression.compile(dialect=dialect, compile_kwargs=compile_kwargs))


def vector_casts(element: str) -> tuple[str, ...]:
    """The pgvector casts written in an index element, sorted: ``("halfvec(3)",)``."""
    return tuple(
        sorted(
            f"{name.lower().replace(' ', '')}({dimensions})" if dimensions else name.lower()
            for name, dimensions in VECTOR_CAST.findall(element)
        )
    )


def declared_casts(expression: Any, element: str, dialect: Dialect) -> tuple[str, ...]:
    """The pgvector casts of a model's index element that PostgreSQL keeps, sorted.

    PostgreSQL drops a cast to the very type its operand has (``embedding::halfvec(3)`` on a
    ``halfvec(3)`` column), so the database's definition never shows one.
    """
    casts = list(vector_casts(element))
    for node in visitors.iterate(expression):
        if isinstance(node, Cast):
            target = type_spec(node.type, dialect)
            if target in casts and target == type_spec(node.clause.type, dialect):
                casts.remove(target)
    return tuple(casts)


def trailing_operator_class(element: str) -> str | None:
    """An operator class written at the end of a raw SQL index expression, if there is one."""
    match = TRAILING_OPERATOR_CLASS.search(element)
    return match.group(1) if match else None


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
        compare_indexes,
        "table",
        "indexes",
        qualifier="postgresql",
        priority=DispatchPriority.LAST,
    )


# Registered once per process, on first import. env.py is executed afresh by every command of a
# process (the tests run many), and Alembic refuses a second plugin of the same name.
setup(Plugin(PLUGIN_NAME))
