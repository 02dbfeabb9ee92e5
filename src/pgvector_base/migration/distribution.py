"""Citus distribution, declared on the model and migrated like its columns (docs/citus.md).

A model says how Citus places its table in ``__table_args__``, next to its indexes::

    __table_args__ = (Index(...), distributed(by="tenant_id", colocate_with="tenant"))
    __table_args__ = reference()

After the comparison, this plugin compares each model's declaration with Citus's catalog
(``pg_dist_partition``) and adds, after everything else in the upgrade:

* ``create_reference_table`` or ``create_distributed_table`` for a table that gains a
  declaration, references before the distributed tables and each colocation target before the
  tables colocated with it, since Citus needs the tables a foreign key or ``colocate_with`` names
  placed first. A table that existed before is moved with its rows (Citus copies them into the
  shards), and its coordinator's now-hidden local copy is truncated
  (``truncate_local_data_after_distributing_table``);
* ``alter_distributed_table`` for a changed column, shard count or colocation;
* ``undistribute_table`` for a table that loses its declaration, or is moved between reference and
  distributed (then placed again).

The downgrade undoes each in reverse; a table created in the same revision is simply dropped.

Before that, it refuses in one line what Citus would refuse at ``alembic upgrade``: a primary key,
unique constraint or unique index without the distribution column, a foreign key from a
distributed table to a table that is neither a reference table nor colocated with it (or from a
reference or plain table to a distributed one), a ``colocate_with`` naming no distributed model,
and any declaration when the database has no ``citus`` extension (run autogenerate against the
coordinator).

This module is an Alembic plugin (``alembic.runtime.plugins``): importing it registers the plugin,
and ``env.py`` enables it by name in ``autogenerate_plugins``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.plugins import Plugin
from alembic.util import CommandError, DispatchPriority, PriorityDispatchResult
from sqlalchemy import (
    ForeignKeyConstraint,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    UniqueConstraint,
    inspect,
    text,
)
from sqlalchemy.engine import Connection

from pgvector_base.migration.declarations import declaration, string_literal

PLUGIN_NAME = "pgvector_base.distribution"
"""The name ``env.py`` lists in ``autogenerate_plugins``."""

INFO_KEY = "citus"
"""The key of ``Table.info`` that holds a table's :class:`Distributed` or :class:`Reference`."""


@dataclass(frozen=True)
class Distributed:
    """A table hash-distributed by ``column`` into shards, optionally in the colocation group of
    the table ``colocate_with`` (its name, ``schema.name`` outside the default schema)."""

    column: str
    colocate_with: str | None = None
    shard_count: int | None = None
    """``None``: Citus's ``citus.shard_count`` (32), or the colocated table's."""

    def describe(self) -> str:
        """How a message names it: ``distributed by tenant_id``."""
        extra = f", colocated with {self.colocate_with}" if self.colocate_with else ""
        shards = f", {self.shard_count} shards" if self.shard_count else ""
        return f"distributed by {self.column}{extra}{shards}"


@dataclass(frozen=True)
class Reference:
    """A reference table: a full copy on every node, which any distributed table can join and
    reference with a foreign key."""

    def describe(self) -> str:
        """How a message names it."""
        return "a reference table"


Placement = Distributed | Reference


def distributed(
    by: str, *, colocate_with: str | None = None, shard_count: int | None = None
) -> dict[str, Any]:
    """``__table_args__`` (or its last element) for a table distributed by the column ``by``.

    ``colocate_with`` puts its shards beside another distributed table's (same distribution
    column type, same shard count), which joins and foreign keys between the two need;
    ``shard_count`` cannot be given with it, since the colocated table's count applies.
    """
    if colocate_with is not None and shard_count is not None:
        raise ValueError(
            "distributed(): give colocate_with or shard_count, not both "
            "(a colocated table has the shard count of the table it is colocated with)"
        )
    if shard_count is not None and not 1 <= shard_count <= 64_000:
        raise ValueError(f"distributed(): shard_count must be from 1 to 64,000, not {shard_count}")
    return declaration(INFO_KEY, Distributed(by, colocate_with, shard_count))


def reference() -> dict[str, Any]:
    """``__table_args__`` (or its last element) for a reference table."""
    return declaration(INFO_KEY, Reference())


def declared(table: Table) -> Placement | None:
    """What ``table``'s model declares, or ``None`` for a table of the coordinator alone."""
    placement = table.info.get(INFO_KEY)
    return placement if isinstance(placement, Distributed | Reference) else None


