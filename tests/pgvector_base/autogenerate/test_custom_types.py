"""Column types of the team's own, and PostgreSQL's, in migrations that run as written.

A ``TypeDecorator``, a ``UserDefinedType`` whose DDL is another type's, or a subclass of a
SQLAlchemy type is written into the migration as the SQLAlchemy or pgvector type its DDL is, with
the imports it needs and nothing from the module that defines it (here, this test module, in a
project ``app.models``): old migrations must survive a refactor of the models. Each generated
file goes through ruff and mypy as the post-write hooks left it, applies, leaves the server with
the column types the models' DDL names (the catalog says so), and ``alembic check`` finds nothing.
A type no migration can write stops autogenerate with one line naming its column.
"""

from __future__ import annotations

import ast
import enum
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import CHAR, BigInteger, Column, Dialect, Enum, MetaData, String, Table, Text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlalchemy.types import TypeDecorator, TypeEngine, UserDefinedType

from ..revisions import passes_lint_and_types
from .project import Project

# What a generated migration may import: the libraries, never the models' module.
LIBRARY_IMPORTS = {
    "collections.abc",
    "alembic",
    "sqlalchemy",
    "sqlalchemy.dialects",
    "pgvector.sqlalchemy",
}


class TSVector(TypeDecorator[str]):
    """A ``tsvector`` column, as full-text search models declare it."""

    impl = postgresql.TSVECTOR
    cache_ok = True


class JSONText(TypeDecorator[Any]):
    """JSON kept as text (SQLAlchemy's ``TypeDecorator`` example)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        """The value as JSON text."""
        return None if value is None else json.dumps(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        """The value the JSON text holds."""
        return None if value is None else json.loads(value)


class GUID(TypeDecorator[Any]):
    """SQLAlchemy's "backend-agnostic GUID type": ``uuid`` on PostgreSQL, ``CHAR(32)`` elsewhere."""

    impl = CHAR
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """PostgreSQL's ``uuid`` (through the driver's own class), or 32 characters."""
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.UUID())
        return dialect.type_descriptor(CHAR(32))


class Embedding(TypeDecorator[Any]):
    """A vector column with conversions of the team's own around pgvector's type."""

    impl = VECTOR
    cache_ok = True


class Attributes(TypeDecorator[Any]):
    """JSON in PostgreSQL's ``jsonb``, through a type of the team's own."""

    impl = postgresql.JSONB
    cache_ok = True


class TSVectorSpec(UserDefinedType[str]):
    """A user type whose DDL is PostgreSQL's ``tsvector``."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        """The column's DDL."""
        return "TSVECTOR"


class VectorSpec(UserDefinedType[Any]):
    """A user type whose DDL is pgvector's ``vector(n)``."""

    cache_ok = True

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def get_col_spec(self, **kw: Any) -> str:
        """The column's DDL."""
        return f"vector({self.dim})"


class SpecEmbedding(TypeDecorator[Any]):
    """A vector column declared without pgvector-python: a ``TypeDecorator`` over ``String``
    whose dialect type is a user type of its own (as public projects write it). Alembic renders
    a copy of it, so what was found for the model's object must be found for the copy."""

    impl = String
    cache_ok = True

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """pgvector's type, through the user type."""
        return VectorSpec(self.dim)


class Slug(String):
    """A subclass of a SQLAlchemy type, defined in the team's module."""


class Unknown(UserDefinedType[str]):
    """A user type whose DDL names a type the database does not have."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        """The column's DDL."""
        return "no_such_type"


class Mood(enum.Enum):
    """An enum, to see PostgreSQL's ``ENUM`` rendered beside the other dialect types."""

    HAPPY = "happy"
    SAD = "sad"


@pytest.fixture
def hooked(module_engine: Engine, tmp_path: Path) -> Iterator[Project]:
    """A project whose revisions go through the post-write hooks (ruff), as a team's do."""
    project = Project(module_engine, tmp_path / "migrations" / "versions", hooks=True)
    yield project
    project.drop_all_tables()


def column_types(project: Project, table: str) -> dict[str, str]:
    """Each column of ``table`` and its type as the catalog spells it."""
    return {
        str(name): str(type_)
        for name, type_ in project.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = to_regclass(:table) AND attnum > 0 AND NOT attisdropped",
            table=table,
        )
    }


