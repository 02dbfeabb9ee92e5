"""Types in reflection, and the Python that autogenerate writes for them.

Generated migrations import the pgvector types they use. A column type of the team's own (a
``TypeDecorator``, a ``UserDefinedType``, a subclass of a SQLAlchemy type) is written as the
SQLAlchemy or pgvector type its DDL is, so a migration never imports the team's package, whose
code may change or go while old migrations stay. An index the model declares with
``postgresql_concurrently=True`` is built and dropped with
:mod:`pgvector_base.migration.indexes`, outside the migration's transaction, since
``CREATE INDEX CONCURRENTLY`` cannot run inside one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar
from weakref import WeakKeyDictionary

import sqlalchemy
from alembic.autogenerate import render, render_op_text, renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.plugins import Plugin
from alembic.util import CommandError, DispatchPriority, PriorityDispatchResult
from pgvector.sqlalchemy import HALFVEC, SPARSEVEC, VECTOR
from sqlalchemy import Column, String, inspect, text
from sqlalchemy.dialects.postgresql import REGCONFIG
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.types import NullType, TypeDecorator, TypeEngine

PGVECTOR_MODULE = "pgvector.sqlalchemy"
CONCURRENTLY = "postgresql_concurrently"
INDEXES_IMPORT = "from pgvector_base.migration import indexes"

# Modules a migration may import types from: they outlive any version of the team's models.
LIBRARY_MODULES = ("sqlalchemy.", PGVECTOR_MODULE + ".")

# Type names as reflection reports them; `bit` is PostgreSQL's own type and needs no entry.
REFLECTED_TYPES: dict[str, type[Any]] = {
    "vector": VECTOR,
    "halfvec": HALFVEC,
    "sparsevec": SPARSEVEC,
}

PLUGIN_NAME = "pgvector_base.types"
"""The name ``env.py`` lists in ``autogenerate_plugins``."""

# For each of the team's types in a run's operations, by its class and DDL (see type_key): the
# library type found for it, or why none.
Found = dict[tuple[type[Any], str], "TypeEngine[Any] | Unwritable"]
LIBRARY_TYPES: WeakKeyDictionary[AutogenContext, Found] = WeakKeyDictionary()

# The empty table a user type's DDL is tried on, for reflection to say which type it is.
PROBE_TABLE = "pgvector_base_type_probe"

WAY_OUT = (
    "make it a TypeDecorator whose impl is a SQLAlchemy or pgvector type, or render it in a "
    "render_item of your own in env.py that hands other types to rendering.render_item"
)


class LiteralRegconfig(REGCONFIG):
    """``REGCONFIG`` that DDL can write inline: ``'english'::regconfig``.

    SQLAlchemy gives ``to_tsvector("english", ...)``'s first argument this type, and no way to
    write it as a literal, which DDL does for every value in an index expression.
    """

    def literal_processor(self, dialect: Dialect) -> Callable[[str], str]:
        """Quote the value as a string, cast to ``regconfig`` as a bound value would be."""
        quote = String().literal_processor(dialect)  # type: ignore[no-untyped-call]
        assert quote is not None
        return lambda value: f"{quote(value)}::regconfig"


def register_types(dialect: Dialect) -> None:
    """Let ``dialect`` reflect pgvector columns and write ``REGCONFIG`` values in DDL.

    Without the first, ``alembic check`` and type comparison cannot see a vector column's
    dimensions (pgvector-python registers the same names when imported; doing it here does not
    depend on that). Without the second, a full-text index such as
    ``Index(..., func.to_tsvector("english", table.c.body))`` cannot be compared or rendered.
    """
    dialect.ischema_names.update(REFLECTED_TYPES)  # type: ignore[attr-defined]
    dialect.colspecs = {**dialect.colspecs, REGCONFIG: LiteralRegconfig}


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render column types so that the generated migration imports what it uses.

    A pgvector type renders as ``VECTOR(dim=1536)`` with its import; Alembic's default writes
    ``pgvector.sqlalchemy.vector.VECTOR(dim=1536)`` without importing ``pgvector``. A type of
    the team's own renders as the library type :func:`find_library_types` found for it;
    Alembic's default writes ``app.models.TSVector()``, again without an import. SQLAlchemy's
    types and everything else render as usual.
    """
    if type_ != "type":
        return False
    module = type(obj).__module__
    if module.startswith(PGVECTOR_MODULE + "."):
        name = type(obj).__name__
        autogen_context.imports.add(f"from {PGVECTOR_MODULE} import {name}")
        return repr(obj)
    if module.startswith(LIBRARY_MODULES):
        return False
    found = LIBRARY_TYPES.get(autogen_context, {}).get(type_key(obj, autogen_context.dialect))
    if found is not None:
        library = found
    else:
        # An operation autogenerate did not write (a process_revision_directives hook's):
        # a TypeDecorator needs no server to say what it is.
        try:
            library = library_type(obj, autogen_context.dialect, None)
        except Unwritable as error:
            library = error
    if isinstance(library, Unwritable):
        columns = ", ".join(library.columns) or "a column"
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        raise CommandError(
            f"cannot write the type of {columns} ({name}) into a migration: {library}; {WAY_OUT}"
        )
    # Alembic's own (private) renderer, the one that called this hook, for the library type, so it
    # writes the type, its arguments and its imports as it would have for the model's column.
    return render._repr_type(library, autogen_context)


