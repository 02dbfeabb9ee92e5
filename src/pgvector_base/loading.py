"""Bulk loading with binary COPY, in the order pgvector recommends for a first load.

Rows are encoded in Python into PostgreSQL's binary COPY format (vectors in pgvector's own binary
layout) while the server stores the rows before them: psycopg2's ``copy_expert`` reads the encoded
stream as it sends it. Every row is checked before it is sent (number of values, types, vector
dimensions, ranges); pgvector's receive functions refuse NaN and infinity on the server. Either way
a bad row stops the load with a :class:`LoadError` naming its line and column.

Everything happens in the caller's transaction, so a failed load leaves the table as it was once
that transaction rolls back: commit once, after :func:`load` returns. What can be checked before a
first load drops the table's indexes is checked first (column types, ``columns=``, the table's
columns in the database); a failure after that leaves the transaction failed, so that even a
caller who commits gets the indexes back and none of the rows.

References: PostgreSQL "COPY", section "Binary Format"; pgvector README, "Loading" (COPY in binary
format, indexes after the initial data) and "Index Build Time" (``maintenance_work_mem``,
``max_parallel_maintenance_workers``); psycopg2 ``cursor.copy_expert``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import re
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import psycopg
import psycopg.sql
import psycopg2
from pgvector import HalfVector, SparseVector, Vector
from pgvector.sqlalchemy import HALFVEC, SPARSEVEC, VECTOR
from psycopg2.extensions import encodings, quote_ident
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Integer,
    SmallInteger,
    String,
    Table,
    exists,
    not_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, StatementError

from pgvector_base.database import sqlstate
from pgvector_base.session import set_local

if TYPE_CHECKING:
    import numpy.typing as npt

logger = logging.getLogger(__name__)

# Each COPY ends by waiting for the server to store what it has been sent, which stalls the
# client: batches are large, and only bound one statement and pace the progress reports.
DEFAULT_BATCH_SIZE = 100_000
# psycopg2 asks the stream for this many bytes at a time.
READ_SIZE = 1 << 16
# Rows numpy encodes at once: enough that its per-call costs vanish, few enough (6 MB at 384
# dimensions) that the next slice is encoded while the server stores this one.
COLUMN_SLICE = 4096
# Room for the rows encoded while the server pauses to write (see _enlarge_send_buffer).
SEND_BUFFER = 1 << 22

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
# Rows, column batches (a mapping of column name to values), or an iterable of either.
Rows = Iterable[Sequence[Any] | Mapping[str, Any]] | Mapping[str, Any]
DriverConnection = psycopg2.extensions.connection | psycopg.Connection[Any]
# pgvector's "invalid value for parameter": a build setting the server refuses.
INVALID_PARAMETER_VALUE = "22023"
# To name column types in messages.
DIALECT: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
# pgvector's HNSW index takes sparse vectors of at most this many non-zero elements.
HNSW_MAX_NONZERO = 1000
# How often the server checks, while it runs a statement, that the client is still there: a client
# killed during a first load's index build would otherwise leave the server building for minutes,
# holding the table's ACCESS EXCLUSIVE lock. As migrations do (migration/timeouts.py), but for the
# transaction only: it must not stay on a pooled connection. The subtransaction swallows the
# refusal of servers without the setting (before 14) or unable to check (some platforms).
WATCH_CLIENT = """
DO $$ BEGIN
    PERFORM set_config('client_connection_check_interval', '5s', true);
EXCEPTION WHEN undefined_object OR invalid_parameter_value THEN NULL;
END $$
"""
# Makes the caller's transaction fail (see _abort).
ABORT = "DO $$BEGIN RAISE EXCEPTION 'the load failed; its transaction can only roll back'; END$$"


class SettingError(ValueError):
    """A :class:`BuildSettings` value the server refuses; ``name`` is the setting's."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name


class UnloadableError(ValueError):
    """A table, ``columns=`` or column type :func:`load` cannot load into, found before anything
    is dropped or sent."""


