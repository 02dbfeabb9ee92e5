"""Nearest neighbours among one tenant's rows, with recall like a table of the tenant's own.

A vector index is built over every row of its table (or partition); the tenant condition
(``WHERE tenant_id = ...``, or the row-level security policy of
:mod:`pgvector_base.migration.tenancy`) filters rows *after* the index scan. With HNSW's default
40 candidates a tenant of 1% of the rows keeps none of them in most queries: recall@10 0.06 in
the benchmark (``--only tenants``, docs/multitenancy.md), and fewer than k rows. What serves a
tenant best depends on its share of the rows its index covers, measured there:

* a partition of its own (declared with ``partitions.by_list``, one value to it): the planner
  prunes to it, and its index is the tenant's alone, so the search runs as it is, with nothing
  to choose (``"partition"``);
* a small tenant (at most :data:`EXACT_ROWS` rows), or one under :data:`EXACT_SHARE` of the rows
  its index covers: an exact scan of its rows, found by the tenant column's btree index (the
  primary key ``(tenant_id, id)`` is one). It is exact, and faster than an iterative scan that
  visits ~``ef_search / share`` rows of other tenants;
* any other: the index with ``ef_search`` raised to ``40 / share`` (so that about 40 of the
  candidates are the tenant's, as the default gives a table of its own) and a ``relaxed_order``
  iterative scan, which keeps scanning until enough of them pass, allowed at least
  ``4 * ef_search / share`` tuples.

Choosing costs one query before the search: the tenant's rows counted up to
:data:`COUNT_LIMIT` through that btree index, and the planner's row estimate of the table or
partition they live in (``pg_class.reltuples``; an unanalyzed table counts as the tenant's alone).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, cast

from sqlalchemy import ColumnElement, Float, bindparam, text
from sqlalchemy.orm import InstrumentedAttribute, Session

from pgvector_base.migration import partitions
from pgvector_base.search.nearest import ModelT, Neighbor, VectorSearch
from pgvector_base.search.query import DIALECT, QueryVector, QueryVectorType, checked_k
from pgvector_base.search.settings import SearchSettings
from pgvector_base.session import READ_REPLICA

EXACT_ROWS = 1000
"""A tenant with at most this many rows is searched exactly, whatever its share."""
EXACT_SHARE = 0.02
"""A tenant under this share of the rows its index covers is searched exactly."""
COUNT_LIMIT = 10_000
"""The tenant's rows are counted up to this many, which bounds what choosing costs."""
DEFAULT_EF_SEARCH = 40
"""pgvector's default ``hnsw.ef_search``: the candidates a search of an unfiltered table gathers."""
MAX_EF_SEARCH = 1000
"""The largest ``hnsw.ef_search`` pgvector takes."""
DEFAULT_MAX_SCAN_TUPLES = 20_000
"""pgvector's ``hnsw.max_scan_tuples``, the floor of what an iterative scan may visit."""

Strategy = Literal["partition", "exact", "iterative"]


@dataclass(frozen=True)
class Plan:
    """How one tenant's search is served, and why: its rows (counted up to
    :data:`COUNT_LIMIT`) and the rows of the table or partition they live in (neither counted
    for a partition of its own)."""

    strategy: Strategy
    rows: int | None = None
    covered: int | None = None
    settings: SearchSettings | None = None


class TenantSearch(Generic[ModelT]):
    """``search`` restricted to one tenant's rows, the tenant held in ``tenant_column``.

    ``TenantSearch(VectorSearch(Document, Document.embedding), Document.tenant_id)``. Works with
    or without row-level security (it adds the tenant condition itself) and on a table
    partitioned by tenant, whose partition the planner then prunes to.
    """

    def __init__(
        self, search: VectorSearch[ModelT], tenant_column: InstrumentedAttribute[Any]
    ) -> None:
        if tenant_column.class_ is not search.model:
            raise ValueError(f"{tenant_column} is not a column of {search.model.__name__}")
        self.search = search
        self.tenant_column = tenant_column
        column = tenant_column.property.columns[0]
        declared = partitions.declared(column.table)
        lists = declared.lists if declared is not None and declared.column == column.name else None
        # The tenants with a partition of their own.
        self._own_partition = frozenset(
            values[0] for values in (lists or {}).values() if len(values) == 1
        )
        preparer = DIALECT.identifier_preparer
        table = preparer.format_table(column.table)
        condition = f"{preparer.quote(column.name)} = :tenant"
        # The tenant's rows up to the limit, by an index-only scan where the visibility map
        # allows (autovacuum keeps it), and the rows of the table or partition they live in,
        # which takes one row's tableoid.
        self._count = text(
            f"SELECT (SELECT count(*) FROM (SELECT FROM {table} WHERE {condition} "
            "LIMIT :limit) AS mine), (SELECT reltuples FROM pg_class WHERE oid = "
            f"(SELECT tableoid FROM {table} WHERE {condition} LIMIT 1))"
        ).execution_options(**READ_REPLICA)
        # The distance again, plus zero: a vector index serves ORDER BY column <op> :query only,
        # so this ordering leaves the planner the tenant's rows and a sort, an exact answer.
        self._exact_order = (
            search.attribute.op(search.distance.value, return_type=Float)(
                bindparam("query", type_=QueryVectorType(search.attribute.type))
            )
            + 0
        )

    def plan(self, session: Session, tenant: object) -> Plan:
        """How :meth:`nearest` serves ``tenant``, from its rows and their share."""
        if tenant in self._own_partition:
            return Plan("partition")
        row = session.execute(self._count, {"tenant": tenant, "limit": COUNT_LIMIT}).one()
        rows = int(row[0])
        covered = max(rows, math.ceil(row[1] or 0))
        if rows < COUNT_LIMIT and (rows <= EXACT_ROWS or rows < EXACT_SHARE * covered):
            return Plan("exact", rows, covered)
        share = rows / covered
        # As many candidates of the tenant's own as the default gives a table of its own: the
        # index gathers ef_search / share, of which about ef_search are the tenant's.
        ef_search = min(MAX_EF_SEARCH, math.ceil(DEFAULT_EF_SEARCH / share))
        settings = SearchSettings(
            ef_search=ef_search,
            iterative_scan="relaxed_order",
            max_scan_tuples=max(DEFAULT_MAX_SCAN_TUPLES, math.ceil(4 * ef_search / share)),
        )
        return Plan("iterative", rows, covered, settings)

    def nearest(
        self,
        session: Session,
        tenant: object,
        query: QueryVector,
        k: int = 10,
        *,
        where: Iterable[ColumnElement[bool]] = (),
    ) -> list[Neighbor[ModelT]]:
        """The ``k`` rows of ``tenant`` nearest to ``query`` that match every ``where``
        condition, nearest first."""
        conditions = [self.tenant_column == tenant, *where]
        plan = self.plan(session, tenant)
        if plan.strategy != "exact":
            return self.search.nearest(session, query, k, where=conditions, settings=plan.settings)
        statement = self.search.statement(conditions).order_by(None).order_by(self._exact_order)
        parameters = {"query": self.search.encoder.parameter(query), "k": checked_k(k)}
        rows = session.execute(statement, parameters).all()
        typed = cast("list[tuple[ModelT, float, float | None]]", rows)
        return [Neighbor(item, distance, similarity) for item, distance, similarity in typed]
