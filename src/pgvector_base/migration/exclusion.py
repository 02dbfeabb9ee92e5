"""What autogenerate compares: the models' schemas, minus the tables other tools own.

Alembic compares only the default schema unless told otherwise, and then every schema the database
has. Neither fits: models may live in a schema of their own (``__table_args__ = {"schema":
"rag"}``), and the database holds schemas and tables that other tools manage. :class:`Exclusion`
gives Alembic ``include_name`` and ``include_object`` hooks (for ``include_schemas=True``) that

* compare the default schema and the schemas the models name, and no other (not pgai's ``ai``,
  not a system schema, not another tool's);
* leave out every table matching one of the ``exclude_tables`` patterns of ``alembic.ini``, with
  everything Alembic compares on it (columns, indexes, constraints), on both sides: such a table
  is never created, altered or dropped, and ``alembic check`` ignores it;
* leave out pgai's objects (:class:`pgvector_base.migration.pgai.Exclusion`), with no setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cached_property

from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from sqlalchemy import MetaData, Table
from sqlalchemy.engine import Connection
from sqlalchemy.schema import SchemaItem

from pgvector_base.migration import pgai

EXCLUDE_TABLES_OPTION = "exclude_tables"
"""The ``[alembic]`` option of ``alembic.ini`` that lists the patterns."""


def parse_patterns(value: str | None) -> tuple[str, ...]:
    """The glob patterns of an ``exclude_tables`` value, separated by commas or line breaks."""
    return tuple(pattern for pattern in re.split(r"[,\s]+", value or "") if pattern)


@dataclass
class Exclusion:
    """Alembic's ``include_name`` and ``include_object`` hooks for one migration run.

    A pattern matches a table's name (``langchain_pg_*``) or, if it contains a dot, the table's
    ``schema.name`` with the default schema spelled out (``public.data_*``). Matching is
    case-sensitive, as PostgreSQL's unquoted names are lowercase.
    """

    metadata: MetaData
    connection: Connection
    patterns: tuple[str, ...] = ()
    pgai: pgai.Exclusion = field(init=False)

    def __post_init__(self) -> None:
        self.pgai = pgai.Exclusion(self.metadata, self.connection)

    @cached_property
    def model_schemas(self) -> frozenset[str]:
        """The schemas the models name explicitly."""
        return frozenset(
            table.schema for table in self.metadata.tables.values() if table.schema is not None
        )

    def include_name(
        self, name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
    ) -> bool:
        """Reflect the default and the models' schemas, without the excluded tables."""
        if type_ == "schema":
            return name is None or name in self.model_schemas
        if type_ == "table" and name is not None:
            return not self.excluded(parent_names.get("schema_name"), name)
        return True

    def include_object(
        self,
        obj: SchemaItem,
        name: str | None,
        type_: NameFilterType,
        reflected: bool,
        compare_to: SchemaItem | None,
    ) -> bool:
        """Compare ``obj`` unless it is, or belongs to, an excluded table or one pgai owns."""
        table = obj if isinstance(obj, Table) else getattr(obj, "table", None)
        if isinstance(table, Table) and self.excluded(table.schema, table.name):
            return False
        return self.pgai.include_object(obj, name, type_, reflected, compare_to)

    def excluded(self, schema: str | None, table: str) -> bool:
        """Whether ``schema.table`` matches one of the patterns."""
        qualified = f"{schema or self.connection.dialect.default_schema_name}.{table}"
        return any(
            fnmatchcase(qualified if "." in pattern else table, pattern)
            for pattern in self.patterns
        )
