"""Index discovery: the vector indexes declared on a model, and the distance each serves.

pgvector's HNSW and IVFFlat indexes answer exactly ``ORDER BY column <op> :query LIMIT k``, in
ascending order, where ``<op>`` is the operator of the index's operator class (pgvector README,
"Querying" and "Indexing"). A search reads the operator from the index declared on the model, so
that it never asks for an order that only an exact scan of the whole table can give.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from pgvector.sqlalchemy import BIT, HALFVEC
from sqlalchemy import Cast, Column, ColumnElement, Function, Label, Table, inspect, literal, null
from sqlalchemy.orm import InstrumentedAttribute

VECTOR_INDEX_METHODS = ("hnsw", "ivfflat")
Quantization = Literal["halfvec", "binary"]


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


@dataclass(frozen=True)
class QuantizedIndex(VectorIndex):
    """An index on a quantized copy of a ``vector`` column, as pgvector's README ("Scaling")
    recommends: its ``halfvec`` cast, or its binary quantization
    (``binary_quantize(column)::bit(n)``, searched by Hamming distance). ``distance`` is the
    index's own, which orders the candidates that a search then re-ranks on the full vector."""

    kind: Quantization
    dimensions: int
    expression: ColumnElement[Any] = field(compare=False)
    """The indexed expression, which the search's ``ORDER BY`` repeats for the index to serve."""


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
            or not _is(index.expressions[0], column)
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


def quantized_indexes(attribute: InstrumentedAttribute[Any]) -> list[QuantizedIndex]:
    """The HNSW and IVFFlat indexes on the ``halfvec`` cast or the binary quantization of the
    mapped column ``attribute``, by name; partial indexes are left out, as by
    :func:`vector_indexes`.

    pgvector's README writes them ``embedding::halfvec(n)`` and
    ``binary_quantize(embedding)::bit(n)``; a model declares them with ``cast(...)``, labelled
    for ``postgresql_ops`` to name the operator class (docs/autogenerate.md).
    """
    mapper = inspect(attribute.class_)
    column = mapper.columns[attribute.key]
    table = mapper.local_table
    found = []
    for index in table.indexes if isinstance(table, Table) else ():
        options = index.dialect_options["postgresql"]
        if (
            options["using"] not in VECTOR_INDEX_METHODS
            or options["where"] is not None
            or len(index.expressions) != 1
        ):
            continue
        indexed = index.expressions[0]
        quantized = _quantization(indexed, column)
        if quantized is None:
            continue
        name = str(index.name)
        operator_class = (options["ops"] or {}).get(getattr(indexed, "key", None))
        distance = operator_class_distance(operator_class, name)
        found.append(QuantizedIndex(name, options["using"], distance, *quantized))
    return sorted(found, key=lambda index: index.name)


def _quantization(indexed: Any, column: Column[Any]) -> tuple[Quantization, int, Cast[Any]] | None:
    """The quantization, dimensions and expression (without its label) of an index's expression
    on ``column``, if it is one."""
    expression = indexed.element if isinstance(indexed, Label) else indexed
    if not isinstance(expression, Cast):
        return None
    inner, type_ = expression.clause, expression.type
    dimensions = getattr(type_, "dim", None) or getattr(
        getattr(type_, "impl", None), "length", None
    )
    if isinstance(type_, HALFVEC) and _is(inner, column) and dimensions:
        return "halfvec", dimensions, expression
    if (
        isinstance(type_, BIT)
        and isinstance(inner, Function)
        and inner.name == "binary_quantize"
        and len(inner.clauses) == 1
        and _is(next(iter(inner.clauses)), column)
        and dimensions
    ):
        return "binary", dimensions, expression
    return None


def _is(element: Any, column: Column[Any]) -> bool:
    """Whether ``element`` is ``column``, or the ORM's annotated copy of it (``Model.column``)."""
    return element is column or (
        isinstance(element, Column) and element.table is column.table and element.key == column.key
    )


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


def similarity(distance: Distance, measured: ColumnElement[float]) -> ColumnElement[Any]:
    """The select list's ``similarity`` for a ``distance`` column: ``1 - distance`` for cosine,
    the inner product itself for inner product, ``NULL`` for the distances that define none."""
    if distance is Distance.COSINE:
        return (literal(1.0) - measured).label("similarity")
    if distance is Distance.INNER_PRODUCT:
        return (measured * -1).label("similarity")
    return null().label("similarity")


def search_index(
    attribute: InstrumentedAttribute[Any],
    distance: Distance | None,
    name: str | None,
    where: str,
) -> tuple[VectorIndex, Distance]:
    """The index that serves searches of ``attribute`` by ``distance``, and the distance the
    results are ranked by (for a quantized index, on the full vector).

    The index named ``name``, if given; otherwise a whole-column index, else a ``halfvec`` one,
    else a binary-quantization one, whose Hamming distance only picks candidates: it needs
    ``distance``. Raises :class:`NoIndexError` saying what to declare or pass.
    """
    whole = vector_indexes(attribute)
    quantized = quantized_indexes(attribute)
    if name is not None:
        named = [index for index in [*whole, *quantized] if index.name == name]
        if not named:
            raise NoIndexError(
                f"{where} has no searchable index {name}; its indexes: "
                f"{describe([*whole, *quantized]) or 'none'}"
            )
        return named[0], _ranking(named[0], distance, where)
    halves: list[VectorIndex] = [index for index in quantized if index.kind == "halfvec"]
    binary = [index for index in quantized if index.kind == "binary"]
    for indexes in (whole, halves):
        if indexes and (distance is None or distance in {index.distance for index in indexes}):
            index = choose_index(indexes, distance, where)
            return index, index.distance
    if binary:
        return binary[0], _ranking(binary[0], distance, where)
    index = choose_index(whole + halves, distance, where)  # raises: none serves the distance
    return index, index.distance


def _ranking(index: VectorIndex, distance: Distance | None, where: str) -> Distance:
    """The distance that results through ``index`` are ranked by."""
    if isinstance(index, QuantizedIndex) and index.kind == "binary":
        if distance is None or distance in {Distance.HAMMING, Distance.JACCARD}:
            raise NoIndexError(
                f"{index.name} on {where} indexes its binary quantization, whose Hamming "
                "distance only picks candidates; pass distance= (Distance.COSINE, ...) to rank "
                "them on the full vector"
            )
        return distance
    if distance is not None and distance is not index.distance:
        raise NoIndexError(
            f"{index.name} serves {index.distance.name.lower()} distance "
            f"({index.distance.value}), not {distance.name.lower()} ({distance.value})"
        )
    return index.distance


def describe(indexes: list[VectorIndex]) -> str:
    """``indexes`` for a message: name, method, distance."""
    return ", ".join(
        f"{index.name} ({index.method}, {index.distance.name.lower()} {index.distance.value})"
        for index in indexes
    )
