"""Rows into PostgreSQL's binary COPY format, checked value by value: the loader's encoders.

:mod:`pgvector_base.loading` sends what these produce. Vectors are in pgvector's own binary layout
(``vector_recv``, ``halfvec_recv``, ``sparsevec_recv``). Every row is checked before it is encoded
(number of values, types, vector dimensions, ranges), and a bad one raises :class:`LoadError`
naming its line and column. Rows whose vectors are numpy arrays, and column batches, are encoded
by :mod:`pgvector_base.arrays` several thousand rows at a time.

References: PostgreSQL "COPY", section "Binary Format"; pgvector's ``src/vector.c``,
``src/halfvec.c`` and ``src/sparsevec.c`` (the receive functions).
"""

from __future__ import annotations

import itertools
import struct
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from pgvector import HalfVector, SparseVector, Vector
from pgvector.sqlalchemy import HALFVEC, SPARSEVEC, VECTOR
from sqlalchemy import BigInteger, Boolean, Column, Integer, SmallInteger, String, Uuid
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

if TYPE_CHECKING:
    import numpy.typing as npt

# Encoded rows are joined into pieces of at least this many bytes (one read of psycopg2's), so
# that sending them is not a Python call per row.
PIECE_SIZE = 1 << 16
# Rows numpy encodes at once: enough that its per-call costs vanish, few enough (6 MB at 384
# dimensions) that the next slice is encoded while the server stores this one.
COLUMN_SLICE = 4096

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + struct.pack(">ii", 0, 0)  # flags, header extension length
TRAILER = struct.pack(">h", -1)
NULL = struct.pack(">i", -1)  # a field's length of -1 means NULL
TRUE = struct.pack(">i?", 1, True)
FALSE = struct.pack(">i?", 1, False)
LENGTH = struct.Struct(">i")
FIELD_COUNT = struct.Struct(">h")

Encoder = Callable[[Any], bytes]
ROW_TYPES = (list, tuple)
# To name column types in messages.
DIALECT: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
# pgvector's HNSW index takes sparse vectors of at most this many non-zero elements.
HNSW_MAX_NONZERO = 1000


class UnloadableError(ValueError):
    """A table, ``columns=`` or column type :func:`~pgvector_base.loading.load` cannot load into,
    found before anything is dropped or sent."""


class LoadError(Exception):
    """A row that cannot be loaded; ``line`` is its 1-based position in the input."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class TableEncoder:
    """Encodes rows and column batches for one COPY's columns."""

    def __init__(
        self,
        columns: list[Column[Any]],
        encoding: str,
        hnsw_sparse: Mapping[str, str] | None = None,
    ) -> None:
        self.columns = columns
        self._general = _field_by_field(columns, encoding, hnsw_sparse or {})
        self.fast = _fast_encoder(columns)
        """Packs a row of exactly the expected types, or returns ``None`` (see
        :func:`_fast_encoder`); ``None`` itself when some column has no fixed width."""
        fixed = all(_fixed_layout(column) is not None for column in columns)
        vectors = [i for i, c in enumerate(columns) if isinstance(c.type, VECTOR | HALFVEC)]
        # Only rows whose every column has a fixed width can be encoded as one structured array.
        self._gathered = vectors if fixed else []
        self._layout: Any = None

    def row(self, row: Sequence[Any], line: int) -> bytes:
        """One row, or a :class:`LoadError` naming ``line``."""
        if self.fast is not None and (encoded := self.fast(row)) is not None:
            return encoded
        try:
            return self._general(row)
        except (ValueError, TypeError) as error:
            raise LoadError(line, str(error)) from None

    def gathered(self, rows: Sequence[Any], start: int, stop: int) -> int:
        """How many of ``rows[start:stop]``, from the first, are encoded together as columns:
        rows of the COPY's width whose vectors are all numpy arrays.

        Called once per slice of rows rather than once per row: a row costs a few type checks.
        """
        ndarray = ndarray_type()
        if ndarray is None or not self._gathered:
            return 0
        width = len(self.columns)
        positions = self._gathered
        for number in range(start, stop):
            row = rows[number]
            if type(row) not in ROW_TYPES or len(row) != width:
                return number - start
            for position in positions:
                if type(row[position]) is not ndarray:
                    return number - start
        return stop - start

    def batch(self, columns: Mapping[str, Any], line: int) -> list[Any]:
        """The values of a column batch in the COPY's column order, all of one length."""
        names = [column.name for column in self.columns]
        missing = [name for name in names if name not in columns]
        extra = [name for name in columns if name not in names]
        if missing or extra:
            raise LoadError(
                line,
                f"a column batch needs exactly the columns {', '.join(names)}; "
                + ", ".join(
                    f"{what} {', '.join(found)}"
                    for what, found in (("missing", missing), ("unknown", extra))
                    if found
                ),
            )
        values = [columns[name] for name in names]
        lengths = {name: len(value) for name, value in zip(names, values, strict=True)}
        if len(set(lengths.values())) > 1:
            described = ", ".join(f"{name} {length}" for name, length in lengths.items())
            raise LoadError(line, f"the columns of a column batch differ in length: {described}")
        return values

    def columns_of(self, values: Sequence[Any], first_line: int) -> bytes | memoryview:
        """Rows given as one sequence per column, encoded by numpy when every value fits;
        otherwise row by row, which names the first bad row.

        numpy is used only if the caller has loaded it: a batch of plain lists needs no numpy.
        """
        ndarray = ndarray_type()
        if self._gathered and ndarray is not None:
            if self._layout is None:
                from pgvector_base.arrays import Layout

                self._layout = Layout(self.columns)
            encoded: memoryview | None = self._layout.encode(values)
            if encoded is not None:
                return encoded
        # Python values, so that a message shows 6 where numpy would show np.int64(6).
        plain = [
            v.tolist() if ndarray is not None and isinstance(v, ndarray) and v.ndim == 1 else v
            for v in values
        ]
        rows = zip(*plain, strict=True)
        return b"".join([self.row(row, line) for line, row in enumerate(rows, first_line)])


