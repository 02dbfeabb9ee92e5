"""Searches served by a quantized index, re-ranked by the exact distance on the full vector.

pgvector's README ("Half-Precision Indexing", "Binary Quantization") indexes a ``vector`` column
by its ``halfvec`` cast (half the size, and up to 4,000 dimensions where ``vector`` takes 2,000)
or by its binary quantization (``binary_quantize(embedding)::bit(n)``, 32 times smaller, ordered
by Hamming distance). The index orders by the quantized distance, which is close to the full one
but not equal, so a search asks it for ``k * oversampling`` candidates and ranks them by the
exact distance on the full vector, in one statement::

    SELECT id, embedding <=> :query AS distance
    FROM (SELECT id, embedding FROM item WHERE ...
          ORDER BY embedding::halfvec(n) <=> CAST(:query AS vector(n))::halfvec(n)
          LIMIT :candidates) AS candidates
    ORDER BY distance LIMIT :k

The inner ``ORDER BY`` repeats the index's expression, so that the planner serves it by the index;
the ``WHERE`` conditions go inside, on the table. The query is sent once, as the column's type,
and cast on the server to what the index compares. HNSW returns at most ``hnsw.ef_search`` rows,
so unless the settings give one, ``ef_search`` is raised to the number of candidates when that is
above HNSW's default of 40 and above the session's own value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from pgvector.sqlalchemy import HALFVEC
from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Select,
    bindparam,
    func,
    inspect,
    select,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.engine import Connection
from sqlalchemy.orm import InstrumentedAttribute, aliased

from pgvector_base.search.indexes import Distance, Quantization, QuantizedIndex
from pgvector_base.search.query import INT4_MAX, QueryVectorType
from pgvector_base.search.ranking import ranked_keys, ranked_rows
from pgvector_base.search.settings import SearchSettings

DEFAULT_OVERSAMPLING: Mapping[Quantization, int] = MappingProxyType({"halfvec": 2, "binary": 8})
"""Candidates per result when the settings give no ``oversampling``, per quantization, from the
benchmark's figures (docs/benchmark.md, "Quantized indexes"): binary quantization first reached
recall@10 >= 0.95 at 8x on 384 dimensions (2x on 1,536; never on GloVe's 50); halfvec matched the
vector index's recall from 2x on every data set (0.999 against 1.000 at 1x on 1,536)."""
HNSW_DEFAULT_EF_SEARCH = 40
HNSW_MAX_EF_SEARCH = 1000


class QuantizedStatements:
    """The statements of a search through the quantized index ``index`` of ``attribute``,
    ranked by ``distance`` on the full vector."""

    def __init__(
        self,
        model: type[Any],
        attribute: InstrumentedAttribute[Any],
        index: QuantizedIndex,
        distance: Distance,
    ) -> None:
        self.index = index
        self._model = model
        self._attribute = attribute
        mapper = inspect(model)
        self._table = mapper.local_table
        self._column = mapper.columns[attribute.key]
        self._primary_key = list(mapper.primary_key)
        self._distance = distance
        self._query = bindparam("query", type_=QueryVectorType(self._column.type))
        # Typed as the column, so the server reads the parameter once as the column's type.
        as_column = sql_cast(self._query, self._column.type)
        target = (
            sql_cast(as_column, HALFVEC(index.dimensions))
            if index.kind == "halfvec"
            else func.binary_quantize(as_column)
        )
        self._order = index.expression.op(index.distance.value, return_type=Float)(target)
        self._rows = self._build_rows([])
        self._keys = self._build_keys([])

    def rows(self, where: Sequence[ColumnElement[bool]]) -> Select[Any]:
        """``SELECT row, distance, similarity`` of the nearest candidates matching ``where``."""
        return self._build_rows(where) if where else self._rows

    def keys(self, where: Sequence[ColumnElement[bool]]) -> Select[Any]:
        """``SELECT key..., distance`` of the nearest candidates matching ``where``."""
        return self._build_keys(where) if where else self._keys

    def _candidates(self, columns: Sequence[Any], where: Sequence[ColumnElement[bool]]) -> Any:
        return (
            select(*columns)
            .where(*where)
            .order_by(self._order)
            .limit(bindparam("candidates", type_=Integer))
            .subquery("candidates")
        )

    def _build_rows(self, where: Sequence[ColumnElement[bool]]) -> Select[Any]:
        candidates = aliased(self._model, self._candidates([self._table], where))
        vector = getattr(candidates, self._attribute.key)
        measured = vector.op(self._distance.value, return_type=Float)(self._query)
        return ranked_rows(candidates, measured, self._distance, vector)

    def _build_keys(self, where: Sequence[ColumnElement[bool]]) -> Select[Any]:
        candidates = self._candidates([*self._primary_key, self._column], where)
        measured = candidates.c[self._column.key].op(self._distance.value, return_type=Float)(
            self._query
        )
        return ranked_keys([candidates.c[column.key] for column in self._primary_key], measured)


def candidates(k: int, settings: SearchSettings | None, index: QuantizedIndex) -> int:
    """How many candidates a search of ``k`` results takes from the quantized ``index``."""
    oversampling = (settings and settings.oversampling) or DEFAULT_OVERSAMPLING[index.kind]
    return min(k * oversampling, INT4_MAX)


def raised_ef_search(
    index: QuantizedIndex, parameters: Mapping[str, str], wanted: int, connection: Connection
) -> dict[str, str]:
    """``parameters`` (a search's settings for ``index``), with ``hnsw.ef_search`` raised to
    ``wanted`` candidates when they leave it alone and the connection's value is lower: never
    lowering what the server or :meth:`VectorSearch.configure` set.

    The current value is read from ``connection``, so that the result can be applied by
    :func:`~pgvector_base.session.set_local` like any search's settings (which a Citus cluster's
    shards need); that read is one round trip, and only for an HNSW index asked for more than
    pgvector's default of candidates.
    """
    if index.method != "hnsw" or "hnsw.ef_search" in parameters or wanted <= HNSW_DEFAULT_EF_SEARCH:
        return dict(parameters)
    # NULL (missing_ok) before pgvector's library is loaded in the session: the default, then.
    current = connection.scalar(select(func.current_setting("hnsw.ef_search", True)))
    target = min(wanted, HNSW_MAX_EF_SEARCH)
    if current is not None and int(current) >= target:
        return dict(parameters)
    return {**parameters, "hnsw.ef_search": str(target)}