def generate(project: Project, metadata: MetaData) -> str:
    """Autogenerate, lint the file as written and check what it imports; its text."""
    before = set(project.versions.glob("*.py"))
    project.revise(metadata)
    (path,) = set(project.versions.glob("*.py")) - before
    passes_lint_and_types(path)
    generated = path.read_text()
    assert __name__ not in generated
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(ast.parse(generated))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= LIBRARY_IMPORTS, generated
    return generated


def note(metadata: MetaData) -> Table:
    """A table with a column of each of the team's types."""
    return Table(
        "note",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("search", TSVector()),
        Column("payload", JSONText()),
        Column("ref", GUID()),
        Column("embedding", Embedding(3)),
        Column("search_spec", TSVectorSpec()),
        Column("tags", postgresql.ARRAY(JSONText())),
        Column("attributes", Attributes()),
        Column("embeddings", postgresql.ARRAY(Embedding(3))),
        Column("embedding_spec", SpecEmbedding(3)),
    )


def record(metadata: MetaData) -> Table:
    """A table with PostgreSQL's own types, which Alembic renders with their imports itself."""
    return Table(
        "record",
        metadata,
        Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        Column("search", postgresql.TSVECTOR()),
        Column("attributes", postgresql.JSONB()),
        Column("vectors", postgresql.ARRAY(VECTOR(3))),
        Column("labels", postgresql.ARRAY(Text())),
        Column("mood", Enum(Mood, name="mood")),
        Column("state", postgresql.ENUM("open", "closed", name="state")),
    )


def doc(metadata: MetaData, slug_length: int, *extra: Column[Any]) -> Table:
    """A table whose ``slug`` column is of the team's ``Slug``, with ``extra`` columns."""
    return Table(
        "doc",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("slug", Slug(slug_length)),
        *extra,
    )


def test_types_of_the_team_render_as_their_ddl_in_created_added_and_altered_columns(
    hooked: Project,
) -> None:
    first = MetaData()
    note(first)
    doc(first, 40)
    record(first)
    generated = generate(hooked, first)
    assert "postgresql.TSVECTOR()" in generated
    assert "from pgvector.sqlalchemy import VECTOR" in generated
    hooked.upgrade()
    assert column_types(hooked, "note") == {
        "id": "bigint",
        "search": "tsvector",
        "payload": "text",
        "ref": "uuid",
        "embedding": "vector(3)",
        "search_spec": "tsvector",
        "tags": "text[]",
        "attributes": "jsonb",
        "embeddings": "vector(3)[]",
        "embedding_spec": "vector(3)",
    }
    assert column_types(hooked, "record") == {
        "id": "uuid",
        "search": "tsvector",
        "attributes": "jsonb",
        "vectors": "vector(3)[]",
        "labels": "text[]",
        "mood": "mood",
        "state": "state",
    }
    assert column_types(hooked, "doc") == {"id": "bigint", "slug": "character varying(40)"}
    hooked.settled(first)

    # An altered column (Slug(40) -> Slug(80)) and columns added to an existing table.
    second = MetaData()
    note(second)
    record(second)
    doc(second, 80, Column("search", TSVector()), Column("ref", GUID()))
    generate(hooked, second)
    hooked.upgrade()
    assert column_types(hooked, "doc") == {
        "id": "bigint",
        "slug": "character varying(80)",
        "search": "tsvector",
        "ref": "uuid",
    }
    hooked.settled(second)

    hooked.downgrade("base")
    assert hooked.tables() == ["public.alembic_version"]
    assert hooked.fetch("SELECT to_regtype('mood'), to_regtype('state')") == [(None, None)]
    hooked.upgrade()
    hooked.settled(second)
    hooked.downgrade("base")


def test_a_type_no_migration_can_write_stops_autogenerate_in_one_line(hooked: Project) -> None:
    metadata = MetaData()
    Table(
        "reading",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("value", Unknown()),
        schema="public",
    )
    message = hooked.refused(metadata)
    assert "\n" not in message
    assert message.startswith(
        f"cannot write the type of public.reading.value ({__name__}.Unknown) into a migration: "
        'PostgreSQL refused no_such_type (type "no_such_type" does not exist'
    ), message
    assert message.endswith(
        "make it a TypeDecorator whose impl is a SQLAlchemy or pgvector type, or render it in a "
        "render_item of your own in env.py that hands other types to rendering.render_item"
    ), message
    assert hooked.fetch("SELECT to_regclass('reading')") == [(None,)]