class LoadError(Exception):
    """A row that cannot be loaded; ``line`` is its 1-based position in the input."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class BuildSettings:
    """Session settings for building vector indexes after a first load.

    HNSW builds are several times faster while the graph fits in ``maintenance_work_mem``:
    roughly rows * (4 * dimensions + 700) bytes for ``m = 16``, so 1GB holds about 450,000 rows
    of 384 dimensions or 150,000 of 1536. pgvector logs a notice when it does not fit, which
    :func:`load` returns. A parallel build allocates all of it as shared memory, so a server in
    Docker needs a ``shm_size`` at least this large. ``None`` keeps the server's value.
    """

    maintenance_work_mem: str | None = "1GB"
    max_parallel_maintenance_workers: int | None = None

    def parameters(self) -> dict[str, str]:
        """The settings as ``set_config`` names and values."""
        settings = {
            "maintenance_work_mem": self.maintenance_work_mem,
            "max_parallel_maintenance_workers": self.max_parallel_maintenance_workers,
        }
        return {name: str(value) for name, value in settings.items() if value is not None}


@dataclass(frozen=True)
class LoadResult:
    """What :func:`load` did and how long each step took, in seconds."""

    rows: int
    copy_seconds: float
    index_seconds: float
    analyze_seconds: float
    rebuilt_indexes: tuple[str, ...]
    notices: tuple[str, ...]

    @property
    def rows_per_second(self) -> float:
        """Rows copied per second of COPY."""
        return self.rows / self.copy_seconds if self.copy_seconds else 0.0


def load(
    connection: Connection,
    table: Table,
    rows: Rows,
    *,
    columns: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    build: BuildSettings | None = None,
    progress: Callable[[int], object] | None = None,
) -> LoadResult:
    """Load ``rows`` into ``table`` in the recommended order, in the connection's transaction.

    Into an empty table (a first load), the table's HNSW and IVFFlat indexes are dropped, the rows
    copied, the indexes rebuilt exactly as the database defined them, with ``build`` settings, and
    the table analyzed. Into a table that has rows, the rows are copied with the indexes in place
    and the table analyzed. Dropping an index locks the table until the transaction ends. A
    ``build`` value the server refuses raises :class:`SettingError`, and a column type, a
    ``columns=`` or a table the loader cannot load raises :class:`UnloadableError`, before
    anything is dropped or sent. A failure after that leaves the transaction failed, so that it
    can only roll back: no rows of a half-done load are committed, and dropped indexes come back.
    """
    build = build or BuildSettings()
    _apply(connection, build)
    connection.execute(text(WATCH_CLIENT))
    dbapi_connection = _driver_connection(connection)
    names = _column_names(table, columns)
    _check_table(connection, table, names)
    empty = connection.scalar(select(not_(exists().select_from(table))))
    hnsw_sparse = _hnsw_sparse_columns(connection, table) if empty else {}
    encoder = _TableEncoder(
        [table.c[name] for name in names], _encoding(dbapi_connection), hnsw_sparse
    )
    indexes = _drop_vector_indexes(connection, table) if empty else {}
    try:
        started = time.perf_counter()
        count = _send(connection, table, encoder, rows, batch_size=batch_size, progress=progress)
        copied = time.perf_counter()
        notices = _build_indexes(connection, indexes)
        built = time.perf_counter()
        _execute(connection, f"ANALYZE {_table_name(connection, table)}")
        analyzed = time.perf_counter()
    except BaseException:
        _abort(connection)
        raise
    return LoadResult(
        rows=count,
        copy_seconds=copied - started,
        index_seconds=built - copied,
        analyze_seconds=analyzed - built,
        rebuilt_indexes=tuple(indexes),
        notices=notices,
    )


def copy_rows(
    connection: Connection,
    table: Table,
    rows: Rows,
    *,
    columns: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Send ``rows`` to ``table`` by binary COPY, one COPY per ``batch_size`` rows; return how many.

    Each row holds one value per name in ``columns`` (default: every column of the table), in that
    order; a vector may be a list, a tuple, a pgvector ``Vector`` or a 1-D numpy array. Rows can
    also come as column batches: a mapping of each name to its values (a 2-D numpy array for a
    vector column, one row per embedding), alone or among the rows. ``progress`` is called with
    the number of rows of each COPY once it is stored. Runs in the connection's current
    transaction and leaves committing to the caller.
    """
    names = _column_names(table, columns)
    dbapi_connection = _driver_connection(connection)
    encoder = _TableEncoder([table.c[name] for name in names], _encoding(dbapi_connection))
    return _send(connection, table, encoder, rows, batch_size=batch_size, progress=progress)