class Source:
    """The rows to copy, encoded into pieces of up to one COPY's worth.

    Rows are read ``COLUMN_SLICE`` at a time. Runs of consecutive rows whose vectors are numpy
    arrays are gathered into columns, and columns are encoded ``COLUMN_SLICE`` rows at a time;
    other rows are encoded one by one.
    """

    def __init__(self, items: Iterable[Any], encoder: TableEncoder) -> None:
        self._items = iter(items)
        self._read: list[Any] = []  # rows read and not yet encoded, from self._next
        self._next = 0
        self._encoder = encoder
        self._columns: list[Any] = []  # a column batch being sent, from self._offset
        self._offset = 0
        self._length = 0
        self.line = 0  # rows encoded so far

    def more(self) -> bool:
        """Whether any row is left to send."""
        if self._offset < self._length or self._next < len(self._read):
            return True
        self._read = list(itertools.islice(self._items, COLUMN_SLICE))
        self._next = 0
        return bool(self._read)

    def pieces(self, limit: int) -> Iterator[bytes | memoryview]:
        """The next ``limit`` rows (or fewer, at the end), encoded; rows joined in pieces of at
        least one read, so that a read is not a Python call per row."""
        end = self.line + limit
        while self.line < end and self.more():
            if self._offset < self._length:
                yield self._next_columns(end)
                continue
            first = self._read[self._next]
            if isinstance(first, Mapping):
                self._next += 1
                self._start_columns(self._encoder.batch(first, self.line + 1))
                continue
            stop = min(len(self._read), self._next + end - self.line)
            gathered = self._encoder.gathered(self._read, self._next, stop)
            if gathered:
                rows = self._read[self._next : self._next + gathered]
                self._next += gathered
                self._start_columns(list(zip(*rows, strict=True)))
                continue
            yield from self._rows(stop)

    def _rows(self, stop: int) -> Iterator[bytes]:
        """Rows up to ``stop`` encoded one by one, until a column batch or a row to gather."""
        encoder = self._encoder
        fast = encoder.fast
        chunk: list[bytes] = []
        size = 0
        for number in range(self._next, stop):
            row = self._read[number]
            encoded = fast(row) if fast is not None else None
            if encoded is None:
                # Not the first row: pieces() has found it is neither.
                if number > self._next and (
                    isinstance(row, Mapping) or encoder.gathered(self._read, number, number + 1)
                ):
                    stop = number
                    break
                encoded = encoder.row(row, self.line + number - self._next + 1)
            chunk.append(encoded)
            size += len(encoded)
            if size >= PIECE_SIZE:
                self.line += number + 1 - self._next
                self._next = number + 1
                yield b"".join(chunk)
                chunk, size = [], 0
        self.line += stop - self._next
        self._next = stop
        if chunk:
            yield b"".join(chunk)

    def _start_columns(self, values: list[Any]) -> None:
        self._columns = values
        self._offset = 0
        self._length = len(values[0]) if values else 0

    def _next_columns(self, end: int) -> bytes | memoryview:
        stop = min(self._length, self._offset + COLUMN_SLICE, self._offset + end - self.line)
        part = [values[self._offset : stop] for values in self._columns]
        encoded = self._encoder.columns_of(part, self.line + 1)
        self.line += stop - self._offset
        self._offset = stop
        return encoded


