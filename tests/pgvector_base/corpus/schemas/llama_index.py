"""LlamaIndex's ``PGVectorStore`` with hybrid search: a ``TypeDecorator`` and a computed tsvector.

Source: https://github.com/run-llama/llama_index/blob/01922fb3e4a8cb13136705e5eb98219994c9d4b4/llama-index-integrations/vector_stores/llama-index-vector-stores-postgres/llama_index/vector_stores/postgres/base.py
(``get_data_model`` with ``hybrid_search=True`` and ``from_params``' defaults: table name
``llamaindex``, schema ``public``, text search configuration ``english``, ``embed_dim=1536``,
``cache_ok=False``, ``use_jsonb=False``).
Adapted: the class that ``get_data_model`` builds with ``type()`` is written out, on the corpus's
``Base``; ``TypeDecorator`` takes a type parameter for mypy.
"""

# ruff: noqa: UP031, RUF012  (transcribed as the project writes it)
from __future__ import annotations

from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import Column, Computed, MetaData
from sqlalchemy.dialects.postgresql import BIGINT, JSON, TSVECTOR, VARCHAR
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.schema import Index
from sqlalchemy.types import TypeDecorator

from . import NAMING_CONVENTION

index_name = "llamaindex"
schema_name = "public"
text_search_config = "english"
cache_okay = False
embed_dim = 1536


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TSVector(TypeDecorator[Any]):
    impl = TSVECTOR
    cache_ok = cache_okay


tablename = "data_%s" % index_name  # dynamic table name
indexname = "%s_idx" % index_name  # dynamic class name

metadata_dtype = JSON


class HybridAbstractData(Base):
    __abstract__ = True  # this line is necessary
    id = Column(BIGINT, primary_key=True, autoincrement=True)
    index_id = Column(VARCHAR, nullable=False)
    text = Column(VARCHAR, nullable=False)
    metadata_ = Column(metadata_dtype)
    node_id = Column(VARCHAR)
    embedding = Column(Vector(embed_dim))
    text_search_tsv = Column(  # type: ignore[var-annotated]
        TSVector(),
        Computed("to_tsvector('%s', text)" % text_search_config, persisted=True),
    )


class Datallamaindex(HybridAbstractData):
    __tablename__ = tablename
    __table_args__ = {"schema": schema_name}


Index(
    indexname,
    Datallamaindex.text_search_tsv,
    postgresql_using="gin",
)