def _send(
    connection: Connection,
    table: Table,
    encoder: _TableEncoder,
    rows: Rows,
    *,
    batch_size: int,
    progress: Callable[[int], object] | None,
) -> int:
    """:func:`copy_rows` once its encoder is made."""
    dbapi_connection = _driver_connection(connection)
    quoted = ", ".join(_quoted(connection, column.name) for column in encoder.columns)
    sql = f"COPY {_table_name(connection, table)} ({quoted}) FROM STDIN (FORMAT BINARY)"
    _enlarge_send_buffer(dbapi_connection)
    source = _Source([rows] if isinstance(rows, Mapping) else rows, encoder)
    sent = 0
    # Asking for more first means no COPY is started for nothing.
    while source.more():
        pieces = itertools.chain((HEADER,), source.pieces(batch_size), (TRAILER,))
        try:
            _copy(dbapi_connection, sql, pieces)
        except LoadError:
            raise
        except Exception as error:
            if not _is_driver_error(error):
                raise
            located = _located(error, sent)
            if located is None:
                raise _as_sqlalchemy_error(error, sql) from error
            raise located from error
        count = source.line - sent
        sent = source.line
        if progress is not None:
            progress(count)
    return sent


def _copy(dbapi_connection: DriverConnection, sql: str, pieces: Iterator[bytes]) -> None:
    """Run ``sql``, a ``COPY ... FROM STDIN``, sending ``pieces``: with psycopg2 or psycopg 3."""
    if isinstance(dbapi_connection, psycopg2.extensions.connection):
        stream = _CopyStream(pieces)
        with dbapi_connection.cursor() as cursor:
            try:
                cursor.copy_expert(sql, stream, READ_SIZE)
            except psycopg2.Error:
                if stream.error is not None:
                    raise stream.error from None
                raise
        return
    with dbapi_connection.cursor() as copying, copying.copy(sql) as copy:
        for piece in pieces:
            copy.write(piece)


def _enlarge_send_buffer(dbapi_connection: DriverConnection) -> None:
    """Let the client run a few MiB ahead of the server during COPY.

    Every few thousand rows the server stops reading for milliseconds while it writes out rows
    and WAL. With the usual socket buffer of about 200 KiB the client then blocks, and encoding
    and storing take turns instead of overlapping: measured on a local socket, 100,000 rows of
    384 dimensions took 1.7 s with it and 1.2 s with 4 MiB. The kernel caps the size at
    ``net.core.wmem_max``; the buffer only holds memory while it holds data.
    """
    connection_socket = socket.socket(fileno=dbapi_connection.fileno())
    try:
        connection_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    finally:
        # The socket belongs to the driver: stop this object from closing it.
        connection_socket.detach()


class _CopyStream(io.RawIOBase):
    """The file psycopg2's ``copy_expert`` reads, made of encoded pieces as it reads them.

    ``error`` keeps what stopped the reading, which psycopg2 reports only as "error in .read()".
    """

    def __init__(self, pieces: Iterator[bytes]) -> None:
        super().__init__()
        self._pieces = pieces
        self._pending = memoryview(b"")
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if not self._pending:
            try:
                self._pending = memoryview(next(self._pieces, b""))
            except BaseException as error:
                self.error = error
                raise
        # A piece of numpy-encoded rows is megabytes: hand it out a read at a time, each byte
        # copied once (slicing the rest off as bytes would copy it again at every read).
        end = len(self._pending) if size is None or size < 0 else size
        data = bytes(self._pending[:end])
        self._pending = self._pending[end:]
        return data