class Unwritable(Exception):
    """A type of the team's own that no library type stands for: why, and the columns of it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.columns: list[str] = []


def find_library_types(
    autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps
) -> PriorityDispatchResult:
    """Find the library type for each of the team's types that the upgrade writes.

    Done while autogenerate is connected, since :func:`library_type` may ask the server and
    rendering comes after ``env.py`` has closed the connection. A type with none stops
    autogenerate when :func:`render_item` comes to it, before any file is written, and not
    before: a ``render_item`` of the team's may render it first.
    """
    found = LIBRARY_TYPES.setdefault(autogen_context, {})
    for column, type_ in written_types(upgrade_ops):
        resolve(type_, column, found, autogen_context.dialect, autogen_context.connection)
    return PriorityDispatchResult.CONTINUE


def written_types(upgrade_ops: ops.UpgradeOps) -> Iterator[tuple[str, TypeEngine[Any]]]:
    """``schema.table.column`` and type of each column type the upgrade (or its reverse) writes."""
    for op in upgrade_ops.ops:
        if isinstance(op, ops.CreateTableOp):
            for column in op.columns:
                if isinstance(column, Column):
                    yield qualified(op.schema, op.table_name, column.name), column.type
        elif isinstance(op, ops.ModifyTableOps):
            for change in op.ops:
                where = qualified(op.schema, op.table_name)
                if isinstance(change, ops.AddColumnOp):
                    yield f"{where}.{change.column.name}", change.column.type
                elif isinstance(change, ops.AlterColumnOp):
                    for type_ in (change.modify_type, change.existing_type):
                        if isinstance(type_, TypeEngine):
                            yield f"{where}.{change.column_name}", type_


def qualified(schema: str | None, *names: str) -> str:
    """``table.column``, with the schema in front when there is one."""
    return ".".join(name for name in (schema, *names) if name)


def resolve(
    type_: TypeEngine[Any],
    column: str,
    found: Found,
    dialect: Dialect | None,
    connection: Connection | None,
) -> None:
    """Add ``type_`` of ``column``, if it is the team's, and the team's types in it to ``found``."""
    if not type(type_).__module__.startswith(LIBRARY_MODULES):
        key = type_key(type_, dialect)
        if key not in found:
            try:
                found[key] = library_type(type_, dialect, connection)
            except Unwritable as error:
                found[key] = error
        library = found[key]
        if isinstance(library, Unwritable):
            if column not in library.columns:
                library.columns.append(column)
            return
        type_ = library
    item = getattr(type_, "item_type", None)  # ARRAY(...)
    if isinstance(item, TypeEngine):
        resolve(item, column, found, dialect, connection)


def type_key(type_: TypeEngine[Any], dialect: Dialect | None) -> tuple[type[Any], str]:
    """What identifies one of the team's types between comparison and rendering: its class and
    its DDL. Not the object: Alembic renders copies of the model's columns, and a
    ``TypeDecorator`` is copied with its column."""
    assert dialect is not None
    try:
        ddl = type_.compile(dialect=dialect)
    except (SQLAlchemyError, NotImplementedError):
        ddl = repr(type_)
    return type(type_), ddl


def library_type(
    type_: TypeEngine[Any], dialect: Dialect | None, connection: Connection | None
) -> TypeEngine[Any]:
    """The SQLAlchemy or pgvector type that ``type_``'s DDL is, for a migration to write.

    A ``TypeDecorator`` is the type it loads for the dialect (its ``impl``, or what its
    ``load_dialect_impl`` picks). Any other type of the team's is tried on the server: an empty
    temporary column of its DDL is reflected, as ``alembic check`` will reflect the real one.
    """
    assert dialect is not None
    while isinstance(type_, TypeDecorator) and not type(type_).__module__.startswith(
        LIBRARY_MODULES
    ):
        type_ = public_type(type_.load_dialect_impl(dialect), dialect)
    if type(type_).__module__.startswith(LIBRARY_MODULES):
        return type_
    try:
        ddl = type_.compile(dialect=dialect)
    except (SQLAlchemyError, NotImplementedError) as error:
        raise Unwritable(f"it has no DDL ({first_line(error)})") from None
    if connection is None:
        raise Unwritable(f"autogenerate found it in no column, so {ddl} was not looked up")
    try:
        with connection.begin_nested() as probe:
            connection.execute(text(f"CREATE TEMPORARY TABLE {PROBE_TABLE} (probe {ddl})"))
            temporary = connection.scalar(
                text("SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()")
            )
            (column,) = inspect(connection).get_columns(PROBE_TABLE, schema=temporary)
            probe.rollback()
    except DBAPIError as error:
        raise Unwritable(f"PostgreSQL refused {ddl} ({first_line(error.orig)})") from None
    reflected: TypeEngine[Any] = column["type"]
    if isinstance(reflected, NullType) or not type(reflected).__module__.startswith(
        LIBRARY_MODULES
    ):
        raise Unwritable(f"PostgreSQL reads {ddl} as a type neither SQLAlchemy nor pgvector has")
    return reflected


def public_type(type_: TypeEngine[Any], dialect: Dialect) -> TypeEngine[Any]:
    """``type_`` as a class a migration can import, not a driver's private one.

    ``dialect.type_descriptor(UUID())`` in a ``load_dialect_impl`` (SQLAlchemy's documented
    pattern) gives a class such as ``PGUuid``, which no module exports; its first exported base
    class (``UUID``) has the same DDL.
    """
    if not type(type_).__module__.startswith("sqlalchemy."):
        return type_
    modules = (sqlalchemy, importlib.import_module(f"sqlalchemy.dialects.{dialect.name}"))
    for cls in type(type_).__mro__:
        if any(getattr(module, cls.__name__, None) is cls for module in modules):
            return type_ if cls is type(type_) else type_.adapt(cls)
    return type_


def first_line(error: object) -> str:
    """The first line of an error's message."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def setup(plugin: Plugin) -> None:
    """Register :func:`find_library_types`; Alembic's plugin entry point."""
    # Last, after Alembic's own comparison has written the operations whose types it reads.
    plugin.add_autogenerate_comparator(
        find_library_types, "autogenerate", priority=DispatchPriority.LAST
    )


setup(Plugin(PLUGIN_NAME))


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
