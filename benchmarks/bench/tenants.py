"""Search per tenant: recall@k and p50 by tenant size, for each way of serving it.

One table of ``--rows`` rows holds tenants of 0.1%, 1%, 10% and 50% of them (the rest belong to
a fifth tenant), assigned to rows at random: a tenant's vectors are spread over the whole space,
the hard case for a filter after an index scan. Each tenant's queries run through
:class:`~pgvector_base.search.VectorSearch` with ``WHERE tenant_id = :tenant`` (what the tenant
policy adds, :mod:`pgvector_base.migration.tenancy`), served

* ``template``: as :class:`~pgvector_base.search.TenantSearch` chooses for the tenant (exact
  for a small share, else an iterative scan);
* ``global``: by the one HNSW index of the table, at pgvector's defaults;
* ``strict`` / ``relaxed``: by the same index with iterative scans (``strict_order``,
  ``relaxed_order``) at pgvector's defaults (``ef_search`` 40, ``max_scan_tuples`` 20,000);
* ``partition``: by the index of the tenant's own partition of a copy of the table partitioned
  by list on ``tenant_id``, which the planner prunes to;
* ``exact``: by an exact scan of the tenant's rows (index scans off: the tenant's btree index by
  bitmap, then a sort).

Recall@k is against numpy's exact answer among the tenant's rows. Each figure is the median of
``--repeats`` turns in which the strategies take turns.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from benchmarks.bench.common import Spread, TenantFigures, embeddings, in_turn
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Engine, Index, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgvector_base.loading import BuildSettings, copy_rows
from pgvector_base.search import IterativeScan, SearchSettings, TenantSearch, VectorSearch
from pgvector_base.session import set_local

SHARES = {"t0_1": 0.001, "t1": 0.01, "t10": 0.1, "t50": 0.5}
REST = "rest"
STRATEGIES = ("template", "global", "strict", "relaxed", "partition", "exact")


def models(dim: int) -> tuple[type[Any], type[Any]]:
    """The benchmark's two tables: ``tenant_item`` with one index, ``tenant_part`` partitioned."""

    class Base(DeclarativeBase):
        pass

    def columns() -> dict[str, Any]:
        return {
            "tenant_id": mapped_column(String(20), primary_key=True),
            "id": mapped_column(BigInteger, primary_key=True, autoincrement=False),
            "embedding": mapped_column(VECTOR(dim)),
            "__annotations__": {
                "tenant_id": Mapped[str],
                "id": Mapped[int],
                "embedding": Mapped[Any],
            },
        }

    def index(table: str) -> Index:
        return Index(
            f"ix_{table}_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        )

    shared = type(
        "TenantItem",
        (Base,),
        {
            "__tablename__": "tenant_item",
            "__table_args__": (index("tenant_item"),),
            **columns(),
        },
    )
    partitioned = type(
        "TenantPart",
        (Base,),
        {
            "__tablename__": "tenant_part",
            "__table_args__": (
                index("tenant_part"),
                {"postgresql_partition_by": "LIST (tenant_id)"},
            ),
            **columns(),
        },
    )
    return shared, partitioned


def measure_tenants(
    engine: Engine,
    app: Engine,
    *,
    rows: int,
    dim: int,
    queries: int,
    k: int,
    repeats: int,
    seed: int,
) -> list[TenantFigures]:
    """Create and load both tables, then time each tenant's queries served each way."""
    rng = np.random.default_rng(seed)
    vectors = embeddings(rng, rows + queries, dim)
    stored, asked = vectors[:rows], vectors[rows:]
    tenants = assign(rng, rows)
    shared, partitioned = models(dim)
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        shared.metadata.create_all(connection)
        for tenant in (*SHARES, REST):
            connection.execute(
                text(
                    f"CREATE TABLE tenant_part_{tenant} PARTITION OF tenant_part "
                    f"FOR VALUES IN ('{tenant}')"
                )
            )
        connection.execute(text("CREATE INDEX ix_tenant_item_tenant ON tenant_item (tenant_id)"))
        set_local(connection, BuildSettings().parameters())
        columns = {"tenant_id": tenants.tolist(), "id": np.arange(rows), "embedding": stored}
        # Rows first, then the vector indexes, as pgvector advises.
        for model in (shared, partitioned):
            (index,) = [index for index in model.__table__.indexes if "embedding" in index.name]
            index.drop(connection)
            copy_rows(connection, model.__table__, columns)
            index.create(connection)
    # As autovacuum leaves a loaded table: analyzed, and with a visibility map, which lets the
    # template count a tenant's rows by an index-only scan.
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(text("VACUUM ANALYZE"))
    plain = VectorSearch(shared, shared.embedding)
    # Each way: the search, and the settings its session starts with.
    ways: dict[str, tuple[Searcher, dict[str, str]]] = {
        "template": (template(TenantSearch(plain, shared.tenant_id)), {}),
        "global": (filtered(plain), {}),
        "strict": (filtered(plain), iterative(plain, "strict_order")),
        "relaxed": (filtered(plain), iterative(plain, "relaxed_order")),
        "partition": (filtered(VectorSearch(partitioned, partitioned.embedding)), {}),
        "exact": (filtered(plain), {"enable_indexscan": "off"}),
    }
    results = []
    for tenant, share in SHARES.items():
        mine = np.flatnonzero(tenants == tenant)
        truth = exact(stored[mine], asked, k, mine)
        p50s: dict[str, list[float]] = {name: [] for name in STRATEGIES}
        recall: dict[str, float] = {}
        for repeat in range(repeats):
            for name, (searcher, settings) in in_turn(ways, repeat):
                latencies, found = run(
                    app, searcher, settings, tenant=tenant, queries=asked.tolist(), k=k
                )
                p50s[name].append(1000 * statistics.median(latencies))
                recall[name] = float(
                    np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)])
                )
        results += [
            TenantFigures(share, len(mine), name, Spread.of(p50s[name]), recall[name])
            for name in STRATEGIES
        ]
    return results


