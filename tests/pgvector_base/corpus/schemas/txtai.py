"""txtai's pgvector ANN backend: integer ids and an HNSW index on inner product.

Source: https://github.com/neuml/txtai/blob/0354e2bef3909393f656b24321b6b345b0017e9e/src/python/txtai/ann/pgvector.py
(``PGVector.initialize`` with the default table ``vectors``, the default ``m`` 16 and
``efconstruction`` 200, and 384 dimensions, those of txtai's default model
sentence-transformers/all-MiniLM-L6-v2).
Adapted: the table is on the corpus's ``Base.metadata`` instead of a ``MetaData()`` of its own.
"""

from __future__ import annotations

from pgvector.sqlalchemy import Vector
from sqlalchemy import Column, Index, Integer, MetaData, Table
from sqlalchemy.orm import DeclarativeBase

from . import NAMING_CONVENTION

table = "vectors"
dimensions = 384
settings = {"m": 16, "ef_construction": 200}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


vectors = Table(
    table,
    Base.metadata,
    Column("indexid", Integer, primary_key=True, autoincrement=False),
    Column("embedding", Vector(dimensions)),
)

# Create ANN index - inner product is equal to cosine similarity on normalized vectors
index = Index(
    f"{table}-index",
    vectors.c["embedding"],
    postgresql_using="hnsw",
    postgresql_with=settings,
    postgresql_ops={"embedding": "vector_ip_ops"},
)