class DistributeTableOp(ops.MigrateOperation):
    """``create_distributed_table`` or ``create_reference_table``; for a table that existed
    before, its local copy is then truncated (its rows are in the shards)."""

    def __init__(self, table: str, placement: Placement, *, new_table: bool) -> None:
        self.table = table
        self.placement = placement
        self.new_table = new_table

    def reverse(self) -> ops.MigrateOperation:
        """Nothing for a table the revision creates (dropping it is enough), else undistribute."""
        if self.new_table:
            return NothingOp()
        return UndistributeTableOp(self.table, self.placement)

    def to_diff_tuple(self) -> tuple[str, str, str]:
        """How ``alembic check`` reports it."""
        return ("distribute_table", self.table, self.placement.describe())


class AlterDistributionOp(ops.MigrateOperation):
    """``alter_distributed_table``: another distribution column, shard count or colocation."""

    def __init__(
        self, table: str, placement: Distributed, previous: Distributed, *, cascade: bool = False
    ) -> None:
        self.table = table
        self.placement = placement
        self.previous = previous
        self.cascade = cascade
        """A new shard count for the tables colocated with it too, which keeps them so."""

    def reverse(self) -> AlterDistributionOp:
        """Its downgrade: the previous distribution."""
        return AlterDistributionOp(self.table, self.previous, self.placement, cascade=self.cascade)

    def to_diff_tuple(self) -> tuple[str, str, str, str]:
        """How ``alembic check`` reports it."""
        return (
            "alter_distribution",
            self.table,
            self.previous.describe(),
            self.placement.describe(),
        )


class UndistributeTableOp(ops.MigrateOperation):
    """``undistribute_table``: the rows back into one table on the coordinator."""

    def __init__(self, table: str, previous: Placement) -> None:
        self.table = table
        self.previous = previous

    def reverse(self) -> DistributeTableOp:
        """Its downgrade: the table placed as before."""
        return DistributeTableOp(self.table, self.previous, new_table=False)

    def to_diff_tuple(self) -> tuple[str, str, str]:
        """How ``alembic check`` reports it."""
        return ("undistribute_table", self.table, self.previous.describe())


class SequentialOp(ops.MigrateOperation):
    """``SET LOCAL citus.multi_shard_modify_mode TO 'sequential'`` where it is ``first``; at the
    end of the same steps, nothing but the place of the downgrade's own."""

    def __init__(self, *, first: bool = False) -> None:
        self.first = first

    def reverse(self) -> SequentialOp | NothingOp:
        """The upgrade's last is the downgrade's first."""
        return NothingOp() if self.first else SequentialOp(first=True)

    def to_diff_tuple(self) -> tuple[str]:
        """How ``alembic check`` reports it (never alone)."""
        return ("sequential_mode",)


class NothingOp(ops.MigrateOperation):
    """The downgrade of a new table's distribution: the table's drop takes its shards."""

    def reverse(self) -> NothingOp:
        """Nothing either way."""
        return self

    def to_diff_tuple(self) -> tuple[str]:
        """Never in an upgrade, so never reported; here for completeness of the interface."""
        return ("nothing",)


def _execute(sql: str) -> str:
    return f"op.execute({sql!r})"


@renderers.dispatch_for(DistributeTableOp)
def render_distribute(autogen_context: AutogenContext, op: DistributeTableOp) -> list[str]:
    """``op.execute("SELECT create_distributed_table('doc', 'tenant_id')")`` and, for a table
    with rows, the truncation of its local copy."""
    table = string_literal(op.table)
    placement = op.placement
    if isinstance(placement, Reference):
        lines = [_execute(f"SELECT create_reference_table({table})")]
    else:
        arguments = [table, string_literal(placement.column)]
        if placement.colocate_with:
            arguments.append(f"colocate_with => {string_literal(placement.colocate_with)}")
        if placement.shard_count:
            arguments.append(f"shard_count => {placement.shard_count}")
        lines = [_execute(f"SELECT create_distributed_table({', '.join(arguments)})")]
    if not op.new_table:
        lines.append(_execute(f"SELECT truncate_local_data_after_distributing_table({table})"))
    return lines