class _TableEncoder:
    """Encodes rows and column batches for one COPY's columns."""

    def __init__(
        self,
        columns: list[Column[Any]],
        encoding: str,
        hnsw_sparse: Mapping[str, str] | None = None,
    ) -> None:
        self.columns = columns
        self._encode_row = _row_encoder(columns, encoding, hnsw_sparse or {})
        fixed = all(_fixed_layout(column) is not None for column in columns)
        vectors = [i for i, c in enumerate(columns) if isinstance(c.type, VECTOR | HALFVEC)]
        # Only rows whose every column has a fixed width can be encoded as one structured array.
        self._gathered = vectors if fixed else []
        self._layout: Any = None

    def row(self, row: Sequence[Any], line: int) -> bytes:
        """One row, or a :class:`LoadError` naming ``line``."""
        try:
            return self._encode_row(row)
        except (ValueError, TypeError) as error:
            raise LoadError(line, str(error)) from None

    def gathers(self, row: object) -> bool:
        """Whether ``row`` is encoded with its neighbours as columns: its vectors are arrays."""
        ndarray = _ndarray_type()
        return (
            ndarray is not None
            and bool(self._gathered)
            and type(row) in ROW_TYPES
            and len(row) == len(self.columns)  # type: ignore[arg-type]
            and all(type(row[i]) is ndarray for i in self._gathered)  # type: ignore[index]
        )

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

    def columns_of(self, values: Sequence[Any], first_line: int) -> bytes:
        """Rows given as one sequence per column, encoded by numpy when every value fits;
        otherwise row by row, which names the first bad row.

        numpy is used only if the caller has loaded it: a batch of plain lists needs no numpy.
        """
        ndarray = _ndarray_type()
        if self._gathered and ndarray is not None:
            if self._layout is None:
                from pgvector_base.arrays import Layout

                self._layout = Layout(self.columns)
            encoded: bytes | None = self._layout.encode(values)
            if encoded is not None:
                return encoded
        # Python values, so that a message shows 6 where numpy would show np.int64(6).
        plain = [
            v.tolist() if ndarray is not None and isinstance(v, ndarray) and v.ndim == 1 else v
            for v in values
        ]
        rows = zip(*plain, strict=True)
        return b"".join([self.row(row, line) for line, row in enumerate(rows, first_line)])


class _Source:
    """The rows to copy, encoded into pieces of up to one COPY's worth.

    Rows are encoded one by one, except consecutive rows whose vectors are numpy arrays, which
    are gathered into columns; columns are encoded ``COLUMN_SLICE`` rows at a time.
    """

    def __init__(self, items: Iterable[Any], encoder: _TableEncoder) -> None:
        self._items = iter(items)
        self._ahead: deque[Any] = deque()
        self._encoder = encoder
        self._columns: list[Any] = []  # a column batch being sent, from self._offset
        self._offset = 0
        self._length = 0
        self.line = 0  # rows encoded so far

    def more(self) -> bool:
        """Whether any row is left to send."""
        if self._offset < self._length or self._ahead:
            return True
        for item in self._items:
            self._ahead.append(item)
            return True
        return False

    def pieces(self, limit: int) -> Iterator[bytes]:
        """The next ``limit`` rows (or fewer, at the end), encoded; joined in pieces of at least
        one read, so that a read is not a Python call per row."""
        end = self.line + limit
        chunk: list[bytes] = []
        size = 0
        while self.line < end and self.more():
            if self._offset < self._length:
                if chunk:
                    yield b"".join(chunk)
                    chunk, size = [], 0
                yield self._next_columns(end)
                continue
            item = self._ahead.popleft()
            if isinstance(item, Mapping):
                self._start_columns(self._encoder.batch(item, self.line + 1))
            elif self._encoder.gathers(item):
                self._start_columns(list(zip(*self._gather(item, end), strict=True)))
            else:
                self.line += 1
                encoded = self._encoder.row(item, self.line)
                chunk.append(encoded)
                size += len(encoded)
                if size >= READ_SIZE:
                    yield b"".join(chunk)
                    chunk, size = [], 0
        if chunk:
            yield b"".join(chunk)

    def _gather(self, first: Sequence[Any], end: int) -> list[Sequence[Any]]:
        """``first`` and the rows after it like it, up to one slice and the COPY's ``end``."""
        rows = [first]
        wanted = min(COLUMN_SLICE, end - self.line)
        while len(rows) < wanted and self.more():
            if not self._encoder.gathers(self._ahead[0]):
                break
            rows.append(self._ahead.popleft())
        return rows

    def _start_columns(self, values: list[Any]) -> None:
        self._columns = values
        self._offset = 0
        self._length = len(values[0]) if values else 0

    def _next_columns(self, end: int) -> bytes:
        stop = min(self._length, self._offset + COLUMN_SLICE, self._offset + end - self.line)
        part = [values[self._offset : stop] for values in self._columns]
        encoded = self._encoder.columns_of(part, self.line + 1)
        self.line += stop - self._offset
        self._offset = stop
        return encoded


def _ndarray_type() -> Any:
    """numpy's array type if numpy is loaded: a value can only be an array if it is."""
    numpy = sys.modules.get("numpy")
    return numpy.ndarray if numpy is not None else None


