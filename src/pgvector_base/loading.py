"""Bulk loading with binary COPY, in the order pgvector recommends for a first load.

Rows are encoded into PostgreSQL's binary COPY format by :mod:`pgvector_base.encoding` while the
server stores the rows before them: psycopg2's ``copy_expert`` reads the encoded stream as it
sends it, and psycopg 3's ``copy`` (or its async one, for :mod:`pgvector_base.aio`) is written
each piece as it is encoded. Every row is checked before it is sent (number of values, types,
vector dimensions, ranges); pgvector's receive functions refuse NaN and infinity on the server.
Either way a bad row stops the load with a :class:`LoadError` naming its line and column.

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
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.sql
import psycopg2
from pgvector.sqlalchemy import HALFVEC, SPARSEVEC, VECTOR
from psycopg2.extensions import encodings, quote_ident
from sqlalchemy import Boolean, Integer, Table, exists, not_, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, StatementError

try:
    from sqlalchemy.util.concurrency import await_
except ImportError:  # SQLAlchemy 2.0 names it await_only
    from sqlalchemy.util import await_only as await_

from pgvector_base.database import sqlstate
from pgvector_base.encoding import (
    DIALECT,
    HEADER,
    TRAILER,
    LoadError,
    Source,
    TableEncoder,
    UnloadableError,
    integer_layout,
)
from pgvector_base.session import set_local

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "BuildSettings",
    "LoadError",
    "LoadResult",
    "SettingError",
    "UnloadableError",
    "copy_rows",
    "load",
]

logger = logging.getLogger(__name__)

# Each COPY ends by waiting for the server to store what it has been sent, which stalls the
# client: batches are large, and only bound one statement and pace the progress reports.
DEFAULT_BATCH_SIZE = 100_000
# psycopg2 asks the stream for this many bytes at a time.
READ_SIZE = 1 << 16
# Room for the rows encoded while the server pauses to write (see _enlarge_send_buffer).
SEND_BUFFER = 1 << 22

# Rows, column batches (a mapping of column name to values), or an iterable of either.
Rows = Iterable[Sequence[Any] | Mapping[str, Any]] | Mapping[str, Any]
DriverConnection = (
    psycopg2.extensions.connection | psycopg.Connection[Any] | psycopg.AsyncConnection[Any]
)
# pgvector's "invalid value for parameter": a build setting the server refuses.
INVALID_PARAMETER_VALUE = "22023"
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
    encoder = TableEncoder(
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
    encoder = TableEncoder([table.c[name] for name in names], _encoding(dbapi_connection))
    return _send(connection, table, encoder, rows, batch_size=batch_size, progress=progress)


def _send(
    connection: Connection,
    table: Table,
    encoder: TableEncoder,
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
    source = Source([rows] if isinstance(rows, Mapping) else rows, encoder)
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


def _copy(
    dbapi_connection: DriverConnection, sql: str, pieces: Iterator[bytes | memoryview]
) -> None:
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
    if isinstance(dbapi_connection, psycopg.AsyncConnection):
        # Called inside AsyncConnection.run_sync (pgvector_base.aio): SQLAlchemy's greenlet
        # awaits the async COPY, as it awaits every other statement of the load.
        await_(_copy_async(dbapi_connection, sql, pieces))
        return
    with dbapi_connection.cursor() as copying, copying.copy(sql) as copy:
        for piece in pieces:
            copy.write(piece)


async def _copy_async(
    dbapi_connection: psycopg.AsyncConnection[Any], sql: str, pieces: Iterator[bytes | memoryview]
) -> None:
    """:func:`_copy` through psycopg 3's async COPY."""
    async with dbapi_connection.cursor() as copying, copying.copy(sql) as copy:
        for piece in pieces:
            await copy.write(piece)


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

    def __init__(self, pieces: Iterator[bytes | memoryview]) -> None:
        super().__init__()
        self._pieces = pieces
        self._pending = memoryview(b"")
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if not self._pending:
            try:
                piece = next(self._pieces, b"")
            except BaseException as error:
                self.error = error
                raise
            # A piece of rows encoded one by one is about one read: psycopg2 sends whatever
            # read() returns, so it goes as it is, not copied into a read and a remainder.
            if isinstance(piece, bytes):
                return piece
            self._pending = piece
        # A piece of numpy-encoded rows is megabytes: hand it out a read at a time, each byte
        # copied once, into a buffer the allocator reuses (slicing the rest off as bytes would
        # copy it again at every read).
        end = len(self._pending) if size is None or size < 0 else size
        data = bytes(self._pending[:end])
        self._pending = self._pending[end:]
        return data


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
    with _driver_cursor(connection) as cursor:
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
            else integer_layout(type_)[2]
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
    """Drop ``table``'s HNSW and IVFFlat indexes; return each one's name and definition.

    The index of a partition that belongs to its parent's index stays: PostgreSQL refuses to drop
    it alone, so a partition (a tenant's, say) is loaded with its index in place.
    """
    found = connection.execute(
        text(
            "SELECT c.oid::regclass::text, pg_get_indexdef(c.oid) "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am a ON a.oid = c.relam "
            "WHERE i.indrelid = CAST(:table AS regclass) AND a.amname IN ('hnsw', 'ivfflat') "
            "AND NOT c.relispartition ORDER BY 1"
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
        with _driver_cursor(connection) as cursor:
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
    """The psycopg2 or psycopg 3 (sync or async) connection under ``connection``, for COPY."""
    dbapi_connection = connection.connection.driver_connection
    if not isinstance(
        dbapi_connection,
        psycopg2.extensions.connection | psycopg.Connection | psycopg.AsyncConnection,
    ):
        raise TypeError(f"binary COPY needs psycopg2 or psycopg 3, not {dbapi_connection!r}")
    return dbapi_connection


def _driver_cursor(connection: Connection) -> contextlib.closing[Any]:
    """A cursor of the driver's own under ``connection``, which sends SQL as it is. For an async
    engine it is SQLAlchemy's adapter of psycopg 3's async cursor, which awaits each statement
    inside ``run_sync``."""
    return contextlib.closing(connection.connection.dbapi_connection.cursor())  # type: ignore[union-attr]
