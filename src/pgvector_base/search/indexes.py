"""Index discovery: the vector indexes declared on a model, and the distance each serves.

pgvector's HNSW and IVFFlat indexes answer exactly ``ORDER BY column <op> :query LIMIT k``, in
ascending order, where ``<op>`` is the operator of the index's operator class (pgvector README,
"Querying" and "Indexing"). A search reads the operator from the index declared on the model, so
that it never asks for an order that only an exact scan of the whole table can give.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, inspect
from sqlalchemy.orm import InstrumentedAttribute

VECTOR_INDEX_METHODS = ("hnsw", "ivfflat")


class Distance(enum.Enum):
    """pgvector's distance operators. ``<#>`` is the *negative* inner product, so that every
    distance sorts ascending, the only order an index scan returns."""

    L2 = "<->"
    INNER_PRODUCT = "<#>"
    COSINE = "<=>"
    L1 = "<+>"
    HAMMING = "<~>"
    JACCARD = "<%>"


# Operator classes are named <type>_<distance>_ops: vector_cosine_ops, halfvec_l2_ops, ...
OPERATOR_CLASS_DISTANCES = {
    "l2": Distance.L2,
    "ip": Distance.INNER_PRODUCT,
    "cosine": Distance.COSINE,
    "l1": Distance.L1,
    "hamming": Distance.HAMMING,
    "jaccard": Distance.JACCARD,
}


class NoIndexError(LookupError):
    """The column has no vector index that serves the requested distance."""


@dataclass(frozen=True)
class VectorIndex:
    """A vector index declared on a model: its name, access method and distance."""

    name: str
    method: str
    distance: Distance


def vector_indexes(attribute: InstrumentedAttribute[Any]) -> list[VectorIndex]:
    """The HNSW and IVFFlat indexes declared on the mapped column ``attribute``, by name.

    Only whole-column indexes count: a partial index (``postgresql_where``) serves only queries
    whose filter implies its predicate, and an expression index only queries on that expression.
    """
    mapper = inspect(attribute.class_)
    column = mapper.columns[attribute.key]
    key = column.key  # what postgresql_ops is keyed by
    table = mapper.local_table
    if not isinstance(table, Table):
        raise NoIndexError(f"{attribute} is not mapped to a table, which alone can have indexes")
    found = []
    for index in table.indexes:
        options = index.dialect_options["postgresql"]
        if (
            options["using"] not in VECTOR_INDEX_METHODS
            or options["where"] is not None
            or len(index.expressions) != 1
            or index.expressions[0] is not column
        ):
            continue
        operator_class = (options["ops"] or {}).get(key)
        found.append(
            VectorIndex(
                str(index.name),
                options["using"],
                operator_class_distance(operator_class, str(index.name)),
            )
        )
    return sorted(found, key=lambda index: index.name)


def operator_class_distance(operator_class: str | None, index_name: str) -> Distance:
    """The distance served by the pgvector operator class ``operator_class`` of ``index_name``,
    or a :class:`NoIndexError` saying what to declare."""
    if operator_class is None:
        # Only ivfflat on vector has a default operator class; relying on it hides the distance.
        raise NoIndexError(
            f"index {index_name} declares no operator class; add "
            "postgresql_ops={'<column>': 'vector_cosine_ops'} (or the one for your distance)"
        )
    kind, _, suffix = operator_class.rpartition("_")
    distance = OPERATOR_CLASS_DISTANCES.get(kind.rpartition("_")[2]) if suffix == "ops" else None
    if distance is None:
        raise NoIndexError(
            f"index {index_name} uses {operator_class}, not a pgvector operator class"
        )
    return distance


def choose_index(indexes: list[VectorIndex], distance: Distance | None, where: str) -> VectorIndex:
    """The index of ``indexes`` that serves ``distance`` (any, when all serve one distance) for
    searches of the column ``where``, or a :class:`NoIndexError` saying what to do."""
    if not indexes:
        raise NoIndexError(
            f"{where} has no HNSW or IVFFlat index, so every search would scan the whole "
            "table; declare one in the model's __table_args__"
        )
    if distance is None:
        if len({index.distance for index in indexes}) > 1:
            raise NoIndexError(
                f"{where} has indexes for several distances ({describe(indexes)}); "
                "pass distance= to choose one"
            )
        return indexes[0]
    for index in indexes:
        if index.distance is distance:
            return index
    raise NoIndexError(
        f"no index on {where} serves {distance.name.lower()} distance ({distance.value}), so "
        f"the query would scan the whole table; its indexes: {describe(indexes)}"
    )


def describe(indexes: list[VectorIndex]) -> str:
    """``indexes`` for a message: name, method, distance."""
    return ", ".join(
        f"{index.name} ({index.method}, {index.distance.name.lower()} {index.distance.value})"
        for index in indexes
    )
