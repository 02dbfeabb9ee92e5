"""Nearest-neighbour search through the ORM, always in the one shape a vector index can serve.

pgvector's HNSW and IVFFlat indexes answer exactly ``ORDER BY column <op> :query LIMIT k``, in
ascending order, where ``<op>`` is the operator of the index's operator class (pgvector README,
"Querying" and "Indexing"). Anything else (ordering by ``1 - distance`` or ``DESC``, or by a
different distance) is still valid SQL, so PostgreSQL answers it with an exact scan of the whole
table instead. :class:`VectorSearch` therefore reads the operator from the index declared on the
model and refuses a distance that no index serves; similarity is computed in the select list only.
Settings, ``k`` and the query vector are checked in Python, so that every connection refuses the
same values with the same one line, whether or not it has loaded pgvector yet.

With psycopg 3 (the driver of :func:`~pgvector_base.session.create_app_engine`), the query vector
is sent in pgvector's binary format, as a parameter whose type the server infers from the
operator: formatting 384 floats as text took longer than the rest of the client's work. Nothing is
prepared on the server (see :class:`~pgvector_base.session.EngineSettings`), so searches are
correct through a transaction-mode pooler. With psycopg2, the vector is sent as text.

Index settings (``hnsw.ef_search``, ``ivfflat.probes`` and pgvector 0.8's iterative scans) are
set with ``set_config(..., true)``, which lasts until the transaction ends and so never reaches
another user of a pooled connection. Passed to one search, they are set inside a savepoint that is
rolled back as soon as the rows are read, so they reach no later statement either;
:meth:`VectorSearch.configure` sets them for the rest of the transaction instead.
"""

from __future__ import annotations

import contextlib
import enum
import math
import operator
import struct
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, NamedTuple, TypeVar, cast, get_args

import psycopg
from pgvector import HalfVector, SparseVector, Vector
from pgvector.sqlalchemy import HALFVEC, SPARSEVEC, VECTOR
from psycopg.adapt import Dumper
from psycopg.pq import Format
from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Select,
    Table,
    bindparam,
    inspect,
    literal,
    null,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import InstrumentedAttribute, Session, defer
from sqlalchemy.types import TypeDecorator, TypeEngine

from pgvector_base.session import READ_REPLICA, set_local

ModelT = TypeVar("ModelT")

if TYPE_CHECKING:
    import numpy.typing as npt

    QueryVector = Sequence[float] | Vector | HalfVector | SparseVector | npt.NDArray[Any]
else:  # numpy is optional
    QueryVector = Sequence[float] | Vector | HalfVector | SparseVector
IterativeScan = Literal["off", "relaxed_order", "strict_order"]
VECTOR_INDEX_METHODS = ("hnsw", "ivfflat")
INT4_MAX = 2**31 - 1
# The query types encoded by one struct call (see VectorSearch._encoded).
PLAIN_TYPES = (list, tuple)
# To name column types in messages.
DIALECT: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
# The ranges pgvector gives its settings (pg_settings.min_val and max_val). Checked here, because
# before pgvector's library is loaded in a session the server takes any value as a placeholder and
# then ignores it, while a session that has loaded it refuses the same value.
SETTING_RANGES = {
    "ef_search": ("hnsw.ef_search", 1, 1000),
    "max_scan_tuples": ("hnsw.max_scan_tuples", 1, INT4_MAX),
    "probes": ("ivfflat.probes", 1, 32768),
    "max_probes": ("ivfflat.max_probes", 1, 32768),
}
# The query parameter's pgvector type for each column type VectorSearch can search.
QUERY_TYPES: dict[type[TypeEngine[Any]], type[Vector | HalfVector | SparseVector]] = {
    VECTOR: Vector,
    HALFVEC: HalfVector,
    SPARSEVEC: SparseVector,
}


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