def ndarray_type() -> Any:
    """numpy's array type if numpy is loaded: a value can only be an array if it is."""
    numpy = sys.modules.get("numpy")
    return numpy.ndarray if numpy is not None else None


def _fast_encoder(columns: list[Column[Any]]) -> Callable[[Any], bytes | None] | None:
    """A function from a row to its binary COPY tuple, or to ``None`` for a row it does not take;
    ``None`` itself when some column has no fixed width.

    This is the hot loop of a load. When every column has a fixed width (integers, booleans,
    vectors with dimensions), a row whose values have exactly the expected types (a vector as a
    list or tuple) is packed by a few ``struct`` calls: one for the fields before each vector and
    its header, one for the vector's values straight from its list. Every other row, including
    every bad one, goes through the field encoders, which say what is wrong with it.
    """
    layouts = [_fixed_layout(column) for column in columns]
    fixed = [layout for layout in layouts if layout is not None]
    if len(fixed) != len(layouts):
        return None
    width = len(fixed)
    # Every combination of the types each column takes, checked by one lookup per row.
    accepted = frozenset(itertools.product(*(layout.types for layout in fixed)))
    segments = _segments(fixed)

    def encode(row: Any) -> bytes | None:
        if type(row) not in ROW_TYPES or len(row) != width:
            return None
        if tuple(map(type, row)) not in accepted:
            return None
        parts: list[bytes] = []
        arguments: list[Any] = [width]
        try:
            for head, fields, vector in segments:
                for position, prefix in fields:
                    arguments += prefix
                    arguments.append(row[position])
                if vector is None:
                    parts.append(head.pack(*arguments))
                    continue
                position, prefix, values, length = vector
                value = row[position]
                # A vector one value short beside one a value long would fill one struct.
                if len(value) != length:
                    return None
                arguments += prefix
                parts.append(head.pack(*arguments))
                parts.append(values.pack(*value))
                arguments = []
        except (struct.error, OverflowError):
            return None
        return b"".join(parts)

    return encode


class _Segment(NamedTuple):
    """Fixed-width fields up to and including one vector (or the row's end)."""

    head: struct.Struct  # the scalar fields and the vector's header
    fields: list[tuple[int, tuple[int, ...]]]  # position, prefix
    vector: tuple[int, tuple[int, ...], struct.Struct, int] | None  # position, header, values


def _segments(fixed: list[_Fixed]) -> list[_Segment]:
    """The row's fields cut after each vector; the first segment starts with the field count."""
    segments: list[_Segment] = []
    head = ">h"
    fields: list[tuple[int, tuple[int, ...]]] = []
    for position, layout in enumerate(fixed):
        if layout.length is None:
            head += layout.format
            fields.append((position, layout.prefix))
            continue
        header, _, values = layout.format.partition("HH")
        vector = (position, layout.prefix, struct.Struct(">" + values), layout.length)
        segments.append(_Segment(struct.Struct(head + header + "HH"), fields, vector))
        head, fields = ">", []
    if fields or not segments:
        segments.append(_Segment(struct.Struct(head), fields, None))
    return segments


def _field_by_field(
    columns: list[Column[Any]], encoding: str, hnsw_sparse: Mapping[str, str]
) -> Encoder:
    encoders = [_field_encoder(c, encoding, hnsw_sparse.get(c.name)) for c in columns]
    width = len(encoders)
    count = FIELD_COUNT.pack(width)

    def encode(row: Sequence[Any]) -> bytes:
        if not isinstance(row, ROW_TYPES) or len(row) != width:
            raise ValueError(f"expected {width} values ({', '.join(c.name for c in columns)})")
        return count + b"".join(
            [encoder(value) for encoder, value in zip(encoders, row, strict=True)]
        )

    return encode


