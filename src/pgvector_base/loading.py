"""Bulk loading with binary COPY, in the order pgvector recommends for a first load.

Rows are encoded in Python into PostgreSQL's binary COPY format (vectors in pgvector's own binary
layout) while the server stores the rows before them: psycopg2's ``copy_expert`` reads the encoded
stream as it sends it. Every row is checked before it is sent (number of values, types, vector
dimensions, ranges); pgvector's receive functions refuse NaN and infinity on the server. Either way
a bad row stops the load with a :class:`LoadError` naming its line and column.

Everything happens in the caller's transaction, so a failed load leaves the table as it was once
that transaction rolls back: commit once, after :func:`load` returns.

References: PostgreSQL "COPY", section "Binary Format"; pgvector README, "Loading" (COPY in binary
format, indexes after the initial data) and "Index Build Time" (``maintenance_work_mem``,
``max_parallel_maintenance_workers``); psycopg2 ``cursor.copy_expert``.
"""

from __future__ import annotations

import io
import itertools
import logging
import re
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg2
import psycopg2.errors
from pgvector import HalfVector, SparseVector, Vector
from pgvector.sqlalchemy import HALFVEC, SPARSEVEC, VECTOR
from psycopg2.extensions import encodings
from sqlalchemy import BigInteger, Boolean, Column, Integer, SmallInteger, String, Table, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, StatementError

from pgvector_base.session import set_local

logger = logging.getLogger(__name__)

# Each COPY ends by waiting for the server to store what it has been sent, which stalls the
# client: batches are large, and only bound one statement and pace the progress reports.
DEFAULT_BATCH_SIZE = 100_000
# psycopg2 asks the stream for this many bytes at a time.
READ_SIZE = 1 << 16
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


