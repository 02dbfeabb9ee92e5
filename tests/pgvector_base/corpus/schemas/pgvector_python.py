"""pgvector-python's own SQLAlchemy tests: every pgvector type, HNSW, IVFFlat, expression indexes.

Source: https://github.com/pgvector/pgvector-python/blob/00cd08e6c44077b99f378edbd007b2483ff406f7/tests/test_sqlalchemy.py
(the ORM model ``Item`` and its three indexes at module level; the Core table and its two
indexes of ``test_core``).
Adapted: ``declarative_base()`` is the corpus's ``Base``; the Core table is on its metadata.
"""

from __future__ import annotations

from pgvector.sqlalchemy import BIT, HALFVEC, SPARSEVEC, VECTOR
from sqlalchemy import ARRAY, Column, Index, Integer, MetaData, Table
from sqlalchemy.orm import DeclarativeBase, mapped_column
from sqlalchemy.sql import func

from . import NAMING_CONVENTION


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Item(Base):
    __tablename__ = "sqlalchemy_orm_item"

    id = mapped_column(Integer, primary_key=True)
    embedding = mapped_column(VECTOR(3))
    half_embedding = mapped_column(HALFVEC(3))
    binary_embedding = mapped_column(BIT(3))
    sparse_embedding = mapped_column(SPARSEVEC(3))
    embeddings = mapped_column(ARRAY(VECTOR(3)))
    half_embeddings = mapped_column(ARRAY(HALFVEC(3)))


index = Index(
    "sqlalchemy_orm_index",
    Item.embedding,
    postgresql_using="hnsw",
    postgresql_with={"m": 16, "ef_construction": 64},
    postgresql_ops={"embedding": "vector_l2_ops"},
)

half_precision_index = Index(
    "sqlalchemy_orm_half_precision_index",
    func.cast(Item.embedding, HALFVEC(3)).label("embedding"),
    postgresql_using="hnsw",
    postgresql_with={"m": 16, "ef_construction": 64},
    postgresql_ops={"embedding": "halfvec_l2_ops"},
)

binary_quantize_index = Index(
    "sqlalchemy_orm_binary_quantize_index",
    func.cast(func.binary_quantize(Item.embedding), BIT(3)).label("embedding"),
    postgresql_using="hnsw",
    postgresql_with={"m": 16, "ef_construction": 64},
    postgresql_ops={"embedding": "bit_hamming_ops"},
)

item_table = Table(
    "sqlalchemy_core_item",
    Base.metadata,
    Column("id", Integer, primary_key=True),
    Column("embedding", VECTOR(3)),
    Column("half_embedding", HALFVEC(3)),
    Column("binary_embedding", BIT(3)),
    Column("sparse_embedding", SPARSEVEC(3)),
    Column("embeddings", ARRAY(VECTOR(3))),
)

ivfflat_index = Index(
    "sqlalchemy_core_ivfflat_index",
    item_table.c.embedding,
    postgresql_using="ivfflat",
    postgresql_with={"lists": 1},
    postgresql_ops={"embedding": "vector_l2_ops"},
)

hnsw_index = Index(
    "sqlalchemy_core_hnsw_index",
    item_table.c.embedding,
    postgresql_using="hnsw",
    postgresql_with={"m": 16, "ef_construction": 64},
    postgresql_ops={"embedding": "vector_l2_ops"},
)