@renderers.dispatch_for(AlterDistributionOp)
def render_alter(autogen_context: AutogenContext, op: AlterDistributionOp) -> str:
    """``op.execute("SELECT alter_distributed_table('doc', distribution_column => ...)")``, with
    the arguments that change."""
    new, old = op.placement, op.previous
    arguments = [string_literal(op.table)]
    if new.column != old.column:
        arguments.append(f"distribution_column => {string_literal(new.column)}")
    if new.shard_count and new.shard_count != old.shard_count:
        arguments.append(f"shard_count => {new.shard_count}")
        if op.cascade:
            arguments.append("cascade_to_colocated => true")
    if new.colocate_with != old.colocate_with:
        arguments.append(f"colocate_with => {string_literal(new.colocate_with or 'none')}")
    return _execute(f"SELECT alter_distributed_table({', '.join(arguments)})")


@renderers.dispatch_for(UndistributeTableOp)
def render_undistribute(autogen_context: AutogenContext, op: UndistributeTableOp) -> str:
    """``op.execute("SELECT undistribute_table('doc')")``."""
    return _execute(f"SELECT undistribute_table({string_literal(op.table)})")


@renderers.dispatch_for(SequentialOp)
def render_sequential(autogen_context: AutogenContext, op: SequentialOp) -> list[str]:
    """The setting, where it is first."""
    if not op.first:
        return []
    return [_execute("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")]


@renderers.dispatch_for(NothingOp)
def render_nothing(autogen_context: AutogenContext, op: NothingOp) -> list[str]:
    """No line."""
    return []


@dataclass(frozen=True)
class Current:
    """A table's placement in Citus's catalog, with its colocation group and shard count."""

    placement: Placement
    colocation: int
    shard_count: int


def name_of(table: Table, default_schema: str | None) -> str:
    """How Citus's functions and messages name ``table``: ``schema.name`` outside the default
    schema, identifiers quoted where they need it."""
    quote = '"{}"'.format
    name = table.name if table.name.islower() and table.name.isidentifier() else quote(table.name)
    if table.schema is None or table.schema == default_schema:
        return name
    schema = table.schema
    return f"{schema if schema.islower() and schema.isidentifier() else quote(schema)}.{name}"


def current_placements(connection: Connection, default_schema: str | None) -> dict[str, Current]:
    """Every Citus table's placement, by :func:`name_of`'s name, from ``pg_dist_partition``."""
    rows = connection.execute(
        text(
            "SELECT n.nspname, c.relname, p.partmethod, p.repmodel, "
            "column_to_column_name(p.logicalrelid, p.partkey), p.colocationid, "
            "(SELECT count(*) FROM pg_dist_shard s WHERE s.logicalrelid = p.logicalrelid) "
            "FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace"
        )
    ).all()
    found: dict[str, Current] = {}
    for schema, table, method, replication, column, colocation, shards in rows:
        name = name_of(Table(table, MetaData(), schema=schema), default_schema)
        if method == "h":
            found[name] = Current(Distributed(column, None, shards), colocation, shards)
        elif replication == "t":
            found[name] = Current(Reference(), colocation, shards)
        # Others are Citus's local tables, which the coordinator alone holds, as undeclared ones.
    return found


def has_citus(connection: Connection) -> bool:
    """Whether the database has the ``citus`` extension."""
    return bool(
        connection.scalar(text("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')"))
    )


def refusals(
    tables: dict[str, Table], placements: dict[str, Placement | None], default_schema: str | None
) -> list[str]:
    """What Citus would refuse of the declared ``placements`` (by table name), each in words that
    name the fix."""
    problems: list[str] = []
    for name, table in tables.items():
        placement = placements[name]
        if isinstance(placement, Distributed):
            problems.extend(_distributed_refusals(name, table, placement, placements))
        for key in table.foreign_keys:
            target = name_of(key.column.table, default_schema)
            target_placement = placements.get(target)
            if target == name:
                continue
            if isinstance(placement, Distributed):
                if isinstance(target_placement, Reference):
                    continue
                if isinstance(target_placement, Distributed) and _group(name, placements) == _group(
                    target, placements
                ):
                    continue
                problems.append(
                    f"{name}'s foreign key to {target} needs {target} to be a reference table or "
                    f"colocated with {name}: declare {target} reference(), or give {name} "
                    f"colocate_with={target!r} (or drop the foreign key)"
                )
            elif isinstance(target_placement, Distributed):
                problems.append(
                    f"{name} has a foreign key to the distributed table {target}: declare {name} "
                    f"distributed(by=..., colocate_with={target!r}) (or drop the foreign key)"
                )
    return problems


