"""pgai in migrations: its Alembic operations, and the objects it manages kept out of autogenerate.

pgai is optional (the ``pgai`` Poetry group). Its operations are imported only when a migration
uses them: importing ``pgai.alembic`` brings pgai's worker, psycopg 3 and ddtrace, which takes
longer than the rest of an ``alembic`` command. The exclusion never imports it: it reads the model
metadata and the database's ``ai.vectorizer``.

A vectorizer owns objects that the models describe wrongly or not at all: the embedding table and
view it creates, its queue tables, the embedding column a column destination adds to the source
table, and pgai's own ``ai`` schema. Compared by autogenerate, they would be dropped (absent from
the models), created (``vectorizer_relationship`` puts an embedding table in the metadata, and
``ai.create_vectorizer`` then fails because the name is taken) or altered (pgai's real table
differs from the model's). :class:`Exclusion` hides them on both sides of the comparison.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from alembic.operations import Operations
from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Column, Index, MetaData, Table, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import configure_mappers
from sqlalchemy.schema import SchemaItem

if TYPE_CHECKING:
    from pgai.alembic import DropVectorizerOp

logger = logging.getLogger(__name__)

INSTALL_HINT = "poetry install --with pgai"
AI_SCHEMA = "ai"
# Where pgai.sqlalchemy.vectorizer_relationship records the tables it generates (by name only).
PGAI_MANAGED_TABLES = "pgai_managed_tables"
# The name vectorizer_relationship gives the embedding table without `target_table=`.
DEFAULT_TABLE_SUFFIX = "_embedding_store"
# pgai's operations, as a migration (or a comment in it) names them.
OPERATION_NAMES = re.compile(r"\b(?:create|drop)_vectorizer\b")

CATALOG_EXISTS_SQL = text("SELECT to_regclass('ai.vectorizer') IS NOT NULL")
# `config -> 'destination'` is stored resolved: schemas and names are filled in by pgai.
CATALOG_SQL = text(
    "SELECT source_schema, source_table, queue_schema, queue_table, queue_failed_table, "
    "config -> 'destination' AS destination FROM ai.vectorizer"
)


def register_operations_if_used(script: ScriptDirectory) -> None:
    """Make ``op.create_vectorizer`` and ``op.drop_vectorizer`` available if a migration of
    ``script`` names them; otherwise import nothing.

    The files are read as text, before Alembic imports them: a migration that uses the operations
    imports pgai's configuration classes too, which end the process when tiktoken is missing.
    """
    user = next((path for path in migration_files(script) if uses_operations(path)), None)
    if user is None:
        return
    if find_spec("pgai") is None:
        raise CommandError(
            f"migration {user.name} uses pgai's op.create_vectorizer or op.drop_vectorizer, "
            f"but pgai is not installed; run `{INSTALL_HINT}`"
        )
    register_operations()


def migration_files(script: ScriptDirectory) -> Iterator[Path]:
    """The Python files in ``script``'s version locations, in their subfolders too."""
    locations = script.version_locations or [script.versions]
    for location in locations:
        yield from Path(location).rglob("*.py")


def uses_operations(path: Path) -> bool:
    """Whether the migration at ``path`` names one of pgai's operations."""
    return OPERATION_NAMES.search(path.read_text(encoding="utf-8")) is not None


def register_operations() -> None:
    """Make ``op.create_vectorizer`` and ``op.drop_vectorizer`` available; pgai is installed.

    A partial install fails with one line that says how to fix it, instead of pgai's
    ``sys.exit(1)`` or an ``ImportError`` from its worker.
    """
    # pgai.vectorizer exits the process when tiktoken is missing, so no ImportError would come.
    if find_spec("tiktoken") is None:
        raise CommandError(
            "pgai is installed without tiktoken, which its Alembic operations need; "
            f"run `{INSTALL_HINT}`"
        )
    try:
        from pgai.alembic import DropVectorizerOp
        from pgai.alembic import register_operations as register_pgai_operations
    except ImportError as error:
        raise CommandError(
            f"pgai is installed but its Alembic operations cannot be imported ({error}); "
            f"run `{INSTALL_HINT}`"
        ) from None
    # Typed only where pgai is installed; without the pgai group it is Any and the ignore is unused.
    register_pgai_operations()  # type: ignore[no-untyped-call, unused-ignore]
    Operations.implementation_for(DropVectorizerOp, replace=True)(drop_vectorizer)


def drop_vectorizer(operations: Operations, operation: DropVectorizerOp) -> None:
    """Run ``op.drop_vectorizer`` with its arguments bound into the statement.

    pgai's own implementation passes them as execution parameters, which ``alembic downgrade
    --sql`` drops: it writes ``ai.drop_vectorizer(NULL, drop_all=>NULL)``, which drops nothing.
    """
    vectorizer = operation.id if operation.id is not None else operation.name
    if vectorizer is None:
        raise ValueError("op.drop_vectorizer needs the vectorizer's name or id")
    operations.execute(
        text("SELECT ai.drop_vectorizer(:vectorizer, drop_all => :drop_all)").bindparams(
            vectorizer=vectorizer, drop_all=operation.drop_all
        )
    )