class _BinaryParameter:
    """A parameter already in its type's binary format, for the server to read with the
    receive function of the type it infers (here: the vector column's)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _BinaryParameterDumper(Dumper):
    format = Format.BINARY
    oid = 0  # "unknown": the server infers the type from the operator's other side

    def dump(self, obj: Any) -> bytes:
        return cast("_BinaryParameter", obj).data


# Only for this module's own class: no other value is dumped differently.
psycopg.adapters.register_dumper(_BinaryParameter, _BinaryParameterDumper)


class QueryVectorType(TypeDecorator[Any]):
    """A query vector parameter: binary with psycopg 3, the column type's text otherwise."""

    impl = TypeEngine
    cache_ok = True

    def __init__(self, column_type: TypeEngine[Any]) -> None:
        super().__init__()
        self.column_type = column_type
        self.kind = _query_type(column_type)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return self.column_type

    def bind_processor(self, dialect: Dialect) -> Any:
        kind = self.kind
        if dialect.driver != "psycopg":
            text_processor = self.column_type.dialect_impl(dialect).bind_processor(dialect)

            def as_text(value: Any) -> Any:
                # VectorSearch's own queries come encoded: decode them for the column's text.
                if isinstance(value, _BinaryParameter):
                    value = kind.from_binary(value.data)
                return text_processor(value) if text_processor is not None else value

            return as_text

        def process(value: Any) -> _BinaryParameter | None:
            if value is None or isinstance(value, _BinaryParameter):
                return value
            # A statement() run by the caller gets here unchecked: convert as _query does.
            if not isinstance(value, kind):
                dense = value.to_list() if isinstance(value, Vector | HalfVector) else value
                value = kind(dense.tolist() if hasattr(dense, "tolist") else list(dense))
            return _BinaryParameter(value.to_binary())

        return process


class NoIndexError(LookupError):
    """The column has no vector index that serves the requested distance."""


@dataclass(frozen=True)
class VectorIndex:
    """A vector index declared on a model: its name, access method and distance."""

    name: str
    method: str
    distance: Distance


@dataclass(frozen=True)
class SearchSettings:
    """Per-query index settings; ``None`` leaves the server's value (pgvector README, "Query
    Options" and "Iterative Index Scans").

    HNSW returns at most ``ef_search`` rows (40 by default) unless iterative scans are on, so
    raise it for ``k`` above 40. With a ``WHERE`` filter, rows are filtered *after* the index scan:
    turn on ``iterative_scan`` to keep scanning until ``k`` rows pass (up to ``max_scan_tuples``
    for HNSW, ``max_probes`` for IVFFlat, which knows only ``relaxed_order``).
    """

    ef_search: int | None = None
    max_scan_tuples: int | None = None
    probes: int | None = None
    max_probes: int | None = None
    iterative_scan: IterativeScan | None = None

    def __post_init__(self) -> None:
        for field, (setting, low, high) in SETTING_RANGES.items():
            value = getattr(self, field)
            if value is not None and not (
                isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
            ):
                raise ValueError(
                    f"{field} must be a whole number from {low} to {high} "
                    f"(pgvector's {setting}), not {value!r}"
                )
        # An unknown value would only draw a server WARNING and silently turn iterative scans off.
        if self.iterative_scan is not None and self.iterative_scan not in get_args(IterativeScan):
            raise ValueError(
                f"iterative_scan must be one of {', '.join(get_args(IterativeScan))}, "
                f"not {self.iterative_scan!r}"
            )

    def parameters(self, index: VectorIndex) -> dict[str, str]:
        """The settings to apply for a scan of ``index``, as ``set_config`` names and values.

        Raises :class:`ValueError` for a setting that the index's access method would ignore.
        """
        own = {
            "hnsw": {
                "hnsw.ef_search": self.ef_search,
                "hnsw.max_scan_tuples": self.max_scan_tuples,
                "hnsw.iterative_scan": self.iterative_scan,
            },
            "ivfflat": {
                "ivfflat.probes": self.probes,
                "ivfflat.max_probes": self.max_probes,
                "ivfflat.iterative_scan": self.iterative_scan,
            },
        }
        other = {"hnsw": ("probes", "max_probes"), "ivfflat": ("ef_search", "max_scan_tuples")}
        ignored = [name for name in other[index.method] if getattr(self, name) is not None]
        if ignored:
            raise ValueError(
                f"{', '.join(ignored)} do not apply to {index.name}, an {index.method} index"
            )
        if index.method == "ivfflat" and self.iterative_scan == "strict_order":
            raise ValueError(
                f"{index.name} is an ivfflat index, whose iterative scans are relaxed_order only"
            )
        return {name: str(value) for name, value in own[index.method].items() if value is not None}