class _Fixed(NamedTuple):
    """How a non-null value of a fixed-width column is packed as part of a whole row."""

    format: str  # struct codes of the field, its length first
    prefix: tuple[int, ...]  # the field's length and, for a vector, its header
    types: tuple[type, ...]  # the exact types packed this way
    length: int | None  # how many values a vector has; None for a single value


def _fixed_layout(column: Column[Any]) -> _Fixed | None:
    type_ = column.type
    if isinstance(type_, VECTOR | HALFVEC) and type_.dim is not None:
        format_, prefix = _dense_field(type_, type_.dim)
        return _Fixed(format_, prefix, ROW_TYPES, type_.dim)
    if isinstance(type_, Boolean):
        return _Fixed("i?", (1,), (bool,), None)
    if isinstance(type_, Integer):
        size, code, _ = integer_layout(type_)
        return _Fixed(f"i{code}", (size,), (int,), None)
    return None


def _field_encoder(column: Column[Any], encoding: str, hnsw_index: str | None) -> Encoder:
    """A function from a value of ``column`` to its binary COPY field: length, then data.

    ``hnsw_index`` names the HNSW index a sparse vector must fit, for a first load: its build
    would refuse the vector without naming the row.
    """
    encode = _value_encoder(column.name, column.type, encoding, hnsw_index)
    name = column.name
    nullable = column.nullable

    def field(value: Any) -> bytes:
        if value is None:
            if not nullable:
                raise ValueError(f"{name} must not be null")
            return NULL
        try:
            return encode(value)
        except (ValueError, TypeError) as error:
            raise type(error)(f"{name}: {error}") from None

    return field


def _value_encoder(
    name: str, type_: TypeEngine[Any], encoding: str, hnsw_index: str | None
) -> Encoder:
    if not isinstance(type_, TypeDecorator):
        return _type_encoder(name, type_, encoding, hnsw_index)
    # The column's own type stores what process_bind_param makes of a value, as the ORM would
    # send it: a lower-cased text, an encrypted one, a normalized vector.
    inner = _value_encoder(name, type_.impl_instance, encoding, hnsw_index)
    bind = type_.process_bind_param

    def encode(value: Any) -> bytes:
        bound = bind(value, DIALECT)
        if bound is None:
            raise ValueError(f"{type(type_).__name__} made None of {value!r}")
        return inner(bound)

    return encode


def _type_encoder(
    name: str, type_: TypeEngine[Any], encoding: str, hnsw_index: str | None
) -> Encoder:
    if isinstance(type_, VECTOR | HALFVEC):
        return _dense_encoder(type_)
    if isinstance(type_, SPARSEVEC):
        return _sparse_encoder(type_.dim, hnsw_index)
    if isinstance(type_, Boolean):
        return _boolean
    if isinstance(type_, Integer):
        return _integer_encoder(type_)
    if isinstance(type_, String):
        return _text_encoder(type_.length, encoding)
    if isinstance(type_, Uuid):
        return _uuid
    raise UnloadableError(
        f"column {name} has type {type_.compile(dialect=DIALECT)}, which "
        "the binary loader does not encode; supported: integers, booleans, strings, UUID, "
        "VECTOR, HALFVEC, SPARSEVEC (pass columns= to leave it to its default)"
    )


UUID_FIELD = LENGTH.pack(16)


