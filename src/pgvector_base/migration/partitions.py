"""Tables partitioned by tenant, declared on the model, in autogenerate.

pgvector's advice for many tenants is a partition each (``PARTITION BY LIST (tenant_id)``), or a
fixed number of them by hash: each partition then has its own vector index, which a search
restricted to one tenant uses alone. Alembic renders the parent (``postgresql_partition_by``) but
knows nothing of its partitions: it reflects them as tables that the models lack and proposes
dropping each of them (alembic#539). A model declares its partitions with :func:`by_list` or
:func:`by_hash` in its table arguments::

    class Document(Base):
        __tablename__ = "document"
        __table_args__ = (
            Index("ix_document_embedding", "embedding", postgresql_using="hnsw", ...),
            partitions.by_list("tenant_id", {"acme": ["acme"], "globex": ["globex"]}),
        )

and this plugin, after Alembic's comparison of tables:

* withdraws every proposal to drop a partition (of any table): a partition goes with its parent,
  never alone;
* creates each declared partition the database lacks, ``CREATE TABLE document_acme PARTITION OF
  document FOR VALUES IN ('acme')``, after the parent and its indexes; PostgreSQL builds each
  index of the parent on it. Adding a tenant is one more entry and one autogenerate;
* stops with one line when a partition exists with other bounds than declared (a new hash
  modulus, a value moved between lists: rows would have to move), when the table exists but is
  not partitioned (converting it moves every row), and when the primary key lacks the partition
  column (PostgreSQL refuses it);
* leaves a partition the model no longer declares as it is, with a log line: dropping it would
  delete a tenant's rows. Drop or detach it in a migration written by hand.

The vector index is declared on the model as for any table; partitions' own indexes (named by
PostgreSQL, ``document_acme_embedding_idx``) are neither compared nor dropped. One declared
``postgresql_concurrently=True`` is built partition by partition
(:func:`pgvector_base.migration.indexes.build_on_partitions`), since PostgreSQL cannot build one
concurrently on a partitioned table.

This module is an Alembic plugin (``alembic.runtime.plugins``): importing it registers the plugin,
and ``env.py`` enables it by name in ``autogenerate_plugins``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.plugins import Plugin
from alembic.util import CommandError, DispatchPriority, PriorityDispatchResult
from sqlalchemy import Table, text
from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

PLUGIN_NAME = "pgvector_base.partitions"
"""The name ``env.py`` lists in ``autogenerate_plugins``."""

INFO_KEY = "pgvector_base.partitions"
"""The key of ``Table.info`` that holds a table's :class:`Partitions`."""

# The relation kind and partition flag of a table (`:table`, a qualified name); no row if missing.
RELATION_QUERY = text(
    "SELECT relkind, relispartition FROM pg_class WHERE oid = to_regclass(CAST(:table AS text))"
)
# The partitions of a table: schema, name and bound (`FOR VALUES IN ('acme')`).
PARTITIONS_QUERY = text(
    """
    SELECT namespace.nspname, child.relname, pg_get_expr(child.relpartbound, child.oid)
    FROM pg_inherits AS inheritance
    JOIN pg_class AS child ON child.oid = inheritance.inhrelid
    JOIN pg_namespace AS namespace ON namespace.oid = child.relnamespace
    WHERE inheritance.inhparent = to_regclass(CAST(:table AS text))
    ORDER BY child.relname
    """
)

Value = str | int


@dataclass(frozen=True)
class Partitions:
    """A table's partitions on ``column``: by list (``lists``) or by hash (``modulus``).

    ``lists`` maps each partition's suffix (the partition of ``document`` for ``acme`` is
    ``document_acme``) to the values of ``column`` it holds. With ``modulus`` the partitions are
    ``document_p0`` to ``document_p{modulus-1}``.
    """

    column: str
    lists: Mapping[str, tuple[Value, ...]] | None = None
    modulus: int | None = None

    @property
    def method(self) -> str:
        """``LIST`` or ``HASH``."""
        return "LIST" if self.lists is not None else "HASH"

    def bounds(self, table: str) -> dict[str, str]:
        """Each partition's name and its bound as PostgreSQL prints it."""
        if self.lists is not None:
            return {
                f"{table}_{suffix}": "FOR VALUES IN ({})".format(", ".join(map(literal, values)))
                for suffix, values in self.lists.items()
            }
        assert self.modulus is not None
        return {
            f"{table}_p{remainder}": (
                f"FOR VALUES WITH (modulus {self.modulus}, remainder {remainder})"
            )
            for remainder in range(self.modulus)
        }


