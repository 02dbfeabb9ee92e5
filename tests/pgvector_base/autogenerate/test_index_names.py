"""Every index SQLAlchemy can declare is compared by the name PostgreSQL stores it under.

``index=True``, ``unique=True``, unnamed ``Index(None, ...)`` and named indexes, under the naming
convention the template ships or SQLAlchemy's default one, in the default schema or a schema of
their own: created under the names the convention gives, ``alembic check`` clean afterwards, and
a change to a convention-named vector index found and migrated. (The comparison used to build the
model's indexes on a renamed copy of the table, whose convention-made names did not match:
``KeyError: 'ix_item_name'``.) An unexpected error in the comparison names the table and the
index it was comparing.
"""

from __future__ import annotations

from typing import Any

import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, Text, func, literal
from sqlalchemy.exc import CompileError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import UserDefinedType

from pgvector_base.migration.comparison import ComparisonError

from .project import Project

# The naming convention of src/app/models.py, which a machinery test may not import.
TEMPLATE_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def models(convention: dict[str, str] | None, schema: str | None, m: int = 16) -> MetaData:
    """Table ``item`` with an index of each kind, its HNSW index built with ``m``."""

    class Base(DeclarativeBase):
        metadata = (
            MetaData(schema=schema)
            if convention is None
            else MetaData(schema=schema, naming_convention=convention)
        )

    class Item(Base):
        __tablename__ = "item"
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        name: Mapped[str] = mapped_column(String, index=True)
        code: Mapped[str] = mapped_column(String, index=True, unique=True)
        sku: Mapped[str] = mapped_column(String, unique=True)
        category: Mapped[int] = mapped_column(BigInteger)
        embedding: Mapped[Any] = mapped_column(VECTOR(3))
        __table_args__ = (
            Index(None, "category"),
            Index("ix_item_named", "category", "name"),
            Index(
                None,
                "embedding",
                postgresql_using="hnsw",
                postgresql_with={"m": m},
                postgresql_ops={"embedding": "vector_cosine_ops"},
            ),
        )

    return Base.metadata


# The names each convention gives; `column_0_N_label` is `schema_table_column`.
CASES = [
    pytest.param(
        TEMPLATE_CONVENTION,
        None,
        {
            "pk_item",
            "uq_item_sku",
            "ix_item_name",
            "ix_item_code",
            "ix_item_category",
            "ix_item_named",
            "ix_item_embedding",
        },
        "ix_item_embedding",
        id="template convention",
    ),
    pytest.param(
        TEMPLATE_CONVENTION,
        "rag",
        {
            "pk_item",
            "uq_item_sku",
            "ix_rag_item_name",
            "ix_rag_item_code",
            "ix_rag_item_category",
            "ix_item_named",
            "ix_rag_item_embedding",
        },
        "ix_rag_item_embedding",
        id="template convention, schema of its own",
    ),
    pytest.param(
        None,
        None,
        {
            "item_pkey",
            "item_sku_key",
            "ix_item_name",
            "ix_item_code",
            "ix_item_category",
            "ix_item_named",
            "ix_item_embedding",
        },
        "ix_item_embedding",
        id="SQLAlchemy's default convention",
    ),
]


@pytest.mark.parametrize(("convention", "schema", "names", "vector_index"), CASES)
def test_every_kind_of_index_is_created_compared_and_changed(
    project: Project,
    convention: dict[str, str] | None,
    schema: str | None,
    names: set[str],
    vector_index: str,
) -> None:
    project.revise(models(convention, schema))
    project.upgrade()
    stored = project.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = coalesce(:schema, current_schema()) "
        "AND tablename = 'item'",
        schema=schema,
    )
    assert {name for (name,) in stored} == names
    project.settled(models(convention, schema))

    qualified = f"{schema}.{vector_index}" if schema else vector_index
    built = project.index(qualified)
    assert built is not None
    assert built[2] == {"m": "16"}
    generated = project.revise(models(convention, schema, m=8))
    upgrade = generated.split("def downgrade")[0]
    assert f"op.drop_index(op.f('{vector_index}')" in upgrade
    assert f"op.create_index(op.f('{vector_index}')" in upgrade
    project.upgrade()
    changed = project.index(qualified)
    assert changed is not None
    assert changed[2] == {"m": "8"}
    project.settled(models(convention, schema, m=8))

    project.downgrade()
    assert project.index(qualified) == built


class Untranslatable(UserDefinedType[str]):
    """A user type that SQLAlchemy cannot write a literal of (no ``literal_processor``)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        """DDL of the type: plain ``text``."""
        return "TEXT"


def test_an_unexpected_error_names_the_table_and_the_index(project: Project) -> None:
    project.execute("CREATE TABLE item (id bigint PRIMARY KEY, code text)")
    project.execute("CREATE INDEX ix_item_code ON item (code) WHERE code <> 'x'")
    metadata = MetaData()
    table = Table(
        "item",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("code", Untranslatable()),
    )
    Index(
        "ix_item_code",
        table.c.code,
        postgresql_where=table.c.code != literal("x", Untranslatable()),
    )
    with pytest.raises(
        ComparisonError,
        match=(
            r"^unexpected error while comparing index ix_item_code of table item with the "
            r"database: CompileError: No literal value renderer is available"
        ),
    ) as raised:
        project.check(metadata)
    assert isinstance(raised.value.__cause__, CompileError)


def concatenation(separator: str) -> MetaData:
    """``item`` with an expression index on its title and body joined by ``separator``."""
    metadata = MetaData()
    table = Table(
        "item",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("title", Text),
        Column("body", Text),
    )
    Index(
        "ix_item_text",
        func.lower(func.coalesce(table.c.title, "") + separator + func.coalesce(table.c.body, "")),
    )
    return metadata


def test_an_expression_alembic_reads_otherwise_is_compared_as_the_server_builds_it(
    project: Project,
) -> None:
    # Alembic compares the model's `coalesce(title, '') || ' '` with the server's
    # `COALESCE(title, ''::text) || ' '::text` as text, and finds them different.
    project.revise(concatenation(" "))
    project.upgrade()
    built = project.index("ix_item_text")
    assert built is not None
    assert (
        "lower(((COALESCE(title, ''::text) || ' '::text) || COALESCE(body, ''::text)))" in built[3]
    )
    project.settled(concatenation(" "))

    generated = project.revise(concatenation("/"))
    assert "op.drop_index(op.f('ix_item_text')" in generated.split("def downgrade")[0]
    project.upgrade()
    changed = project.index("ix_item_text")
    assert changed is not None
    assert "'/'::text" in changed[3]
    project.settled(concatenation("/"))
