"""Query encoding: a query vector checked and sent as a parameter of the column's type.

With psycopg 3 (the driver of :func:`~pgvector_base.session.create_app_engine`), the query vector
is sent in pgvector's binary format, as a parameter whose type the server infers from the
operator: formatting 384 floats as text took longer than the rest of the client's work. With
psycopg2, the vector is sent as text. ``k`` and the query vector are checked in Python, so that
every connection refuses the same values with the same one line, whether or not it has loaded
pgvector yet.
"""

from __future__ import annotations

import contextlib
import math
import operator
import struct
from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import psycopg
from pgvector import HalfVector, SparseVector, Vector
from pgvector.sqlalchemy import HALFVEC, SPARSEVEC, VECTOR
from psycopg.adapt import Dumper
from psycopg.pq import Format
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from pgvector_base.search.indexes import Distance, NoIndexError

if TYPE_CHECKING:
    import numpy.typing as npt

    QueryVector = Sequence[float] | Vector | HalfVector | SparseVector | npt.NDArray[Any]
else:  # not numpy at run time: a service that searches with lists never imports it
    QueryVector = Sequence[float] | Vector | HalfVector | SparseVector
INT4_MAX = 2**31 - 1
# The query types encoded by one struct call (see QueryEncoder._encoded).
PLAIN_TYPES = (list, tuple)
# To name column types in messages.
DIALECT: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
# The query parameter's pgvector type for each column type a search can search.
QUERY_TYPES: dict[type[TypeEngine[Any]], type[Vector | HalfVector | SparseVector]] = {
    VECTOR: Vector,
    HALFVEC: HalfVector,
    SPARSEVEC: SparseVector,
}


class BinaryParameter:
    """A parameter already in its type's binary format, for the server to read with the
    receive function of the type it infers (here: the vector column's)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _BinaryParameterDumper(Dumper):
    format = Format.BINARY
    oid = 0  # "unknown": the server infers the type from the operator's other side

    def dump(self, obj: Any) -> bytes:
        return cast("BinaryParameter", obj).data


# Only for this module's own class: no other value is dumped differently.
psycopg.adapters.register_dumper(BinaryParameter, _BinaryParameterDumper)


class QueryVectorType(TypeDecorator[Any]):
    """A query vector parameter: binary with psycopg 3, the column type's text otherwise."""

    impl = TypeEngine
    cache_ok = True

    def __init__(self, column_type: TypeEngine[Any]) -> None:
        super().__init__()
        self.column_type = column_type
        self.kind = query_type(column_type)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return self.column_type

    def bind_processor(self, dialect: Dialect) -> Any:
        kind = self.kind
        if dialect.driver != "psycopg":
            text_processor = self.column_type.dialect_impl(dialect).bind_processor(dialect)

            def as_text(value: Any) -> Any:
                # A search's own queries come encoded: decode them for the column's text.
                if isinstance(value, BinaryParameter):
                    value = kind.from_binary(value.data)
                return text_processor(value) if text_processor is not None else value

            return as_text

        def process(value: Any) -> BinaryParameter | None:
            if value is None or isinstance(value, BinaryParameter):
                return value
            # A statement() run by the caller gets here unchecked: convert as QueryEncoder does.
            if not isinstance(value, kind):
                dense = value.to_list() if isinstance(value, Vector | HalfVector) else value
                value = kind(dense.tolist() if hasattr(dense, "tolist") else list(dense))
            return BinaryParameter(value.to_binary())

        return process


class _DenseEncoding(NamedTuple):
    """How a query of a ``vector`` or ``halfvec`` column with dimensions is encoded at once."""

    packer: struct.Struct  # pgvector's binary layout: dimensions, unused, then the values
    magnitude: int  # every bit of the encoded values but their signs


class QueryEncoder:
    """Checks query vectors for the column ``where`` of type ``column_type``, searched by
    ``distance``, and encodes them as that type; refusals are one-line :class:`ValueError`\\ s."""

    def __init__(self, column_type: TypeEngine[Any], distance: Distance, where: str) -> None:
        self.kind = query_type(column_type, where)
        self.distance = distance
        self.where = where
        self.dimensions: int | None = getattr(column_type, "dim", None)
        self._encoding = _dense_encoding(column_type)

    def parameter(self, query: QueryVector) -> BinaryParameter:
        """``query`` converted to the column's type, as the server would cast it, checked, and
        encoded."""
        values: Any = query
        if getattr(query, "ndim", None) == 1:  # a numpy array, as embedding models return
            values = cast("npt.NDArray[Any]", query).tolist()
        encoded = self._encoded(values) if type(values) in PLAIN_TYPES else None
        if encoded is None:
            encoded = self.vector(query).to_binary()
        return BinaryParameter(encoded)

    def _encoded(self, query: Sequence[float]) -> bytes | None:
        """A list or tuple of numbers in pgvector's binary format, checked; ``None`` for every
        query that is not plainly good, which :meth:`vector` then converts or refuses.

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

    def vector(self, query: QueryVector) -> Vector | HalfVector | SparseVector:
        """``query`` as the column's type, or a :class:`ValueError` saying why it cannot be."""
        kind = self.kind
        vector: Vector | HalfVector | SparseVector | None = None
        if isinstance(query, kind):
            vector = query
        else:
            values = _plain(query)
            with contextlib.suppress(TypeError, ValueError, OverflowError):
                vector = kind(values)  # OverflowError: beyond halfvec's range
        if vector is None:
            raise ValueError(_flaw(query, self.where))
        size = vector.dimensions()
        if self.dimensions is not None and size != self.dimensions:
            raise ValueError(
                f"the query vector has {size} dimensions; {self.where} has {self.dimensions}"
            )
        stored = vector.values() if isinstance(vector, SparseVector) else vector.to_list()
        if not _all_finite(stored):
            raise ValueError(_flaw(query, self.where))
        if self.distance is Distance.COSINE and not any(stored):
            raise ValueError("the query vector is all zeros, which has no cosine distance")
        return vector


def checked_k(k: Any) -> int:
    """``k`` as the whole number of rows the server takes for ``LIMIT``, or a ValueError."""
    if type(k) is int and 1 <= k <= INT4_MAX:
        return k
    try:
        whole = operator.index(k)
    except TypeError:
        whole = None
    if whole is None or isinstance(k, bool) or not 1 <= whole <= INT4_MAX:
        raise ValueError(f"k must be a whole number from 1 to {INT4_MAX}, not {k!r}")
    return whole


def query_type(
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