@dataclass(frozen=True)
class Neighbor(Generic[ModelT]):
    """One search result: the row, its distance to the query, and its similarity.

    ``similarity`` is ``1 - distance`` for cosine and the inner product itself for inner product;
    the other distances define none, and it is ``None``.
    """

    item: ModelT
    distance: float
    similarity: float | None


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
                str(index.name), options["using"], _distance(operator_class, str(index.name))
            )
        )
    return sorted(found, key=lambda index: index.name)


def _distance(operator_class: str | None, index_name: str) -> Distance:
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


class VectorSearch(Generic[ModelT]):
    """k-nearest-neighbour queries on one vector column of one model, served by its index.

    ``VectorSearch(Product, Product.embedding)`` uses the index declared on ``Product.embedding``;
    pass ``distance`` to pick among several indexes. Construction fails with :class:`NoIndexError`
    when no declared index serves the distance, rather than letting every query scan the table.
    """

    def __init__(
        self,
        model: type[ModelT],
        attribute: InstrumentedAttribute[Any],
        distance: Distance | None = None,
    ) -> None:
        if attribute.class_ is not model:
            raise ValueError(f"{attribute} is not a column of {model.__name__}")
        self.model = model
        self.attribute = attribute
        self._query_kind = _query_type(attribute.type, self._where)
        self.index = self._choose_index(vector_indexes(attribute), distance)
        self.distance = self.index.distance
        self.dimensions: int | None = getattr(attribute.type, "dim", None)
        self._encoding = _dense_encoding(attribute.type)
        to_query = attribute.op(self.distance.value, return_type=Float)(
            bindparam("query", type_=QueryVectorType(attribute.type))
        )
        ordering = to_query.label("distance")
        # Built once, so SQLAlchemy reuses its cache key and compiled SQL for every search. The
        # ORDER BY names the select list's distance, as pgvector's README writes it: the planner
        # sees the operator expression there, and the query vector is sent once less.
        # (SQLAlchemy 2.0 and 2.1 spell a Select's column types differently, hence Select[Any].)
        self._select = cast(
            "Select[Any]",
            select(model, ordering, self._similarity(to_query))
            .order_by(ordering)
            .limit(bindparam("k", type_=Integer))
            .options(defer(attribute))
            .execution_options(**READ_REPLICA),
        )
        # The same query shape for keys and distances only, on the table's columns: no ORM
        # entities to load (see nearest_keys).
        mapper = inspect(model)
        column = mapper.columns[attribute.key]
        self._composite = len(mapper.primary_key) > 1
        by_column = column.op(self.distance.value, return_type=Float)(
            bindparam("query", type_=QueryVectorType(attribute.type))
        ).label("distance")
        self._keys_select = cast(
            "Select[Any]",
            select(*mapper.primary_key, by_column)
            .order_by(by_column)
            .limit(bindparam("k", type_=Integer))
            .execution_options(**READ_REPLICA),
        )

    @property
    def _where(self) -> str:
        return f"{self.model.__name__}.{self.attribute.key}"

    def _choose_index(self, indexes: list[VectorIndex], distance: Distance | None) -> VectorIndex:
        where = self._where
        if not indexes:
            raise NoIndexError(
                f"{where} has no HNSW or IVFFlat index, so every search would scan the whole "
                "table; declare one in the model's __table_args__"
            )
        if distance is None:
            if len({index.distance for index in indexes}) > 1:
                raise NoIndexError(
                    f"{where} has indexes for several distances ({_describe(indexes)}); "
                    "pass distance= to choose one"
                )
            return indexes[0]
        for index in indexes:
            if index.distance is distance:
                return index
        raise NoIndexError(
            f"no index on {where} serves {distance.name.lower()} distance ({distance.value}), so "
            f"the query would scan the whole table; its indexes: {_describe(indexes)}"
        )

    def statement(self, where: Iterable[ColumnElement[bool]] = ()) -> Select[Any]:
        """``SELECT row, distance, similarity ... WHERE ... ORDER BY distance LIMIT :k``.

        Execute it with the parameters ``query`` (the vector) and ``k``. The vector column itself
        is deferred: results rarely need it, and it is the largest value of the row. It is marked
        with :data:`~pgvector_base.session.READ_REPLICA`, so a routing session may send it to a
        replica.
        """
        return _filtered(self._select, where)

    def nearest(
        self,
        session: Session,
        query: QueryVector,
        k: int = 10,
        *,
        where: Iterable[ColumnElement[bool]] = (),
        settings: SearchSettings | None = None,
    ) -> list[Neighbor[ModelT]]:
        """The ``k`` rows nearest to ``query`` that match every ``where`` condition, nearest
        first."""
        return self._run(session, self.statement(where), self._parameters(query, k), settings)

    def nearest_keys(
        self,
        session: Session,
        query: QueryVector,
        k: int = 10,
        *,
        where: Iterable[ColumnElement[bool]] = (),
        settings: SearchSettings | None = None,
    ) -> list[tuple[Any, float]]:
        """``(primary key, distance)`` of the ``k`` nearest rows, nearest first: :meth:`nearest`
        without loading ORM objects, which costs a service less CPU per query.

        The key is a tuple for a composite primary key.
        """
        statement = _filtered(self._keys_select, where)
        rows = self._rows(session, statement, self._parameters(query, k), settings, core=True)
        if self._composite:
            found = [(tuple(row[:-1]), row[-1]) for row in rows]
        else:
            found = [(key, distance) for key, distance in rows]
        # relaxed_order iterative scans may return rows slightly out of order (pgvector README).
        found.sort(key=_second)
        return found

    def neighbors_of(
        self,
        session: Session,
        key: object,
        k: int = 10,
        *,
        where: Iterable[ColumnElement[bool]] = (),
        settings: SearchSettings | None = None,
    ) -> list[Neighbor[ModelT]]:
        """The ``k`` rows nearest to the row whose primary key is ``key``, excluding that row.

        Raises :class:`LookupError` when there is no such row or its vector is ``NULL``.
        """
        primary_keys = inspect(self.model).primary_key
        if len(primary_keys) != 1:
            raise ValueError(f"{self.model.__name__} has a composite primary key; use nearest()")
        primary_key = primary_keys[0]
        # From the server the search will run on, which may be a replica.
        query = session.scalar(
            select(self.attribute).where(primary_key == key).execution_options(**READ_REPLICA)
        )
        if query is None:
            raise LookupError(
                f"no {self.model.__name__} with {primary_key.key}={key!r} and a vector"
            )
        return self.nearest(
            session, query, k, where=[primary_key != key, *where], settings=settings
        )

    def configure(self, session: Session, settings: SearchSettings) -> None:
        """Apply ``settings`` to every search in the session's current transaction.

        For a batch of queries, this saves the savepoint that ``settings=`` costs each one. Like
        ``SET LOCAL``, they end with the transaction, and never reach another user of the
        pooled connection. They are set on the server the session's searches go to, which may be
        a replica.
        """
        parameters = settings.parameters(self.index)
        set_local(session.connection(bind_arguments={"clause": self._select}), parameters)

    def _run(
        self,
        session: Session,
        statement: Select[Any],
        parameters: dict[str, Any],
        settings: SearchSettings | None,
    ) -> list[Neighbor[ModelT]]:
        rows = self._rows(session, statement, parameters, settings, core=False)
        typed = cast("Sequence[tuple[ModelT, float, float | None]]", rows)
        found = [Neighbor(item, distance, similarity) for item, distance, similarity in typed]
        # relaxed_order iterative scans may return rows slightly out of order (pgvector README).
        found.sort(key=_distance_of)
        return found

    def _rows(
        self,
        session: Session,
        statement: Select[Any],
        parameters: dict[str, Any],
        settings: SearchSettings | None,
        *,
        core: bool,
    ) -> Sequence[Any]:
        """The statement's rows, with ``settings`` for it alone; ``core`` runs it on the
        session's connection, bypassing the ORM.

        The settings and the statement go to the connection that the session's routing picks for
        the statement (a replica's, for a :class:`~pgvector_base.session.RoutingSession`), so
        that the settings reach the server that runs it.
        """
        index_settings = settings.parameters(self.index) if settings else {}
        route = {"clause": statement}

        def execute() -> Sequence[Any]:
            if core:
                return session.connection(bind_arguments=route).execute(statement, parameters).all()
            return session.execute(statement, parameters).all()

        if not index_settings:
            return execute()
        # begin_nested() flushes pending changes first (after which a routing session reads from
        # the primary), so rolling the savepoint back undoes nothing but the settings.
        savepoint = session.begin_nested()
        try:
            set_local(session.connection(bind_arguments=route), index_settings)
            return execute()
        finally:
            savepoint.rollback()

    def _similarity(self, distance: ColumnElement[float]) -> ColumnElement[Any]:
        if self.distance is Distance.COSINE:
            return (literal(1.0) - distance).label("similarity")
        if self.distance is Distance.INNER_PRODUCT:
            return (distance * -1).label("similarity")
        return null().label("similarity")

    def _parameters(self, query: QueryVector, k: int) -> dict[str, Any]:
        """The statement's parameters, once ``k`` and the query vector are checked; the vector
        converted to the column's type, as the server would cast it, and encoded."""
        if type(k) is not int or not 1 <= k <= INT4_MAX:
            k = _whole(k)
        values: Any = query
        if getattr(query, "ndim", None) == 1:  # a numpy array, as embedding models return
            values = cast("npt.NDArray[Any]", query).tolist()
        encoded = self._encoded(values) if type(values) in PLAIN_TYPES else None
        if encoded is None:
            encoded = self._query(query).to_binary()
        return {"query": _BinaryParameter(encoded), "k": k}

    def _encoded(self, query: Sequence[float]) -> bytes | None:
        """A list or tuple of numbers in pgvector's binary format, checked; ``None`` for every
        query that is not plainly good, which :meth:`_query` then converts or refuses.

        Most queries are a list of floats from an embedding model: encoded by one ``struct``
        call, they cost a fraction of a round trip to convert and check.
        """
        encoding = self._encoding
        if encoding is None:
            return None
        try:
            # struct refuses a value outside float4's or float2's range, as the server would.
            encoded = encoding.packer.pack(len(query), 0, *query)
            finite = _all_finite(query)
        except (struct.error, OverflowError, TypeError):
            return None
        if not finite:
            return None
        # Zero once rounded to float4 or float2: every bit but the signs is 0.
        if self.distance is Distance.COSINE and not (
            int.from_bytes(encoded[4:], "big") & encoding.magnitude
        ):
            return None
        return encoded

    def _query(self, query: QueryVector) -> Vector | HalfVector | SparseVector:
        """``query`` as the column's type, or a :class:`ValueError` saying why it cannot be."""
        kind = self._query_kind
        vector: Vector | HalfVector | SparseVector | None = None
        if isinstance(query, kind):
            vector = query
        else:
            values = _plain(query)
            with contextlib.suppress(TypeError, ValueError, OverflowError):
                vector = kind(values)  # OverflowError: beyond halfvec's range
        if vector is None:
            raise ValueError(_flaw(query, self._where))
        size = vector.dimensions()
        if self.dimensions is not None and size != self.dimensions:
            raise ValueError(
                f"the query vector has {size} dimensions; {self._where} has {self.dimensions}"
            )
        stored = vector.values() if isinstance(vector, SparseVector) else vector.to_list()
        if not _all_finite(stored):
            raise ValueError(_flaw(query, self._where))
        if self.distance is Distance.COSINE and not any(stored):
            raise ValueError("the query vector is all zeros, which has no cosine distance")
        return vector


