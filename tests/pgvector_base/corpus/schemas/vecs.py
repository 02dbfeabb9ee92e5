"""Supabase's vecs: one table per collection, in schema ``vecs``.

Source: https://github.com/supabase/vecs/blob/01b2fd6afa522265bba6106410660151e6e84dae/src/vecs/collection.py
(``build_table`` on the client's ``MetaData(schema="vecs")``, for the README's collection
``docs`` of dimension 3).
Adapted: the table is on the corpus's ``Base.metadata`` with ``schema="vecs"``; the IVFFlat and
GIN indexes that ``create_index`` builds with raw SQL on a copy of the table are not models.
"""

from __future__ import annotations

from pgvector.sqlalchemy import Vector
from sqlalchemy import Column, MetaData, String, Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase

from . import NAMING_CONVENTION


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def build_table(name: str, meta: MetaData, dimension: int) -> Table:
    return Table(
        name,
        meta,
        Column("id", String, primary_key=True),
        Column("vec", Vector(dimension), nullable=False),
        Column(
            "metadata",
            postgresql.JSONB,
            server_default=text("'{}'::jsonb"),
            nullable=False,
        ),
        extend_existing=True,
        schema="vecs",
    )


docs = build_table("docs", Base.metadata, 3)