def by_list(column: str, partitions: Mapping[str, Sequence[Value]]) -> dict[str, Any]:
    """Table arguments for a table partitioned by the values of ``column``.

    ``partitions`` maps each partition's suffix to the values it holds:
    ``{"acme": ["acme"], "small": ["initech", "hooli"]}`` makes ``document_acme`` and
    ``document_small``. Put the result last in ``__table_args__``, or pass it as ``**`` to
    ``Table``.
    """
    if not partitions or not all(partitions.values()):
        raise ValueError(f"by_list({column!r}, ...): declare at least one value per partition")
    for suffix, values in partitions.items():
        for value in values:
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise ValueError(
                    f"by_list({column!r}, ...): partition {suffix!r} has {value!r}; "
                    "values are strings or integers"
                )
    lists = {suffix: tuple(values) for suffix, values in partitions.items()}
    return declaration(Partitions(column, lists=lists))


def by_hash(column: str, modulus: int) -> dict[str, Any]:
    """Table arguments for a table partitioned into ``modulus`` partitions by a hash of ``column``.

    The modulus is fixed once migrated: a new one would move rows between partitions.
    """
    if isinstance(modulus, bool) or not isinstance(modulus, int) or modulus < 1:
        raise ValueError(f"by_hash({column!r}, {modulus!r}): the modulus is a whole number >= 1")
    return declaration(Partitions(column, modulus=modulus))


def declaration(partitions: Partitions) -> dict[str, Any]:
    """The table arguments that declare ``partitions``."""
    return {
        "postgresql_partition_by": f"{partitions.method} ({partitions.column})",
        "info": {INFO_KEY: partitions},
    }


def declared(table: Table) -> Partitions | None:
    """The partitions ``table`` declares, if any."""
    found = table.info.get(INFO_KEY)
    return found if isinstance(found, Partitions) else None


def literal(value: Value) -> str:
    """``value`` as an SQL literal: ``'acme'``, ``42``."""
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


class CreatePartitionOp(ops.MigrateOperation):
    """``CREATE TABLE name PARTITION OF parent bound``."""

    def __init__(self, schema: str | None, parent: str, name: str, bound: str) -> None:
        self.schema = schema
        self.parent = parent
        self.name = name
        self.bound = bound

    def reverse(self) -> DropPartitionOp:
        """Its downgrade: the partition dropped."""
        return DropPartitionOp(self)

    def to_diff_tuple(self) -> tuple[str, str | None, str, str]:
        """How ``alembic check`` reports it."""
        return ("add_partition", self.schema, self.parent, self.name)


class DropPartitionOp(ops.MigrateOperation):
    """``DROP TABLE name``, only ever the downgrade of a :class:`CreatePartitionOp`."""

    def __init__(self, created: CreatePartitionOp) -> None:
        self.created = created

    def reverse(self) -> CreatePartitionOp:
        """Its upgrade: the partition created again."""
        return self.created

    def to_diff_tuple(self) -> tuple[str, str | None, str, str]:
        """How ``alembic check`` reports it."""
        return ("remove_partition", self.created.schema, self.created.parent, self.created.name)


def compare_partitions(
    autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: set[str | None]
) -> PriorityDispatchResult:
    """Withdraw partition drops, and create the declared partitions the database lacks.

    Runs after Alembic's comparison of the tables of ``schemas``.
    """
    connection = autogen_context.connection
    assert connection is not None
    # A partition is reflected as a table that the models lack: Alembic drops it, and its
    # indexes (those PostgreSQL made for the parent's) in a ModifyTableOps of their own.
    upgrade_ops.ops = [
        op
        for op in upgrade_ops.ops
        if not (
            isinstance(op, ops.DropTableOp | ops.ModifyTableOps)
            and is_partition(connection, op.schema, op.table_name)
        )
    ]
    default = connection.dialect.default_schema_name
    problems: list[str] = []
    for table in autogen_context.sorted_tables:
        partitions = declared(table)
        if partitions is None or table.schema not in schemas | {default}:
            continue
        problems += declaration_problems(table, partitions)
        if problems:
            continue
        strip_declaration(upgrade_ops.ops, table)
        found, creations = missing_partitions(connection, table, partitions)
        if found is not None:
            problems.append(found)
        upgrade_ops.ops += creations
    if problems:
        raise CommandError("; ".join(problems))
    return PriorityDispatchResult.CONTINUE


def is_partition(connection: Connection, schema: str | None, table: str) -> bool:
    """Whether ``schema.table`` is a partition of another table."""
    found = connection.execute(
        RELATION_QUERY, {"table": qualified(connection, schema, table)}
    ).first()
    return found is not None and bool(found.relispartition)