def _row_encoder(
    columns: list[Column[Any]], encoding: str, hnsw_sparse: Mapping[str, str]
) -> Encoder:
    """A function from a row to its binary COPY tuple.

    This is the hot loop of a load. When every column has a fixed width (integers, booleans,
    vectors with dimensions), a row whose values have exactly the expected types (a vector as a
    list or tuple) is packed by a few ``struct`` calls: one for the fields before each vector and
    its header, one for the vector's values straight from its list. Every other row, including
    every bad one, goes through the field encoders, which say what is wrong with it.
    """
    general = _field_by_field(columns, encoding, hnsw_sparse)
    layouts = [_fixed_layout(column) for column in columns]
    fixed = [layout for layout in layouts if layout is not None]
    if len(fixed) != len(layouts):
        return general
    width = len(fixed)
    segments = _segments(fixed)

    def encode(row: Sequence[Any]) -> bytes:
        if type(row) not in ROW_TYPES or len(row) != width:
            return general(row)
        parts: list[bytes] = []
        arguments: list[Any] = [width]
        try:
            for head, fields, vector in segments:
                for position, prefix, types in fields:
                    value = row[position]
                    if type(value) not in types:
                        return general(row)
                    arguments += prefix
                    arguments.append(value)
                if vector is None:
                    parts.append(head.pack(*arguments))
                    continue
                position, prefix, values, length = vector
                value = row[position]
                # A vector one value short beside one a value long would fill one struct.
                if type(value) not in ROW_TYPES or len(value) != length:
                    return general(row)
                arguments += prefix
                parts.append(head.pack(*arguments))
                parts.append(values.pack(*value))
                arguments = []
        except (struct.error, OverflowError):
            return general(row)
        return b"".join(parts)

    return encode


class _Segment(NamedTuple):
    """Fixed-width fields up to and including one vector (or the row's end)."""

    head: struct.Struct  # the scalar fields and the vector's header
    fields: list[tuple[int, tuple[int, ...], tuple[type, ...]]]  # position, prefix, types
    vector: tuple[int, tuple[int, ...], struct.Struct, int] | None  # position, header, values


def _segments(fixed: list[_Fixed]) -> list[_Segment]:
    """The row's fields cut after each vector; the first segment starts with the field count."""
    segments: list[_Segment] = []
    head = ">h"
    fields: list[tuple[int, tuple[int, ...], tuple[type, ...]]] = []
    for position, layout in enumerate(fixed):
        if layout.length is None:
            head += layout.format
            fields.append((position, layout.prefix, layout.types))
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
        size, code, _ = _integer_layout(type_)
        return _Fixed(f"i{code}", (size,), (int,), None)
    return None


def _field_encoder(column: Column[Any], encoding: str, hnsw_index: str | None) -> Encoder:
    """A function from a value of ``column`` to its binary COPY field: length, then data.

    ``hnsw_index`` names the HNSW index a sparse vector must fit, for a first load: its build
    would refuse the vector without naming the row.
    """
    encode = _value_encoder(column, encoding, hnsw_index)
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


def _value_encoder(column: Column[Any], encoding: str, hnsw_index: str | None) -> Encoder:
    type_ = column.type
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
    raise UnloadableError(
        f"column {column.name} has type {type_.compile(dialect=DIALECT)}, which "
        "the binary loader does not encode; supported: integers, booleans, strings, VECTOR, "
        "HALFVEC, SPARSEVEC (pass columns= to leave it to its default)"
    )


def _boolean(value: Any) -> bytes:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return TRUE if value else FALSE


def _integer_layout(type_: Integer) -> tuple[int, str, str]:
    """Size in bytes, struct code and PostgreSQL name of an integer type."""
    # BigInteger and SmallInteger are subclasses of Integer.
    if isinstance(type_, BigInteger):
        return 8, "q", "bigint"
    if isinstance(type_, SmallInteger):
        return 2, "h", "smallint"
    return 4, "i", "integer"


def _integer_encoder(type_: Integer) -> Encoder:
    size, code, type_name = _integer_layout(type_)
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
        ndarray = _ndarray_type()
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


def _table_name(connection: Connection, table: Table) -> str:
    """``table``'s name, schema-qualified if it has a schema, quoted for the driver's own SQL."""
    return _quoted(connection, *filter(None, (table.schema, table.name)))


