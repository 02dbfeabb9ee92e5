"""The application's schema: the declarative base and every model.

Importing this module registers every model on ``Base.metadata``; it is the one import ``env.py``
needs. Declare your models below ``Base``.
"""

from __future__ import annotations

from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Index, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names, so later migrations can drop or alter what earlier ones created.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every model; its metadata is Alembic's ``target_metadata``."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# <example> deleted down to </example> by `python3 .copier/tasks.py --include-example=false`
EMBEDDING_DIM = 1536
"""Dimensions of ``Product.embedding``: the size of the embedding model's output."""


class Product(Base):
    """A product and the embedding of its description, searched by cosine distance."""

    __tablename__ = "product"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    embedding: Mapped[list[float] | None] = mapped_column(VECTOR(EMBEDDING_DIM))

    __table_args__ = (
        # HNSW with cosine distance: the index that `ORDER BY embedding <=> :query LIMIT k` uses.
        Index(
            "ix_product_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )


# </example>