class _DenseEncoding(NamedTuple):
    """How a query of a ``vector`` or ``halfvec`` column with dimensions is encoded at once."""

    packer: struct.Struct  # pgvector's binary layout: dimensions, unused, then the values
    magnitude: int  # every bit of the encoded values but their signs


def _dense_encoding(column_type: TypeEngine[Any]) -> _DenseEncoding | None:
    dim = getattr(column_type, "dim", None)
    if dim is None or not isinstance(column_type, VECTOR | HALFVEC):
        return None
    code, size = ("f", 4) if isinstance(column_type, VECTOR) else ("e", 2)
    magnitude = int.from_bytes((b"\x7f" + b"\xff" * (size - 1)) * dim, "big")
    return _DenseEncoding(struct.Struct(f">HH{dim}{code}"), magnitude)


def _all_finite(values: Sequence[float]) -> bool:
    """Whether no value is NaN or infinite. One such value makes the sum so; finite float4 values
    cannot add up to infinity in a float, and summing is several times faster than testing each."""
    return math.isfinite(sum(values))


def _whole(k: Any) -> int:
    """``k`` as the whole number of rows the server takes for ``LIMIT``, or a ValueError."""
    try:
        whole = operator.index(k)
    except TypeError:
        whole = None
    if whole is None or isinstance(k, bool) or not 1 <= whole <= INT4_MAX:
        raise ValueError(f"k must be a whole number from 1 to {INT4_MAX}, not {k!r}")
    return whole