Searcher = Callable[[Session, str, list[float], int], list[int]]


def filtered(search: VectorSearch[Any]) -> Searcher:
    """The ids ``search`` finds with the tenant as a ``WHERE`` condition."""

    def searcher(session: Session, tenant: str, query: list[float], k: int) -> list[int]:
        where = [search.model.tenant_id == tenant]
        return [hit.item.id for hit in search.nearest(session, query, k, where=where)]

    return searcher


def template(search: TenantSearch[Any]) -> Searcher:
    """The ids the template's :class:`~pgvector_base.search.TenantSearch` finds."""

    def searcher(session: Session, tenant: str, query: list[float], k: int) -> list[int]:
        return [hit.item.id for hit in search.nearest(session, tenant, query, k)]

    return searcher


def iterative(search: VectorSearch[Any], order: IterativeScan) -> dict[str, str]:
    """The settings of an iterative scan at pgvector's defaults otherwise."""
    return SearchSettings(iterative_scan=order).parameters(search.index)


def assign(rng: np.random.Generator, rows: int) -> npt.NDArray[np.str_]:
    """Each row's tenant: the shares of :data:`SHARES`, the rest to ``rest``, in random order."""
    counts = [max(1, round(rows * share)) for share in SHARES.values()]
    names = np.repeat([*SHARES, REST], [*counts, rows - sum(counts)])
    return rng.permutation(names)


def exact(
    stored: npt.NDArray[np.float32], asked: npt.NDArray[np.float32], k: int, ids: npt.NDArray[Any]
) -> list[list[int]]:
    """Each query's ``k`` nearest of ``stored`` by cosine distance (unit vectors), as ``ids``."""
    nearest = np.argsort(-(asked @ stored.T), axis=1)[:, :k]
    return [[int(ids[i]) for i in row] for row in nearest]


def run(
    app: Engine,
    searcher: Searcher,
    settings: dict[str, str],
    *,
    tenant: str,
    queries: list[list[float]],
    k: int,
) -> tuple[list[float], list[list[int]]]:
    """Each query's latency for ``tenant`` after an untimed run of it, and the ids found."""
    latencies: list[float] = []
    found: list[list[int]] = []
    with Session(app) as session:
        set_local(session, settings)
        for vector in queries:
            searcher(session, tenant, vector, k)
            started = time.perf_counter()
            ids = searcher(session, tenant, vector, k)
            latencies.append(time.perf_counter() - started)
            found.append(ids)
            session.expunge_all()
    return latencies, found
