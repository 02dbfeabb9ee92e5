"""What autogenerate compares: the models' schemas, minus the tables other tools own.

Alembic compares only the default schema unless told otherwise, and then every schema the database
has. Neither fits: models may live in a schema of their own (``__table_args__ = {"schema":
"rag"}``), and the database holds schemas and tables that other tools manage. :class:`Exclusion`
gives Alembic ``include_name`` and ``include_object`` hooks (for ``include_schemas=True``) that

* compare the default schema and the schemas the models name, and no other (not a system
  schema, not another tool's, not pgai's ``ai`` where pgai is installed);
* leave out every database table matching one of the ``exclude_tables`` patterns of
  ``alembic.ini``, with everything Alembic compares on it (columns, indexes, constraints): such a
  table is never altered or dropped, and ``alembic check`` ignores it;
* stop autogenerate with one line when a pattern matches a table of the models: the pattern
  would hide the team's own table (never created, every check green), or the models declare
  another tool's table, which is not theirs to migrate;
* leave out pgai's objects (:class:`pgvector_base.migration.pgai.Exclusion`), with no setting.

A malformed pattern (an unclosed ``[``, which :mod:`fnmatch` would take literally) is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cached_property

from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from alembic.util import CommandError
from sqlalchemy import MetaData, Table
from sqlalchemy.engine import Connection
from sqlalchemy.schema import SchemaItem

from pgvector_base.migration import pgai

EXCLUDE_TABLES_OPTION = "exclude_tables"
"""The ``[alembic]`` option of ``alembic.ini`` that lists the patterns."""


def parse_patterns(value: str | None) -> tuple[str, ...]:
    """The glob patterns of an ``exclude_tables`` value, separated by commas or line breaks.

    Raises :class:`CommandError` for a pattern with an unclosed ``[``.
    """
    patterns = tuple(pattern for pattern in re.split(r"[,\s]+", value or "") if pattern)
    for pattern in patterns:
        if has_unclosed_bracket(pattern):
            raise CommandError(
                f"{EXCLUDE_TABLES_OPTION} in alembic.ini: pattern {pattern!r} opens a [...] set "
                "that it never closes; close it with ], or write a literal [ as [[]"
            )
    return patterns


def has_unclosed_bracket(pattern: str) -> bool:
    """Whether a ``[`` of ``pattern`` starts no set, by :func:`fnmatch.translate`'s rules."""
    position = 0
    while (position := pattern.find("[", position) + 1) > 0:
        # A ] right after [ or [! is a member of the set, not its end.
        start = position + (pattern[position : position + 1] == "!")
        start += pattern[start : start + 1] == "]"
        end = pattern.find("]", start)
        if end < 0:
            return True
        position = end + 1
    return False


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
            return name is None or (
                name in self.model_schemas and self.pgai.include_name(name, type_, parent_names)
            )
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
        """Compare ``obj`` unless it is, or belongs to, an excluded table or one pgai owns.

        Raises :class:`CommandError` when the models have a table that a pattern matches.
        """
        table = obj if isinstance(obj, Table) else getattr(obj, "table", None)
        if isinstance(table, Table) and self.excluded(table.schema, table.name):
            if isinstance(obj, Table) and not reflected:
                raise CommandError(self.excluded_models())
            return False
        return self.pgai.include_object(obj, name, type_, reflected, compare_to)

    def excluded_models(self) -> str:
        """The line that names each table of the models a pattern matches, and the pattern."""
        matches = [
            f"table {table.fullname} of the models matches {pattern!r}"
            for table in self.metadata.sorted_tables
            if (pattern := self.matching_pattern(table.schema, table.name)) is not None
        ]
        return (
            f"{EXCLUDE_TABLES_OPTION} in alembic.ini hides tables of the models from "
            f"autogenerate: {'; '.join(matches)}; narrow the pattern to the other tool's exact "
            "table names, or, for another tool's table the models only read, declare it on a "
            "MetaData that env.py does not compare"
        )

    def excluded(self, schema: str | None, table: str) -> bool:
        """Whether ``schema.table`` matches one of the patterns."""
        return self.matching_pattern(schema, table) is not None

    def matching_pattern(self, schema: str | None, table: str) -> str | None:
        """The first pattern that ``schema.table`` matches, if any."""
        qualified = f"{schema or self.connection.dialect.default_schema_name}.{table}"
        return next(
            (
                pattern
                for pattern in self.patterns
                if fnmatchcase(qualified if "." in pattern else table, pattern)
            ),
            None,
        )