def _second(pair: tuple[Any, float]) -> float:
    return pair[1]


def _distance_of(neighbor: Neighbor[Any]) -> float:
    return neighbor.distance


def _filtered(statement: Select[Any], where: Iterable[ColumnElement[bool]]) -> Select[Any]:
    """``statement`` with every condition of ``where`` added."""
    conditions = list(where)
    return statement.where(*conditions) if conditions else statement


def _plain(query: QueryVector) -> Any:
    """``query``'s values as a list, or as the numpy array it is, for pgvector's constructors."""
    if isinstance(query, Vector | HalfVector | SparseVector):
        return query.to_list()
    return query if isinstance(query, list) or hasattr(query, "tolist") else list(query)


def _flaw(query: QueryVector, where: str) -> str:
    """Why ``query`` cannot be sent to the column ``where`` as its type: the slow path of a
    refused query only."""
    try:
        values = array("d", _plain(query).tolist() if hasattr(query, "tolist") else _plain(query))
    except TypeError:
        return "the query vector must be a flat sequence of numbers"
    if not all(map(math.isfinite, values)):
        return "the query vector has NaN or infinite values, which have no distance"
    return f"the query vector has values outside the range of {where}"


def _query_type(
    column_type: TypeEngine[Any], where: str = "the column"
) -> type[Vector | HalfVector | SparseVector]:
    """The query parameter's pgvector type for ``column_type``."""
    for type_, found in QUERY_TYPES.items():
        if isinstance(column_type, type_):
            return found
    raise NoIndexError(
        f"{where} is {column_type.compile(dialect=DIALECT)}; "
        "VectorSearch searches VECTOR, HALFVEC and SPARSEVEC columns"
    )


def _describe(indexes: list[VectorIndex]) -> str:
    return ", ".join(
        f"{index.name} ({index.method}, {index.distance.name.lower()} {index.distance.value})"
        for index in indexes
    )