def _quoted(connection: Connection, *parts: str) -> str:
    """A dotted identifier quoted by the driver, for SQL that the driver sends as it is.

    SQLAlchemy's psycopg2 dialect doubles a ``%`` in the identifiers it quotes, for the driver's
    parameter formatting; COPY and statements without parameters get no formatting.
    """
    dbapi_connection = _driver_connection(connection)
    if isinstance(dbapi_connection, psycopg2.extensions.connection):
        return ".".join(quote_ident(part, dbapi_connection) for part in parts)
    return psycopg.sql.Identifier(*parts).as_string(dbapi_connection)


def _execute(connection: Connection, sql: str) -> None:
    """Run ``sql`` through the driver's own cursor, with no parameters: given an empty set of
    them, as SQLAlchemy does, psycopg2 would take a ``%`` in a quoted name for one."""
    with _driver_connection(connection).cursor() as cursor:
        try:
            cursor.execute(sql)
        except (psycopg2.Error, psycopg.Error) as error:
            raise _as_sqlalchemy_error(error, sql) from error


def _column_names(table: Table, columns: Sequence[str] | None) -> list[str]:
    """``columns``, or every column of ``table``, once each is known to be one of its columns."""
    if columns is None:
        return [column.name for column in table.columns]
    names = [columns] if isinstance(columns, str) else list(columns)
    unknown = [name for name in names if name not in table.c]
    repeated = sorted({name for name in names if names.count(name) > 1})
    problem = (
        f"names {', '.join(map(str, unknown))}, not a column of {table.name}"
        if unknown
        else f"names {', '.join(repeated)} more than once"
        if repeated
        else "is empty"
        if not names
        else "must be a list of column names, not a string"
        if isinstance(columns, str)
        else None
    )
    if problem is not None:
        raise UnloadableError(
            f"columns= {problem}; {table.name} has {', '.join(c.name for c in table.columns)}"
        )
    return names


def _check_table(connection: Connection, table: Table, names: list[str]) -> None:
    """Check that the database's ``table`` has the columns to load, with the model's vector,
    integer and boolean types: COPY would otherwise fail after the indexes are dropped, or
    report the difference as a bad first row."""
    found: dict[str, str] = dict(
        connection.execute(
            text(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = CAST(:table AS regclass) AND attnum > 0 AND NOT attisdropped"
            ),
            {"table": _table_name(connection, table)},
        ).all()
    )
    advice = f"run the migrations (alembic upgrade head) or fix the model of {table.name}"
    missing = [name for name in names if name not in found]
    if missing:
        raise UnloadableError(
            f"{table.name} has no column {', '.join(missing)} in the database; {advice}"
        )
    for name in names:
        type_ = table.c[name].type
        expected = (
            type_.compile(dialect=DIALECT).lower()
            if isinstance(type_, VECTOR | HALFVEC | SPARSEVEC)
            else _integer_layout(type_)[2]
            if isinstance(type_, Integer)
            else "boolean"
            if isinstance(type_, Boolean)
            else None
        )
        # format_type qualifies a type outside the search path: public.vector(8).
        if expected is not None and found[name].rpartition(".")[2] != expected:
            raise UnloadableError(
                f"{table.name}.{name} is {found[name]} in the database and {expected} in the "
                f"model; {advice}"
            )


def _hnsw_sparse_columns(connection: Connection, table: Table) -> dict[str, str]:
    """The sparsevec columns of ``table`` that an HNSW index covers, and that index's name."""
    rows = connection.execute(
        text(
            "SELECT a.attname, min(c.relname) "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am m ON m.oid = c.relam "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE i.indrelid = CAST(:table AS regclass) AND m.amname = 'hnsw' "
            "AND t.typname = 'sparsevec' GROUP BY a.attname"
        ),
        {"table": _table_name(connection, table)},
    ).all()
    return {str(name): str(index) for name, index in rows}


def _abort(connection: Connection) -> None:
    """Make the caller's transaction fail, if the error has not already: a COMMIT then rolls it
    back, bringing back the indexes a first load dropped instead of committing their absence."""
    with contextlib.suppress(Exception):
        connection.exec_driver_sql(ABORT)


def _drop_vector_indexes(connection: Connection, table: Table) -> dict[str, str]:
    """Drop ``table``'s HNSW and IVFFlat indexes; return each one's name and definition."""
    found = connection.execute(
        text(
            "SELECT c.oid::regclass::text, pg_get_indexdef(c.oid) "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am a ON a.oid = c.relam "
            "WHERE i.indrelid = CAST(:table AS regclass) AND a.amname IN ('hnsw', 'ivfflat') "
            "ORDER BY 1"
        ),
        {"table": _table_name(connection, table)},
    ).all()
    for name, _ in found:
        _execute(connection, f"DROP INDEX {name}")
    return dict(found)


