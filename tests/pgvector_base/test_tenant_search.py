"""Searches per tenant keep their recall whatever the tenant's share of the rows.

Tenants of 0.1%, 1%, 10% and 50% of 20,000 rows, assigned to rows at random (a tenant's vectors
spread over the whole space, the hard case for a filter after the index scan). The oracle is
numpy's exact answer among the tenant's rows; recall@10 must be at least 0.95 for each tenant, on
one table with one HNSW index and on a copy partitioned by tenant.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Engine, Index, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgvector_base.loading import copy_rows
from pgvector_base.migration import partitions
from pgvector_base.search import TenantSearch, VectorSearch

ROWS = 20_000
DIM = 32
QUERIES = 20
K = 10
SHARES = {"t0_1": 0.001, "t1": 0.01, "t10": 0.1, "t50": 0.5}
GOAL = 0.95


class TenantSearchBase(DeclarativeBase):
    """This module's own tables."""


def hnsw(table: str) -> Index:
    return Index(
        f"ix_{table}_embedding",
        "embedding",
        postgresql_using="hnsw",
        postgresql_with={"m": 16, "ef_construction": 64},
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )


class Shared(TenantSearchBase):
    """Every tenant's rows, one index."""

    __tablename__ = "shared_item"
    tenant_id: Mapped[str] = mapped_column(String(10), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    embedding: Mapped[Any] = mapped_column(VECTOR(DIM))
    __table_args__ = (hnsw("shared_item"),)


class Partitioned(TenantSearchBase):
    """The same rows, a partition (and an index) per tenant."""

    __tablename__ = "partitioned_item"
    tenant_id: Mapped[str] = mapped_column(String(10), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    embedding: Mapped[Any] = mapped_column(VECTOR(DIM))
    __table_args__ = (
        hnsw("partitioned_item"),
        partitions.by_list("tenant_id", {tenant: [tenant] for tenant in (*SHARES, "rest")}),
    )


def embeddings(rng: np.random.Generator, count: int) -> npt.NDArray[np.float32]:
    """Unit vectors in clusters on an 8-dimensional manifold, like an embedding model's."""
    centers = 2 * rng.standard_normal((50, 8))
    projection = rng.standard_normal((8, DIM)) / np.sqrt(8)
    latent = centers[rng.integers(50, size=count)] + rng.standard_normal((count, 8))
    vectors = latent @ projection + 0.1 * rng.standard_normal((count, DIM))
    unit: npt.NDArray[np.float64] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit.astype(np.float32)


@pytest.fixture(scope="module")
def data(vector_engine: Engine) -> Iterator[tuple[npt.NDArray[Any], npt.NDArray[Any], Any]]:
    """Both tables loaded and indexed; the stored vectors, the queries and each row's tenant."""
    rng = np.random.default_rng(11)
    vectors = embeddings(rng, ROWS + QUERIES)
    counts = [round(ROWS * share) for share in SHARES.values()]
    tenants = rng.permutation(np.repeat([*SHARES, "rest"], [*counts, ROWS - sum(counts)]))
    columns = {"tenant_id": tenants.tolist(), "id": np.arange(ROWS), "embedding": vectors[:ROWS]}
    with vector_engine.begin() as connection:
        tables = [
            TenantSearchBase.metadata.tables[name] for name in ("shared_item", "partitioned_item")
        ]
        for table in tables:
            table.create(connection)
        for tenant in (*SHARES, "rest"):
            connection.execute(
                text(
                    f"CREATE TABLE partitioned_item_{tenant} PARTITION OF partitioned_item "
                    f"FOR VALUES IN ('{tenant}')"
                )
            )
        for table in tables:
            (index,) = table.indexes
            index.drop(connection)
            copy_rows(connection, table, columns)
            index.create(connection)
    with vector_engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(text("VACUUM ANALYZE"))
    yield vectors[:ROWS], vectors[ROWS:], tenants
    with vector_engine.begin() as connection:
        TenantSearchBase.metadata.drop_all(connection)


def recall(
    found: list[list[int]], stored: npt.NDArray[Any], queries: npt.NDArray[Any], mine: Any
) -> float:
    """Mean recall@K of ``found`` against the exact nearest among the rows ``mine``."""
    nearest = np.argsort(-(queries @ stored[mine].T), axis=1)[:, :K]
    truth = [set(mine[row].tolist()) for row in nearest]
    return float(np.mean([len(set(f) & t) / K for f, t in zip(found, truth, strict=True)]))


@pytest.mark.parametrize("model", [Shared, Partitioned], ids=["shared", "partitioned"])
def test_recall_per_tenant_meets_the_goal(
    vector_engine: Engine, data: tuple[npt.NDArray[Any], npt.NDArray[Any], Any], model: Any
) -> None:
    stored, queries, tenants = data
    search = TenantSearch(VectorSearch(model, model.embedding), model.tenant_id)
    reached: dict[str, float] = {}
    with Session(vector_engine) as session:
        for tenant in SHARES:
            found = [
                [hit.item.id for hit in search.nearest(session, tenant, query.tolist(), K)]
                for query in queries
            ]
            assert all(len(ids) == K for ids in found)
            reached[tenant] = recall(found, stored, queries, np.flatnonzero(tenants == tenant))
        plans = {tenant: search.plan(session, tenant).strategy for tenant in SHARES}
    assert all(value >= GOAL for value in reached.values()), reached
    if model is Shared:
        assert plans == {"t0_1": "exact", "t1": "exact", "t10": "iterative", "t50": "iterative"}
    else:
        # A partition of its own: its index is the tenant's alone, and nothing is chosen.
        assert set(plans.values()) == {"partition"}


def test_the_shared_index_alone_misses_the_goal(
    vector_engine: Engine, data: tuple[npt.NDArray[Any], npt.NDArray[Any], Any]
) -> None:
    """The control: a plain filtered search, as a policy alone would run it, loses recall."""
    stored, queries, tenants = data
    search = VectorSearch(Shared, Shared.embedding)
    with Session(vector_engine) as session:
        found = [
            [
                hit.item.id
                for hit in search.nearest(
                    session, query.tolist(), K, where=[Shared.tenant_id == "t10"]
                )
            ]
            for query in queries
        ]
    assert recall(found, stored, queries, np.flatnonzero(tenants == "t10")) < GOAL
