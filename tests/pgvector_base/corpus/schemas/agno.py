"""Agno's ``PgVector`` knowledge table, in schema ``ai`` as the framework puts it by default.

Source: https://github.com/agno-agi/agno/blob/05a44abb226fef376ee788ecbfaa1047cb3cd32c/libs/agno/agno/vectordb/pgvector/pgvector.py
(``PgVector.get_table_v1`` with ``schema="ai"``, its default, and ``OpenAIEmbedder``'s 1536
dimensions; the table name is the user's, here ``vectors``).
Adapted: the table is on the corpus's ``Base.metadata`` with ``schema="ai"`` rather than on a
``MetaData(schema="ai")`` of its own.
"""

from __future__ import annotations

from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.schema import Column, Index, MetaData, Table
from sqlalchemy.sql.expression import func, text
from sqlalchemy.types import DateTime, String

from . import NAMING_CONVENTION

table_name = "vectors"
schema = "ai"
dimensions = 1536


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


table = Table(
    table_name,
    Base.metadata,
    Column("id", String, primary_key=True),
    Column("name", String),
    Column("meta_data", postgresql.JSONB, server_default=text("'{}'::jsonb")),
    Column("filters", postgresql.JSONB, server_default=text("'{}'::jsonb"), nullable=True),
    Column("content", postgresql.TEXT),
    Column("embedding", Vector(dimensions)),
    Column("usage", postgresql.JSONB),
    Column("created_at", DateTime(timezone=True), server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), onupdate=func.now()),
    Column("content_hash", String),
    Column("content_id", String),
    extend_existing=True,
    schema=schema,
)

# Add indexes
Index(f"idx_{table_name}_id", table.c.id)
Index(f"idx_{table_name}_name", table.c.name)
Index(f"idx_{table_name}_content_hash", table.c.content_hash)
Index(f"idx_{table_name}_content_id", table.c.content_id)
