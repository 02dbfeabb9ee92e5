"""LangChain's legacy ``PGVector`` store: collections, and embeddings that reference them.

Source: https://github.com/langchain-ai/langchain-postgres/blob/36ea595f0a39da4ce8e6957de6cd67b5888baa85/langchain_postgres/vectorstores.py
(tag v0.0.13, ``_get_embedding_collection_store``; releases up to 0.0.13 declare the embedding's
primary key ``nullable=True, index=True, unique=True``, later ones ``primary_key=True`` alone).
Adapted: ``declarative_base()`` is the corpus's ``Base``; ``vector_dimension`` is its default,
``None`` (``embedding_length`` unset); the class methods are left out; the non-``Mapped``
annotation ``embedding: Vector`` is dropped, as ``DeclarativeBase`` refuses it.
"""

from __future__ import annotations

import uuid

import sqlalchemy
from pgvector.sqlalchemy import Vector
from sqlalchemy import MetaData
from sqlalchemy.dialects.postgresql import JSON, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, relationship

from . import NAMING_CONVENTION

vector_dimension = None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CollectionStore(Base):
    """Collection store."""

    __tablename__ = "langchain_pg_collection"

    uuid = sqlalchemy.Column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name = sqlalchemy.Column(sqlalchemy.String, nullable=False, unique=True)
    cmetadata = sqlalchemy.Column(JSON)

    embeddings = relationship(
        "EmbeddingStore",
        back_populates="collection",
        passive_deletes=True,
    )


class EmbeddingStore(Base):
    """Embedding store."""

    __tablename__ = "langchain_pg_embedding"

    id = sqlalchemy.Column(
        sqlalchemy.String, nullable=True, primary_key=True, index=True, unique=True
    )

    collection_id = sqlalchemy.Column(
        UUID(as_uuid=True),
        sqlalchemy.ForeignKey(
            f"{CollectionStore.__tablename__}.uuid",
            ondelete="CASCADE",
        ),
    )
    collection = relationship(CollectionStore, back_populates="embeddings")

    embedding = sqlalchemy.Column(Vector(vector_dimension))
    document = sqlalchemy.Column(sqlalchemy.String, nullable=True)
    cmetadata = sqlalchemy.Column(JSONB, nullable=True)

    __table_args__ = (
        sqlalchemy.Index(
            "ix_cmetadata_gin",
            "cmetadata",
            postgresql_using="gin",
            postgresql_ops={"cmetadata": "jsonb_path_ops"},
        ),
    )
