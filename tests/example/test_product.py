"""The example's ``product`` table as migrated: its HNSW index, and the ORM's nearest neighbours."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from app.models import EMBEDDING_DIM, Product


@pytest.fixture(scope="module")
def migrated_engine(migrated_database_url: URL) -> Iterator[Engine]:
    """The module's database, with the example's migration applied."""
    engine = create_engine(migrated_database_url, poolclass=NullPool)
    yield engine
    engine.dispose()


def test_example_index_is_hnsw_with_cosine_ops_and_its_parameters(migrated_engine: Engine) -> None:
    with migrated_engine.connect() as connection:
        definition, options = connection.execute(
            text(
                "SELECT pg_get_indexdef(c.oid), c.reloptions FROM pg_class c "
                "WHERE c.relname = 'ix_product_embedding_hnsw'"
            )
        ).one()
    assert "USING hnsw (embedding vector_cosine_ops)" in definition
    assert sorted(options) == ["ef_construction=64", "m=16"]


def test_orm_round_trip_and_nearest_neighbour_by_cosine_distance(migrated_engine: Engine) -> None:
    def unit(axis: int) -> list[float]:
        return [1.0 if i == axis else 0.0 for i in range(EMBEDDING_DIM)]

    query = [0.9, 0.1] + [0.0] * (EMBEDDING_DIM - 2)
    with Session(migrated_engine) as session:
        session.add_all(
            [
                Product(id=1, name="x", description="points along x", embedding=unit(0)),
                Product(id=2, name="y", description="points along y", embedding=unit(1)),
                Product(id=3, name="none", description="no embedding yet", embedding=None),
            ]
        )
        session.commit()
        nearest = session.scalars(
            select(Product)
            .where(Product.embedding.is_not(None))
            .order_by(Product.embedding.cosine_distance(query))
            .limit(2)
        ).all()
        assert [p.name for p in nearest] == ["x", "y"]
        assert nearest[0].embedding == unit(0)
        session.execute(text("DELETE FROM product"))
        session.commit()
