"""``tests/schema``'s vector index check holds for any models, not only the example's shape.

Models in schemas of their own with a foreign key between them, an enum type in a schema, a
``TypeDecorator``, partial and expression vector indexes, and ``docs/autogenerate.md``'s index built
concurrently: each index builds, and the catalogs agree with what was declared. (``create_all``
alone fails here: it creates no schema, and ``CREATE INDEX CONCURRENTLY`` cannot run in the check's
transaction.)
"""

from __future__ import annotations

import enum
from typing import Any

import pytest
from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy import BigInteger, Engine, Enum, ForeignKey, Index, MetaData, String, cast, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from ...schema.vector_index_builds import assert_built_as_declared, index_id, vector_indexes
from .schemas import NAMING_CONVENTION


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Kind(enum.Enum):
    NOTE = "note"
    PAGE = "page"


class Lowercase(TypeDecorator[str]):
    impl = String
    cache_ok = True


class Source(Base):
    __tablename__ = "source"
    __table_args__ = {"schema": "catalog"}  # noqa: RUF012

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[Kind] = mapped_column(Enum(Kind, schema="catalog"))
    label: Mapped[str] = mapped_column(Lowercase(40))


class Chunk(Base):
    __tablename__ = "chunk"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey(Source.id))
    vector: Mapped[list[float]] = mapped_column("embedding", VECTOR(3))
    __table_args__ = (
        Index(
            "ix_chunk_embedding",
            vector,
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
            postgresql_where=text("source_id > 0"),
        ),
        Index(
            "ix_chunk_embedding_half",
            cast(vector, HALFVEC(3)).label("half"),
            postgresql_using="ivfflat",
            postgresql_with={"lists": 2},
            postgresql_ops={"half": "halfvec_l2_ops"},
        ),
        {"schema": "rag"},
    )


class Item(Base):
    """``docs/autogenerate.md``'s example of an index built concurrently, as written there."""

    __tablename__ = "item"
    id: Mapped[int] = mapped_column(primary_key=True)
    embedding = mapped_column(VECTOR(3))
    __table_args__ = (
        Index(
            "ix_item_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
            postgresql_concurrently=True,
        ),
    )


def parameters() -> list[Any]:
    return [pytest.param(index, id=index_id(index)) for index in vector_indexes(Base.metadata)]


@pytest.mark.parametrize("index", parameters())
def test_vector_index_builds_as_declared(vector_engine: Engine, index: Index) -> None:
    with vector_engine.connect() as connection:
        assert_built_as_declared(connection, Base.metadata, index)