def _distributed_refusals(
    name: str, table: Table, placement: Distributed, placements: dict[str, Placement | None]
) -> Iterable[str]:
    column = placement.column
    if column not in table.columns:
        yield f"{name} is distributed by {column!r}, which is not one of its columns"
        return
    colocated = placement.colocate_with
    if colocated is not None and not isinstance(placements.get(colocated), Distributed):
        yield (
            f"{name} is colocated with {colocated!r}, which no model declares distributed(): "
            "name a distributed table (schema.name outside the default schema)"
        )
    keys: list[tuple[str, list[str]]] = []
    for constraint in table.constraints:
        if isinstance(constraint, PrimaryKeyConstraint | UniqueConstraint) and constraint.columns:
            kind = "primary key" if isinstance(constraint, PrimaryKeyConstraint) else "unique"
            keys.append((kind, [c.name for c in constraint.columns]))
    for index in table.indexes:
        if isinstance(index, Index) and index.unique:
            keys.append((f"unique index {index.name}", [c.name for c in index.columns]))
    for kind, columns in keys:
        if column not in columns:
            yield (
                f"{name} is distributed by {column}, which its {kind} ({', '.join(columns)}) "
                f"lacks: add {column} to it (Citus checks uniqueness within a shard)"
            )


def _group(name: str, placements: dict[str, Placement | None]) -> str:
    """The table at the root of ``name``'s ``colocate_with`` chain."""
    seen = {name}
    placement = placements.get(name)
    while isinstance(placement, Distributed) and placement.colocate_with:
        name = placement.colocate_with
        if name in seen:
            break
        seen.add(name)
        placement = placements.get(name)
    return name


def compare_distribution(
    autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps
) -> PriorityDispatchResult:
    """Add the operations that place each model's table as it declares; refuse, in one line,
    what Citus would refuse."""
    connection = autogen_context.connection
    assert connection is not None
    metadata = autogen_context.metadata
    metadatas = metadata if isinstance(metadata, list | tuple) else [metadata]
    default_schema = (
        autogen_context.dialect.default_schema_name if autogen_context.dialect else None
    )
    tables = {
        name_of(table, default_schema): table
        for each in metadatas
        if isinstance(each, MetaData)
        for table in each.tables.values()
        if autogen_context.run_object_filters(table, table.name, "table", False, None)
    }
    placements = {name: declared(table) for name, table in tables.items()}
    wanted = {name: placement for name, placement in placements.items() if placement is not None}
    citus = has_citus(connection)
    if wanted and not citus:
        raise CommandError(
            f"the models declare Citus placements ({', '.join(sorted(wanted))}) but the database "
            "has no citus extension: run autogenerate against the Citus coordinator "
            "(docs/citus.md), or remove distributed()/reference() from those models"
        )
    if not citus:
        return PriorityDispatchResult.CONTINUE
    problems = refusals(tables, placements, default_schema)
    if problems:
        raise CommandError("the models need a fix for Citus: " + "; ".join(problems))
    current = current_placements(connection, default_schema)
    created: dict[str, ops.CreateTableOp] = {}
    for op in upgrade_ops.ops:
        if isinstance(op, ops.CreateTableOp):
            created[name_of(op.to_table(), default_schema)] = op
            # Rendered by the operations below, not as create_table(info=...), whose class the
            # generated file would not import.
            op.info.pop(INFO_KEY, None)
    changes: list[ops.MigrateOperation] = []
    for name in _placement_order(wanted):
        changes.extend(_changes(name, wanted[name], current.get(name), current, name in created))
    for name, now in sorted(current.items()):
        if name in tables and placements[name] is None:
            changes.append(UndistributeTableOp(name, now.placement))
    if changes:
        # Citus places no table that a foreign key joins to a table of another kind, which is
        # every table here in turn: their foreign keys go, and come back once all are placed.
        moved = {
            op.table for op in changes if isinstance(op, DistributeTableOp | UndistributeTableOp)
        }
        dropped, added = _foreign_keys_around(connection, tables, created, moved, default_schema)
        if dropped or added or moved & created.keys():
            # After a parallel operation, Citus refuses a foreign key to a reference table and
            # a schema's DROP (the downgrade's of a new table's schema) in the same transaction;
            # on one connection per worker it takes both. New tables are empty: nothing to copy.
            changes = [SequentialOp(first=True), *dropped, *changes, *added, SequentialOp()]
        upgrade_ops.ops.extend(changes)
    return PriorityDispatchResult.CONTINUE