@dataclass(frozen=True)
class Catalog:
    """What the database's vectorizers own, as ``ai.vectorizer`` lists it.

    ``installed``: whether the database has pgai's catalog, and so whether its ``ai`` schema is
    pgai's; ``tables``: (schema, name) of each embedding table, view and queue table;
    ``columns``: (schema, table, column) of each embedding column a column destination added.
    """

    installed: bool
    tables: frozenset[tuple[str, str]]
    columns: frozenset[tuple[str, str, str]]


def read_catalog(connection: Connection) -> Catalog:
    """Read :class:`Catalog` from ``ai.vectorizer``; empty where pgai is not installed."""
    tables: set[tuple[str, str]] = set()
    columns: set[tuple[str, str, str]] = set()
    installed = bool(connection.scalar(CATALOG_EXISTS_SQL))
    if installed:
        for row in connection.execute(CATALOG_SQL):
            destination = row.destination
            tables.update(
                {(row.queue_schema, row.queue_table), (row.queue_schema, row.queue_failed_table)}
            )
            if destination["implementation"] == "column":
                columns.add((row.source_schema, row.source_table, destination["embedding_column"]))
            else:
                tables.add((destination["target_schema"], destination["target_table"]))
                tables.add((destination["view_schema"], destination["view_name"]))
    return Catalog(installed, frozenset(tables), frozenset(columns))


@dataclass
class Exclusion:
    """Alembic's ``include_name`` and ``include_object`` hooks that leave pgai's objects alone.

    Model side: the tables ``vectorizer_relationship`` generates, in any schema. Database side:
    whatever ``ai.vectorizer`` lists, read on the first comparison. The ``ai`` schema, on both
    sides, only where the database has pgai's catalog: elsewhere ``ai`` is a schema like any
    other, which models of other frameworks use too.
    """

    metadata: MetaData
    connection: Connection

    def __post_init__(self) -> None:
        # vectorizer_relationship adds its table to the metadata only once mappers are configured
        # (or its attribute is read); configuring now makes every comparison see the same models.
        configure_mappers()

    @cached_property
    def model_tables(self) -> frozenset[str]:
        """Names of the tables that ``vectorizer_relationship`` generates for the models.

        pgai records an explicit ``target_table`` without its schema, and ``None`` for the default
        ``<table>_embedding_store`` (``pgai/sqlalchemy/__init__.py``, ``create_embedding_class``
        and ``__set_name__``), so a recorded ``None`` stands for the default name of every table.
        """
        recorded = self.metadata.info.get(PGAI_MANAGED_TABLES, set())
        names = {name for name in recorded if name is not None}
        if None in recorded:
            names.update(
                table.name + DEFAULT_TABLE_SUFFIX for table in self.metadata.tables.values()
            )
        return frozenset(names)

    @cached_property
    def catalog(self) -> Catalog:
        """The database side, read on the first comparison.

        Not when the hooks are built: a query before ``context.configure`` would begin the
        connection's transaction, which Alembic then takes for the caller's and never commits.
        """
        return read_catalog(self.connection)

    def include_name(
        self, name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
    ) -> bool:
        """Leave pgai's ``ai`` schema out of reflection (with ``include_schemas=True``)."""
        return not (type_ == "schema" and name == AI_SCHEMA and self.catalog.installed)

    def include_object(
        self,
        obj: SchemaItem,
        name: str | None,
        type_: NameFilterType,
        reflected: bool,
        compare_to: SchemaItem | None,
    ) -> bool:
        """Compare ``obj`` unless a vectorizer owns it, on the models' or the database's side."""
        if isinstance(obj, Table):
            if not reflected:
                self.warn_if_unwritten(obj)
            return not self.manages_table(obj)
        if isinstance(obj, Column):
            return not self.manages_column(obj.table, obj.name)
        if isinstance(obj, Index) and obj.table is not None:
            table = obj.table
            return not any(self.manages_column(table, column.name) for column in obj.columns)
        return True

    def manages_table(self, table: Table) -> bool:
        """Whether pgai owns ``table``: it is in pgai's schema, catalog or generated models."""
        schema, name = self.key(table)
        return (
            (schema == AI_SCHEMA and self.catalog.installed)
            or (schema, name) in self.catalog.tables
            or name in self.model_tables
        )

    def manages_column(self, table: Table, column: str) -> bool:
        """Whether ``column`` of ``table`` is the embedding column of a column destination."""
        return (*self.key(table), column) in self.catalog.columns

    def warn_if_unwritten(self, table: Table) -> None:
        """Warn about an embedding table of the models that no vectorizer in the database fills.

        Autogenerate cannot write the ``op.create_vectorizer`` call (the model knows no embedding
        model, chunking or formatting), and creating the table itself would break that call.
        """
        key = self.key(table)
        if table.name in self.model_tables and key not in self.catalog.tables:
            logger.warning(
                "%s.%s is vectorizer_relationship's embedding table, but no vectorizer in the "
                "database writes to it: write op.create_vectorizer in a migration, with this "
                "table as its destination (docs/pgai.md)",
                *key,
            )

    def key(self, table: Table) -> tuple[str | None, str]:
        """``(schema, name)`` of ``table``, with the default schema spelled out."""
        return (table.schema or self.connection.dialect.default_schema_name, table.name)
