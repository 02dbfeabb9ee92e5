"""Autogenerate never writes a migration that loses stored data, or that rows would stop.

Embeddings cost money and hours to recompute, and Alembic sees no renames: renaming ``embedding``
to ``vec`` in a model comes out as an ``add_column`` and a ``drop_column`` that deletes every
stored vector. After the comparison, this plugin goes through the upgrade:

* a vector column dropped from a table and one of the same type and dimensions added to it, one
  of each, is a rename: it becomes ``op.alter_column(..., new_column_name=...)``, which keeps the
  vectors (and the downgrade renames it back);
* any other drop of a vector column (``vector``, ``halfvec``, ``sparsevec``, ``bit``), or of a
  table that has one or that holds rows (whatever its columns: another tool's chat history),
  stops autogenerate with one ``FAILED:`` line, unless the run names it:
  ``-x allow_drop=passage.embedding`` (a column), ``-x allow_drop=passage`` (a table),
  ``rag.passage...`` for a schema other than the default, several separated by commas. Naming a
  column that would be renamed writes the drop and the add instead (new embeddings of the same
  size, from another model);
* a drop of a table that a table the upgrade keeps references by foreign key (one that
  ``exclude_tables`` leaves out, say) stops autogenerate too, allowed or not: PostgreSQL would
  refuse the ``DROP TABLE`` (``DependentObjectsStillExist``) halfway through the upgrade;
* a ``NOT NULL`` vector column without a server default, added to an existing table, stops
  autogenerate too: the ``ALTER TABLE`` would fail as soon as the table has rows. Add it nullable,
  fill it, then declare it ``NOT NULL``;
* a vector column added to a table that holds rows, together with an index on it, is written as
  asked, with a warning: the index would be built over an empty column and then take in every
  row of the backfill one by one, where building it once the column is filled is faster
  (docs/embedding-models.md).

This module is an Alembic plugin (``alembic.runtime.plugins``): importing it registers the plugin,
and ``env.py`` enables it by name in ``autogenerate_plugins``.
"""

from __future__ import annotations

import logging
from typing import Any

from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.plugins import Plugin
from alembic.util import CommandError, DispatchPriority, PriorityDispatchResult
from sqlalchemy import Column, exists, select, table, text
from sqlalchemy.engine import Connection, Dialect

from pgvector_base.migration.comparison import is_vector_type, type_spec

logger = logging.getLogger(__name__)

PLUGIN_NAME = "pgvector_base.stored_vectors"
"""The name ``env.py`` lists in ``autogenerate_plugins``."""

ALLOW_DROP = "allow_drop"
"""The ``-x`` argument that names the vector columns and tables a run may drop."""

# The tables other than itself that reference a table by foreign key, as (schema, name).
REFERENCING_SQL = text(
    "SELECT DISTINCT n.nspname, r.relname FROM pg_constraint AS c "
    "JOIN pg_class AS r ON r.oid = c.conrelid JOIN pg_namespace AS n ON n.oid = r.relnamespace "
    "WHERE c.contype = 'f' AND c.conrelid <> c.confrelid "
    "AND c.confrelid = to_regclass(format('%I.%I', CAST(:schema AS text), CAST(:name AS text))) "
    "ORDER BY 1, 2"
)


class RenameColumnOp(ops.AlterColumnOp):
    """``op.alter_column(table, old, new_column_name=new)``, reversed into the opposite rename.

    Alembic's own ``AlterColumnOp`` does not reverse ``new_column_name``.
    """

    def reverse(self) -> RenameColumnOp:
        """Its downgrade: the column renamed back."""
        assert self.modify_name is not None
        reverse = super().reverse()
        return RenameColumnOp(
            self.table_name,
            self.modify_name,
            schema=self.schema,
            existing_type=reverse.existing_type,
            existing_nullable=reverse.existing_nullable,
            existing_server_default=reverse.existing_server_default,
            modify_nullable=reverse.modify_nullable,
            modify_name=self.column_name,
        )

    def to_diff_tuple(self) -> Any:
        """How ``alembic check`` reports it."""
        return ("rename_column", self.schema, self.table_name, self.column_name, self.modify_name)