def _uuid(value: Any) -> bytes:
    # uuid_recv takes the 16 bytes in order; a string is read as the server would read its text.
    if isinstance(value, str):
        try:
            value = uuid.UUID(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a UUID") from None
    if not isinstance(value, uuid.UUID):
        raise TypeError(f"expected a UUID, got {value!r}")
    return UUID_FIELD + value.bytes


def _boolean(value: Any) -> bytes:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return TRUE if value else FALSE


def integer_layout(type_: Integer) -> tuple[int, str, str]:
    """Size in bytes, struct code and PostgreSQL name of an integer type."""
    # BigInteger and SmallInteger are subclasses of Integer.
    if isinstance(type_, BigInteger):
        return 8, "q", "bigint"
    if isinstance(type_, SmallInteger):
        return 2, "h", "smallint"
    return 4, "i", "integer"


def _integer_encoder(type_: Integer) -> Encoder:
    size, code, type_name = integer_layout(type_)
    packer = struct.Struct(f">i{code}")

    def encode(value: Any) -> bytes:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an integer, got {value!r}")
        try:
            return packer.pack(size, value)
        except struct.error:
            raise ValueError(f"{value} is out of range for {type_name}") from None

    return encode


def _text_encoder(length: int | None, encoding: str) -> Encoder:
    def encode(value: Any) -> bytes:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        if length is not None and len(value) > length:
            raise ValueError(f"{len(value)} characters, more than the column's {length}")
        if "\x00" in value:
            raise ValueError("contains a NUL character, which PostgreSQL text cannot store")
        data = value.encode(encoding)
        return LENGTH.pack(len(data)) + data

    return encode


def _dense_field(type_: VECTOR | HALFVEC, count: int) -> tuple[str, tuple[int, int, int]]:
    """Struct codes and leading values of a vector or halfvec field of ``count`` values, in
    pgvector's ``vector_recv`` and ``halfvec_recv`` layout: the field's length, int16 dimensions,
    int16 unused, then the values as big-endian float4 or float2."""
    code, size = ("f", 4) if isinstance(type_, VECTOR) else ("e", 2)
    return f"iHH{count}{code}", (4 + size * count, count, 0)


def _dense_encoder(type_: VECTOR | HALFVEC) -> Encoder:
    """A vector or halfvec field (see :func:`_dense_field`). Takes a list or tuple of numbers,
    or a pgvector ``Vector`` or ``HalfVector``."""
    dim = type_.dim
    kind, range_ = (
        (Vector, "vector (float4)")
        if isinstance(type_, VECTOR)
        else (HalfVector, "halfvec (±65504)")
    )

    def packer(count: int) -> tuple[struct.Struct, tuple[int, ...]]:
        format_, prefix = _dense_field(type_, count)
        return struct.Struct(">" + format_), prefix

    fixed = packer(dim) if dim is not None else None

    def encode(value: Any) -> bytes:
        ndarray = ndarray_type()
        if ndarray is not None and isinstance(value, ndarray):
            from pgvector_base.arrays import vector_bytes

            array = cast("npt.NDArray[Any]", value)
            count = len(array) if array.ndim == 1 else 0
            if dim is not None and array.ndim == 1 and count != dim:
                raise ValueError(f"expected {dim} dimensions, got {count}")
            data = vector_bytes(array, type_, range_)
            field, prefix = fixed or packer(count)
            return struct.pack(">iHH", *prefix) + data
        values = value.to_list() if isinstance(value, kind) else value
        if not isinstance(values, ROW_TYPES):
            raise TypeError(f"expected a list of numbers, got {type(values).__name__}")
        count = len(values)
        if dim is not None and count != dim:
            raise ValueError(f"expected {dim} dimensions, got {count}")
        field, prefix = fixed or packer(count)
        try:
            return field.pack(*prefix, *values)
        except OverflowError:
            raise ValueError(f"a value is outside the range of {range_}") from None
        except struct.error:
            raise TypeError("expected a list of numbers") from None

    return encode


def _sparse_encoder(dim: int | None, hnsw_index: str | None) -> Encoder:
    """pgvector's ``sparsevec_recv`` layout, from ``SparseVector.to_binary``. Takes a
    ``SparseVector`` or a dict of 0-based index to value; at most 1,000 non-zero elements when
    ``hnsw_index`` names the HNSW index to be built on it."""

    def encode(value: Any) -> bytes:
        if isinstance(value, dict):
            if dim is None:
                raise TypeError("a dict needs a SPARSEVEC column with dimensions")
            value = SparseVector(value, dim)
        if not isinstance(value, SparseVector):
            raise TypeError(f"expected a SparseVector or a dict, got {type(value).__name__}")
        if dim is not None and value.dimensions() != dim:
            raise ValueError(f"expected {dim} dimensions, got {value.dimensions()}")
        if any(not 0 <= index < value.dimensions() for index in value.indices()):
            raise ValueError(f"an index is outside 0..{value.dimensions() - 1}")
        nonzero = len(value.indices())
        if hnsw_index is not None and nonzero > HNSW_MAX_NONZERO:
            raise ValueError(
                f"{nonzero} non-zero elements; its HNSW index {hnsw_index} takes at most "
                f"{HNSW_MAX_NONZERO}"
            )
        try:
            data = value.to_binary()
        except OverflowError:
            raise ValueError("a value is outside the float4 range of sparsevec") from None
        except struct.error:
            raise TypeError("expected numbers as values") from None
        return LENGTH.pack(len(data)) + data

    return encode