def _apply(connection: Connection, build: BuildSettings) -> None:
    """Set ``build`` for the rest of the transaction, so that a value the server refuses stops
    the load before any row is sent rather than after all of them."""
    for name, value in build.parameters().items():
        try:
            set_local(connection, {name: value})
        except DBAPIError as error:
            orig: Any = error.orig
            if sqlstate(orig) != INVALID_PARAMETER_VALUE:
                raise
            hint = f"; {orig.diag.message_hint}" if orig.diag.message_hint else ""
            raise SettingError(name, f"{orig.diag.message_primary}{hint}") from None


def _build_indexes(connection: Connection, indexes: dict[str, str]) -> tuple[str, ...]:
    """Create each index from its definition; return the server's notices, such as pgvector's
    "hnsw graph no longer fits into maintenance_work_mem"."""
    if not indexes:
        return ()
    dbapi_connection = _driver_connection(connection)
    # Through the driver's own cursor: SQLAlchemy would log the notices and discard them.
    notices: list[str] = []
    if isinstance(dbapi_connection, psycopg2.extensions.connection):
        # psycopg2 keeps the connection's last 50, and only the build's are wanted.
        dbapi_connection.notices.clear()
        notices = dbapi_connection.notices
    else:
        dbapi_connection.add_notice_handler(handler := _notice_collector(notices))
    try:
        with dbapi_connection.cursor() as cursor:
            for name, definition in indexes.items():
                logger.info("Building index %s", name)
                try:
                    cursor.execute(definition)
                except (psycopg2.Error, psycopg.Error) as error:
                    raise _as_sqlalchemy_error(error, definition) from error
    finally:
        if not isinstance(dbapi_connection, psycopg2.extensions.connection):
            dbapi_connection.remove_notice_handler(handler)
    return tuple(notice.strip() for notice in notices)


def _notice_collector(notices: list[str]) -> Callable[[psycopg.errors.Diagnostic], None]:
    """A psycopg 3 notice handler that keeps each notice as psycopg2 would: ``NOTICE:  ...``."""

    def collect(diagnostic: psycopg.errors.Diagnostic) -> None:
        notices.append(f"{diagnostic.severity}:  {diagnostic.message_primary}")

    return collect


def _is_driver_error(error: BaseException) -> bool:
    return isinstance(error, psycopg2.Error | psycopg.Error)


def _as_sqlalchemy_error(error: Exception, statement: str) -> StatementError:
    """An error of the driver's own cursor as SQLAlchemy raises it elsewhere (a ``DBAPIError``),
    so that callers handle every database error of a load in one way."""
    base = psycopg2.Error if isinstance(error, psycopg2.Error) else psycopg.Error
    return DBAPIError.instance(statement, None, error, base)


COPY_LINE = re.compile(r"COPY .*, line (\d+)(?:, column (.+?)(?::|$))?")


def _located(error: Any, sent: int) -> LoadError | None:
    """A server error about one row of a COPY (which follows ``sent`` rows) as a
    :class:`LoadError` for that row's line; ``None`` for an error about no row."""
    match = COPY_LINE.search(error.diag.context or "")
    if match is None or error.diag.message_primary is None:
        return None
    line, column = match.groups()
    where = f"{column}: " if column else ""
    detail = f": {error.diag.message_detail}" if error.diag.message_detail else ""
    return LoadError(sent + int(line), where + error.diag.message_primary + detail)


def _encoding(dbapi_connection: DriverConnection) -> str:
    """The Python codec of the connection's client encoding."""
    if isinstance(dbapi_connection, psycopg2.extensions.connection):
        return encodings[dbapi_connection.encoding]
    return str(dbapi_connection.info.encoding)


def _driver_connection(connection: Connection) -> DriverConnection:
    """The psycopg2 or psycopg 3 connection under ``connection``, for COPY."""
    dbapi_connection = connection.connection.dbapi_connection
    if not isinstance(dbapi_connection, psycopg2.extensions.connection | psycopg.Connection):
        raise TypeError(f"binary COPY needs psycopg2 or psycopg 3, not {dbapi_connection!r}")
    return dbapi_connection