def keep_stored_vectors(
    autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps
) -> PriorityDispatchResult:
    """Turn vector drop-and-add pairs into renames; refuse other vector drops unless allowed."""
    dialect = autogen_context.dialect
    connection = autogen_context.connection
    assert dialect is not None
    assert connection is not None
    allowed = allowed_drops(autogen_context)
    drops = [op for op in upgrade_ops.ops if isinstance(op, ops.DropTableOp)]
    dropped = {qualified(op.schema, op.table_name) for op in drops}
    problems: list[str] = []
    # By name: Alembic finds removed tables in a set's order, which differs from run to run.
    for drop in sorted(drops, key=lambda drop: qualified(drop.schema, drop.table_name)):
        problems += table_drop_problems(drop, connection, allowed, dropped)
    for modify in upgrade_ops.ops:
        if isinstance(modify, ops.ModifyTableOps):
            rename_pairs(modify, dialect, allowed)
            problems += column_problems(modify, dialect, allowed)
            warn_index_before_backfill(modify, connection)
    if problems:
        raise CommandError("; ".join(problems))
    return PriorityDispatchResult.CONTINUE


def allowed_drops(autogen_context: AutogenContext) -> set[str]:
    """The names given with ``-x allow_drop=...``."""
    environment = autogen_context.migration_context.environment_context
    arguments = environment.get_x_argument(as_dictionary=True) if environment else {}
    return {name.strip() for name in arguments.get(ALLOW_DROP, "").split(",") if name.strip()}


def qualified(schema: str | None, *names: str) -> str:
    """``table.column``, or ``schema.table.column`` outside the default schema."""
    return ".".join(name for name in (schema, *names) if name)


def table_drop_problems(
    op: ops.DropTableOp, connection: Connection, allowed: set[str], dropped: set[str]
) -> list[str]:
    """Why dropping ``op``'s table would lose data or fail, unless the run allows the loss."""
    dialect = connection.dialect
    name = qualified(op.schema, op.table_name)
    vectors = [
        f"{column.name} ({type_spec(column.type, dialect)})"
        for column in op.to_table().columns
        if is_vector_type(column.type, dialect)
    ]
    if vectors:
        what = f" and the vectors stored in {', '.join(vectors)}"
    elif holds_rows(connection, op.schema, op.table_name):
        what = ", which holds rows"
    else:
        what = ""
    referencing = referencing_tables(connection, op.schema, op.table_name)
    kept = [table for table in referencing if table not in dropped]
    if kept:
        return [
            f"autogenerate would drop table {name}{what}, but tables that stay reference it by "
            f"foreign key ({', '.join(kept)}), so the drop would fail; if another tool owns them, "
            f"add {name} to exclude_tables in alembic.ini beside them; otherwise drop them together"
        ]
    if not what or name in allowed:
        return []
    also = (
        f", together with the tables that reference it by foreign key ({', '.join(referencing)})"
        if referencing
        else ""
    )
    return [
        f"autogenerate would drop table {name}{what}; to drop it, {drop_command(name)}; if "
        "another tool owns the table, add it to exclude_tables in "
        f"alembic.ini instead{also}"
    ]


def holds_rows(connection: Connection, schema: str | None, name: str) -> bool:
    """Whether the table holds at least one row (without counting them all)."""
    return bool(connection.scalar(select(exists().select_from(table(name, schema=schema)))))


def referencing_tables(connection: Connection, schema: str | None, name: str) -> list[str]:
    """The other tables that reference ``schema.name`` by foreign key, as :func:`qualified`."""
    default = connection.dialect.default_schema_name
    rows = connection.execute(REFERENCING_SQL, {"schema": schema or default, "name": name})
    return [qualified(None if other == default else other, table) for other, table in rows]