class SettingError(ValueError):
    """A :class:`BuildSettings` value the server refuses; ``name`` is the setting's."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name


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
    rows: Iterable[Sequence[Any]],
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
    ``build`` value the server refuses raises :class:`SettingError` before anything is dropped or
    sent.
    """
    build = build or BuildSettings()
    _apply(connection, build)
    name = _table_name(connection, table)
    empty = connection.scalar(text(f"SELECT NOT EXISTS (SELECT FROM {name})"))
    indexes = _drop_vector_indexes(connection, table) if empty else {}

    started = time.perf_counter()
    count = copy_rows(
        connection, table, rows, columns=columns, batch_size=batch_size, progress=progress
    )
    copied = time.perf_counter()
    notices = _build_indexes(connection, indexes)
    built = time.perf_counter()
    connection.execute(text(f"ANALYZE {name}"))
    analyzed = time.perf_counter()
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
    rows: Iterable[Sequence[Any]],
    *,
    columns: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Send ``rows`` to ``table`` by binary COPY, one COPY per ``batch_size`` rows; return how many.

    Each row holds one value per name in ``columns`` (default: every column of the table), in that
    order. ``progress`` is called with the number of rows of each batch once it is stored. Runs in
    the connection's current transaction and leaves committing to the caller.
    """
    names = list(columns) if columns is not None else [column.name for column in table.columns]
    dbapi_connection = _psycopg2(connection)
    encode_row = _row_encoder(
        [table.c[name] for name in names], encodings[dbapi_connection.encoding]
    )
    preparer = connection.dialect.identifier_preparer
    sql = (
        f"COPY {_table_name(connection, table)} ({', '.join(preparer.quote(n) for n in names)}) "
        "FROM STDIN (FORMAT BINARY)"
    )
    _enlarge_send_buffer(dbapi_connection)
    iterator = iter(rows)
    sent = 0
    with dbapi_connection.cursor() as cursor:
        # Taking the first row of each batch here means no COPY is started for an empty batch.
        for first in iterator:
            batch = itertools.chain((first,), itertools.islice(iterator, batch_size - 1))
            stream = _CopyStream(batch, encode_row, sent + 1)
            try:
                cursor.copy_expert(sql, stream, READ_SIZE)
            except psycopg2.Error as error:
                if stream.error is not None:
                    raise stream.error from None
                located = _located(error, sent)
                if located is None:
                    raise _as_sqlalchemy_error(error, sql) from error
                raise located from error
            sent += stream.rows
            if progress is not None:
                progress(stream.rows)
    return sent


def _enlarge_send_buffer(dbapi_connection: psycopg2.extensions.connection) -> None:
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
    """The file ``copy_expert`` reads: a header, the rows, a trailer, encoded as it reads them.

    Each read returns the rows encoded since the last, joined once and not copied again.
    ``error`` keeps what stopped the reading, which psycopg2 reports only as "error in .read()".
    """

    def __init__(self, rows: Iterable[Sequence[Any]], encode_row: Encoder, first_line: int) -> None:
        super().__init__()
        encoded = self._encode(rows, encode_row, first_line)
        self._chunks = itertools.chain((HEADER,), encoded, (TRAILER,))
        self._pending = b""
        self.rows = 0
        self.error: BaseException | None = None

    def _encode(
        self, rows: Iterable[Sequence[Any]], encode_row: Encoder, first_line: int
    ) -> Iterator[bytes]:
        """The encoded rows, joined in chunks of at most one read (or one longer row)."""
        chunk: list[bytes] = []
        size = 0
        for line, row in enumerate(rows, first_line):
            try:
                encoded = encode_row(row)
            except (ValueError, TypeError) as error:
                raise LoadError(line, str(error)) from None
            if size + len(encoded) > READ_SIZE and chunk:
                yield b"".join(chunk)
                chunk, size = [], 0
            chunk.append(encoded)
            size += len(encoded)
            self.rows += 1
        yield b"".join(chunk)

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            data = self._pending or next(self._chunks, b"")
        except BaseException as error:
            self.error = error
            raise
        if size is None or size < 0 or len(data) <= size:
            self._pending = b""
            return data
        self._pending = data[size:]
        return data[:size]


def _row_encoder(columns: list[Column[Any]], encoding: str) -> Encoder:
    """A function from a row to its binary COPY tuple.

    This is the hot loop of a load. When every column has a fixed width (integers, booleans,
    vectors with dimensions), a row whose values have exactly the expected types (a vector as a
    list or tuple) is packed by one ``struct`` call, which halves the cost of one call per field.
    Every other row, including every bad one, goes through the field encoders, which say what is
    wrong with it.
    """
    general = _field_by_field(columns, encoding)
    layouts = [_fixed_layout(column) for column in columns]
    fixed = [layout for layout in layouts if layout is not None]
    if len(fixed) != len(layouts):
        return general
    width = len(fixed)
    pack = struct.Struct(">h" + "".join(layout.format for layout in fixed)).pack

    def encode(row: Sequence[Any]) -> bytes:
        if type(row) not in ROW_TYPES or len(row) != width:
            return general(row)
        arguments: list[Any] = [width]
        for value, (_, prefix, types, length) in zip(row, fixed, strict=True):
            if type(value) not in types:
                return general(row)
            arguments += prefix
            if length is None:
                arguments.append(value)
            # A vector one value short beside one a value long would still fill the struct.
            elif len(value) == length:
                arguments += value
            else:
                return general(row)
        try:
            return pack(*arguments)
        except (struct.error, OverflowError):
            return general(row)

    return encode


def _field_by_field(columns: list[Column[Any]], encoding: str) -> Encoder:
    encoders = [_field_encoder(column, encoding) for column in columns]
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


def _field_encoder(column: Column[Any], encoding: str) -> Encoder:
    """A function from a value of ``column`` to its binary COPY field: length, then data."""
    encode = _value_encoder(column, encoding)
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


def _value_encoder(column: Column[Any], encoding: str) -> Encoder:
    type_ = column.type
    if isinstance(type_, VECTOR | HALFVEC):
        return _dense_encoder(type_)
    if isinstance(type_, SPARSEVEC):
        return _sparse_encoder(type_.dim)
    if isinstance(type_, Boolean):
        return _boolean
    if isinstance(type_, Integer):
        return _integer_encoder(type_)
    if isinstance(type_, String):
        return _text_encoder(type_.length, encoding)
    raise TypeError(
        f"column {column.name} has type {type_}, which the binary loader does not encode; "
        "supported: integers, booleans, strings, VECTOR, HALFVEC, SPARSEVEC"
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


def _sparse_encoder(dim: int | None) -> Encoder:
    """pgvector's ``sparsevec_recv`` layout, from ``SparseVector.to_binary``. Takes a
    ``SparseVector`` or a dict of 0-based index to value."""

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
        try:
            data = value.to_binary()
        except OverflowError:
            raise ValueError("a value is outside the float4 range of sparsevec") from None
        except struct.error:
            raise TypeError("expected numbers as values") from None
        return LENGTH.pack(len(data)) + data

    return encode


def _table_name(connection: Connection, table: Table) -> str:
    return connection.dialect.identifier_preparer.format_table(table)


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
        connection.exec_driver_sql(f"DROP INDEX {name}")
    return dict(found)


def _apply(connection: Connection, build: BuildSettings) -> None:
    """Set ``build`` for the rest of the transaction, so that a value the server refuses stops
    the load before any row is sent rather than after all of them."""
    for name, value in build.parameters().items():
        try:
            set_local(connection, {name: value})
        except DBAPIError as error:
            if not isinstance(error.orig, psycopg2.errors.InvalidParameterValue):
                raise
            hint = f"; {error.orig.diag.message_hint}" if error.orig.diag.message_hint else ""
            raise SettingError(name, f"{error.orig.diag.message_primary}{hint}") from None


def _build_indexes(connection: Connection, indexes: dict[str, str]) -> tuple[str, ...]:
    """Create each index from its definition; return the server's notices, such as pgvector's
    "hnsw graph no longer fits into maintenance_work_mem"."""
    if not indexes:
        return ()
    dbapi_connection = _psycopg2(connection)
    # Through the driver's own cursor: SQLAlchemy would log the notices and discard them. psycopg2
    # keeps the connection's last 50, and only the build's are wanted.
    dbapi_connection.notices.clear()
    with dbapi_connection.cursor() as cursor:
        for name, definition in indexes.items():
            logger.info("Building index %s", name)
            try:
                cursor.execute(definition)
            except psycopg2.Error as error:
                raise _as_sqlalchemy_error(error, definition) from error
    return tuple(notice.strip() for notice in dbapi_connection.notices)


def _as_sqlalchemy_error(error: psycopg2.Error, statement: str) -> StatementError:
    """An error of the driver's own cursor as SQLAlchemy raises it elsewhere (a ``DBAPIError``),
    so that callers handle every database error of a load in one way."""
    return DBAPIError.instance(statement, None, error, psycopg2.Error)


COPY_LINE = re.compile(r"COPY .*, line (\d+)(?:, column (.+?)(?::|$))?")


def _located(error: psycopg2.Error, sent: int) -> LoadError | None:
    """A server error about one row of a COPY (which follows ``sent`` rows) as a
    :class:`LoadError` for that row's line; ``None`` for an error about no row."""
    match = COPY_LINE.search(error.diag.context or "")
    if match is None or error.diag.message_primary is None:
        return None
    line, column = match.groups()
    where = f"{column}: " if column else ""
    detail = f": {error.diag.message_detail}" if error.diag.message_detail else ""
    return LoadError(sent + int(line), where + error.diag.message_primary + detail)


def _psycopg2(connection: Connection) -> psycopg2.extensions.connection:
    dbapi_connection = connection.connection.dbapi_connection
    if not isinstance(dbapi_connection, psycopg2.extensions.connection):
        raise TypeError(f"binary COPY needs a psycopg2 connection, not {dbapi_connection!r}")
    return dbapi_connection