def qualified(connection: Connection, schema: str | None, name: str) -> str:
    """``schema.name`` quoted as SQL needs it, with the default schema spelled out."""
    preparer = connection.dialect.identifier_preparer
    spelled = schema or str(connection.dialect.default_schema_name)
    return f"{preparer.quote_schema(spelled)}.{preparer.quote(name)}"


def declaration_problems(table: Table, partitions: Partitions) -> list[str]:
    """Why ``table``'s declaration cannot be migrated as it stands, a line each."""
    problems = []
    if partitions.column not in table.c:
        problems.append(
            f"table {table.fullname} is partitioned by {partitions.column}, which it does not "
            "have; name one of its columns"
        )
    elif table.primary_key.columns and partitions.column not in table.primary_key.columns:
        problems.append(
            f"table {table.fullname} is partitioned by {partitions.column}, which its primary "
            f"key lacks, and PostgreSQL needs it there; add primary_key=True to "
            f"{partitions.column}"
        )
    return problems


def strip_declaration(operations: Iterable[ops.MigrateOperation], table: Table) -> None:
    """Leave the declaration out of ``table``'s ``op.create_table(...)``: the partitions are
    created by operations of their own, and a migration imports nothing of the template's models.
    """
    for op in operations:
        if (
            isinstance(op, ops.CreateTableOp)
            and op.table_name == table.name
            and op.schema == table.schema
        ):
            op.info = {key: value for key, value in op.info.items() if key != INFO_KEY}


def missing_partitions(
    connection: Connection, table: Table, partitions: Partitions
) -> tuple[str | None, list[CreatePartitionOp]]:
    """The creations of the partitions of ``table`` that the database lacks, or why it cannot
    have them (``None`` if it can)."""
    parent = qualified(connection, table.schema, table.name)
    relation = connection.execute(RELATION_QUERY, {"table": parent}).first()
    if relation is not None and relation.relkind != "p":
        return (
            f"table {table.fullname} exists and is not partitioned, and the model partitions it "
            f"by {partitions.method} ({partitions.column}); converting it moves every row: "
            "write that migration by hand (docs/multitenancy.md, 'Partitions')",
            [],
        )
    existing = (
        {name: bound for _, name, bound in connection.execute(PARTITIONS_QUERY, {"table": parent})}
        if relation is not None
        else {}
    )
    wanted = partitions.bounds(table.name)
    changed = [
        f"{name} holds {existing[name]}, the model {bound}"
        for name, bound in wanted.items()
        if name in existing and existing[name] != bound
    ]
    if changed:
        return (
            f"partitions of table {table.fullname} differ from the model: {'; '.join(changed)}; "
            "changing a partition's bounds moves rows, which autogenerate does not write: "
            "write that migration by hand (docs/multitenancy.md, 'Partitions')",
            [],
        )
    for name in sorted(existing.keys() - wanted.keys()):
        log.warning(
            "Partition %s of %s is not declared on the model; kept, with its rows", name, parent
        )
    return None, [
        CreatePartitionOp(table.schema, table.name, name, bound)
        for name, bound in wanted.items()
        if name not in existing
    ]


@renderers.dispatch_for(CreatePartitionOp)
def render_create_partition(autogen_context: AutogenContext, op: CreatePartitionOp) -> str:
    """``op.execute("CREATE TABLE document_acme PARTITION OF document FOR VALUES IN ('acme')")``."""
    sql = (
        f"CREATE TABLE {name(autogen_context, op.schema, op.name)} "
        f"PARTITION OF {name(autogen_context, op.schema, op.parent)} {op.bound}"
    )
    return f"op.execute({sql!r})"


@renderers.dispatch_for(DropPartitionOp)
def render_drop_partition(autogen_context: AutogenContext, op: DropPartitionOp) -> str:
    """``op.execute('DROP TABLE document_acme')``."""
    return (
        f"op.execute({f'DROP TABLE {name(autogen_context, op.created.schema, op.created.name)}'!r})"
    )


def name(autogen_context: AutogenContext, schema: str | None, table: str) -> str:
    """``table`` (in ``schema``) as an identifier in SQL, quoted only if it needs to be."""
    assert autogen_context.dialect is not None
    preparer = autogen_context.dialect.identifier_preparer
    quoted = preparer.quote(table)
    return f"{preparer.quote_schema(schema)}.{quoted}" if schema else quoted


def setup(plugin: Plugin) -> None:
    """Register :func:`compare_partitions`; Alembic's plugin entry point."""
    # Last among the comparisons of a run's schemas, after Alembic's of the tables, whose partition
    # drops it withdraws; before the template's checks of the whole upgrade (stored_vectors),
    # which would refuse those drops.
    plugin.add_autogenerate_comparator(
        compare_partitions, "schema", qualifier="postgresql", priority=DispatchPriority.LAST
    )


setup(Plugin(PLUGIN_NAME))
