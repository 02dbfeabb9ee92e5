"""Nearest-neighbour search through the ORM, served by the vector index declared on the model.

One concern per module, each reusable by another kind of search:

- :mod:`~pgvector_base.search.indexes`: the vector indexes declared on a model, and their distance;
- :mod:`~pgvector_base.search.query`: query vectors checked and encoded as the column's type;
- :mod:`~pgvector_base.search.settings`: index settings, checked against pgvector's ranges;
- :mod:`~pgvector_base.search.nearest`: :class:`VectorSearch`, the k nearest rows;
- :mod:`~pgvector_base.search.quantized`: searches through a quantized index, re-ranked;
- :mod:`~pgvector_base.search.hybrid`: :class:`HybridSearch`, vector and full text fused by rank;
- :mod:`~pgvector_base.search.recall`: approximate against exact recall@k on stored rows;
- :mod:`~pgvector_base.search.tenants`: :class:`TenantSearch`, the k nearest of one tenant's rows.

Everything public is importable from here, as ``from pgvector_base.search import VectorSearch``.
"""

from pgvector_base.search.hybrid import HybridHit, HybridSearch, TextIndex, text_indexes
from pgvector_base.search.indexes import (
    OPERATOR_CLASS_DISTANCES,
    VECTOR_INDEX_METHODS,
    Distance,
    NoIndexError,
    QuantizedIndex,
    VectorIndex,
    quantized_indexes,
    vector_indexes,
)
from pgvector_base.search.nearest import ModelT, Neighbor, VectorSearch
from pgvector_base.search.query import (
    DIALECT,
    INT4_MAX,
    PLAIN_TYPES,
    QUERY_TYPES,
    QueryVector,
    QueryVectorType,
)
from pgvector_base.search.recall import RecallReport, measure_recall
from pgvector_base.search.settings import SETTING_RANGES, IterativeScan, SearchSettings
from pgvector_base.search.tenants import Plan, TenantSearch

__all__ = [
    "DIALECT",
    "INT4_MAX",
    "OPERATOR_CLASS_DISTANCES",
    "PLAIN_TYPES",
    "QUERY_TYPES",
    "SETTING_RANGES",
    "VECTOR_INDEX_METHODS",
    "Distance",
    "HybridHit",
    "HybridSearch",
    "IterativeScan",
    "ModelT",
    "Neighbor",
    "NoIndexError",
    "Plan",
    "QuantizedIndex",
    "QueryVector",
    "QueryVectorType",
    "RecallReport",
    "SearchSettings",
    "TenantSearch",
    "TextIndex",
    "VectorIndex",
    "VectorSearch",
    "measure_recall",
    "quantized_indexes",
    "text_indexes",
    "vector_indexes",
]