class NewTableForeignKeyOp(ops.CreateForeignKeyOp):
    """A foreign key of a table created in the same revision, added once the tables are placed;
    the table's drop takes it in the downgrade."""

    def reverse(self) -> NothingOp:  # type: ignore[override]
        """Nothing: dropping the table is enough."""
        return NothingOp()


def _foreign_keys_around(
    connection: Connection,
    tables: dict[str, Table],
    created: dict[str, ops.CreateTableOp],
    moved: set[str],
    default_schema: str | None,
) -> tuple[list[ops.MigrateOperation], list[ops.MigrateOperation]]:
    """The foreign keys between ``moved`` tables and others: the drops to run before the
    placements, and the creations after them."""
    dropped: list[ops.MigrateOperation] = []
    added: list[ops.MigrateOperation] = []
    for name, op in created.items():
        keys = [item for item in op.columns if isinstance(item, ForeignKeyConstraint)]
        if name in moved or any(
            name_of(key.referred_table, default_schema) in moved for key in keys
        ):
            op.columns = [item for item in op.columns if not isinstance(item, ForeignKeyConstraint)]
            for key in keys:
                plain = ops.CreateForeignKeyOp.from_constraint(key)
                added.append(
                    NewTableForeignKeyOp(
                        plain.constraint_name,
                        plain.source_table,
                        plain.referent_table,
                        plain.local_cols,
                        plain.remote_cols,
                        **plain.kw,
                    )
                )
    inspector = inspect(connection)
    for name, table in tables.items():
        if name in created:
            continue
        for found in inspector.get_foreign_keys(table.name, table.schema):
            referred = Table(found["referred_table"], MetaData(), schema=found["referred_schema"])
            if name not in moved and name_of(referred, default_schema) not in moved:
                continue
            create = ops.CreateForeignKeyOp(
                found["name"],
                table.name,
                found["referred_table"],
                found["constrained_columns"],
                found["referred_columns"],
                source_schema=table.schema,
                referent_schema=found["referred_schema"],
                **{
                    option: value
                    for option, value in found.get("options", {}).items()
                    if option in {"ondelete", "onupdate", "deferrable", "initially", "match"}
                },
            )
            dropped.append(
                ops.DropConstraintOp(
                    found["name"], table.name, "foreignkey", schema=table.schema, _reverse=create
                )
            )
            added.append(create)
    return dropped, added


def _placement_order(wanted: dict[str, Placement]) -> list[str]:
    """Reference tables first, then each distributed table after the one it is colocated with."""
    ordered = sorted(name for name, placement in wanted.items() if isinstance(placement, Reference))
    remaining = sorted(name for name in wanted if name not in ordered)
    while remaining:
        for name in remaining:
            placement = wanted[name]
            target = placement.colocate_with if isinstance(placement, Distributed) else None
            if target is None or target not in remaining:
                ordered.append(name)
                remaining.remove(name)
                break
        else:  # a cycle of colocate_with: Citus will say so
            ordered.extend(remaining)
            break
    return ordered


def _changes(
    name: str,
    placement: Placement,
    now: Current | None,
    current: dict[str, Current],
    new_table: bool,
) -> list[ops.MigrateOperation]:
    if now is None:
        return [DistributeTableOp(name, placement, new_table=new_table)]
    if isinstance(placement, Reference) or isinstance(now.placement, Reference):
        if type(placement) is type(now.placement):
            return []
        return [
            UndistributeTableOp(name, now.placement),
            DistributeTableOp(name, placement, new_table=False),
        ]
    # Compare only what the model declares: an undeclared shard count or colocation is Citus's.
    partners = sorted(
        other
        for other, there in current.items()
        if other != name and there.colocation == now.colocation
    )
    target = current.get(placement.colocate_with or "")
    colocated = placement.colocate_with is None or (
        target is not None and target.colocation == now.colocation
    )
    previous = Distributed(
        now.placement.column if isinstance(now.placement, Distributed) else placement.column,
        placement.colocate_with if colocated else (partners[0] if partners else None),
        now.shard_count,
    )
    if (
        previous.column == placement.column
        and colocated
        and placement.shard_count in (None, now.shard_count)
    ):
        return []
    return [AlterDistributionOp(name, placement, previous, cascade=bool(partners))]


def setup(plugin: Plugin) -> None:
    """Register :func:`compare_distribution`; Alembic's plugin entry point."""
    plugin.add_autogenerate_comparator(
        compare_distribution, "autogenerate", priority=DispatchPriority.LAST
    )


setup(Plugin(PLUGIN_NAME))