def rename_pairs(modify: ops.ModifyTableOps, dialect: Dialect, allowed: set[str]) -> None:
    """Replace each vector column drop and add of one type, one of each, with a rename."""
    drops = [
        op
        for op in modify.ops
        if isinstance(op, ops.DropColumnOp)
        and is_vector_type(op.to_column().type, dialect)
        and qualified(modify.schema, modify.table_name, op.column_name) not in allowed
    ]
    adds = [
        op
        for op in modify.ops
        if isinstance(op, ops.AddColumnOp) and is_vector_type(op.column.type, dialect)
    ]
    for spec in {type_spec(drop.to_column().type, dialect) for drop in drops}:
        same_drops = [drop for drop in drops if type_spec(drop.to_column().type, dialect) == spec]
        same_adds = [add for add in adds if type_spec(add.column.type, dialect) == spec]
        if len(same_drops) != 1 or len(same_adds) != 1:
            continue
        old, new = same_drops[0].to_column(), same_adds[0].column
        modify.ops[modify.ops.index(same_drops[0])] = RenameColumnOp(
            modify.table_name,
            old.name,
            schema=modify.schema,
            existing_type=old.type,
            existing_nullable=old.nullable,
            modify_nullable=new.nullable if new.nullable != old.nullable else None,
            modify_name=new.name,
        )
        modify.ops.remove(same_adds[0])


def drop_command(name: str) -> str:
    """How to give a drop leave: ``-x`` goes before Alembic's command, or Alembic refuses it."""
    return f"autogenerate again as alembic -x {ALLOW_DROP}={name} revision --autogenerate"


def column_problems(modify: ops.ModifyTableOps, dialect: Dialect, allowed: set[str]) -> list[str]:
    """Vector columns ``modify`` would drop without leave, or add ``NOT NULL`` to a table."""
    problems = []
    for op in modify.ops:
        if isinstance(op, ops.DropColumnOp):
            column: Column[Any] = op.to_column()
            name = qualified(modify.schema, modify.table_name, op.column_name)
            if is_vector_type(column.type, dialect) and name not in allowed:
                problems.append(
                    f"autogenerate would drop column {name} ({type_spec(column.type, dialect)}) "
                    "and every vector stored in it; to rename it, rename the column in the model "
                    "and change nothing else about it in the same revision; to drop it, "
                    f"{drop_command(name)}"
                )
        elif isinstance(op, ops.AddColumnOp):
            column = op.column
            name = qualified(modify.schema, modify.table_name, column.name)
            if (
                is_vector_type(column.type, dialect)
                and not column.nullable
                and column.server_default is None
            ):
                problems.append(
                    f"autogenerate would add column {name} ({type_spec(column.type, dialect)}) "
                    "as NOT NULL without a default, which fails on a table that has rows; "
                    "declare it nullable, migrate and fill it, then declare it NOT NULL and "
                    "autogenerate again"
                )
    return problems


def warn_index_before_backfill(modify: ops.ModifyTableOps, connection: Connection) -> None:
    """Warn when a vector column and an index on it are added together to a table with rows."""
    added = {
        op.column.name
        for op in modify.ops
        if isinstance(op, ops.AddColumnOp) and is_vector_type(op.column.type, connection.dialect)
    }
    indexes = [
        op.index_name
        for op in modify.ops
        if isinstance(op, ops.CreateIndexOp)
        and added & {column.name for column in op.to_index().columns}
    ]
    if indexes and holds_rows(connection, modify.schema, modify.table_name):
        logger.warning(
            "%s gains %s and %s in one revision, on a table that holds rows: the index would "
            "take in every backfilled row one by one; generate the column alone, fill it "
            "(pgvector-backfill), then add the index (docs/embedding-models.md)",
            qualified(modify.schema, modify.table_name),
            ", ".join(sorted(added)),
            ", ".join(str(name) for name in indexes),
        )


def setup(plugin: Plugin) -> None:
    """Register :func:`keep_stored_vectors`; Alembic's plugin entry point."""
    plugin.add_autogenerate_comparator(
        keep_stored_vectors, "autogenerate", priority=DispatchPriority.LAST
    )


setup(Plugin(PLUGIN_NAME))
