"""Loading: the template's loader against the server's own COPY and INSERT ... SELECT."""

from __future__ import annotations

import io
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
from benchmarks.bench.common import Data, Item, Load, Row, Spread, checkpoint, in_turn, ratios
from sqlalchemy import Column, Engine, MetaData, Table, insert, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from pgvector_base.loading import copy_rows

FILE_COPY = "server: COPY FROM a file (binary)"
INSERT_SELECT = "server: INSERT ... SELECT from a table"
COLUMNS = "loader: numpy column batch"
NUMPY_ROWS = "loader: rows of 1-D numpy arrays"
LISTS = "loader: rows of Python lists"
COLUMNS_PSYCOPG3 = "loader: numpy column batch, psycopg 3"
LISTS_PSYCOPG3 = "loader: rows of Python lists, psycopg 3"
# Each psycopg2 method of the loader, and the same input through psycopg 3.
PSYCOPG3_TWINS = {COLUMNS: COLUMNS_PSYCOPG3, LISTS: LISTS_PSYCOPG3}
ORM = "ORM add_all"
# ORM add_all, executemany and text COPY load a few thousand rows per second whatever the
# table's size: a sample of this many shows it.
SAMPLE_ROWS = 10_000
TEXT_COPY_BATCH = 10_000


def measure_loads(
    engine: Engine, app: Engine, *, model: type[Item], table: Table, data: Data, repeats: int
) -> list[Load]:
    """Time each loading method on an empty table, the methods taking turns."""
    staging = Table(
        "staging",
        MetaData(),
        *(Column(column.name, column.type, nullable=False) for column in table.columns),
    )
    with server_file() as path:
        with engine.begin() as connection:
            staging.create(connection)
            copy_rows(connection, staging, data.columns)
            connection.execute(text(f"COPY staging TO '{path}' (FORMAT binary)"))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            # Settled, so that INSERT ... SELECT does not also set hint bits.
            connection.execute(text("VACUUM (FREEZE, ANALYZE) staging"))
        sample = data.lists[:SAMPLE_ROWS]
        rows = len(data.lists)
        methods: dict[str, tuple[int, Engine, Callable[[Connection], object]]] = {
            FILE_COPY: (
                rows,
                engine,
                lambda c: c.execute(text(f"COPY item FROM '{path}' (FORMAT binary)")),
            ),
            INSERT_SELECT: (
                rows,
                engine,
                lambda c: c.execute(text("INSERT INTO item SELECT * FROM staging")),
            ),
            COLUMNS: (rows, engine, lambda c: copy_rows(c, table, data.columns)),
            NUMPY_ROWS: (rows, engine, lambda c: copy_rows(c, table, data.numpy_rows)),
            LISTS: (rows, engine, lambda c: copy_rows(c, table, data.lists)),
            COLUMNS_PSYCOPG3: (rows, app, lambda c: copy_rows(c, table, data.columns)),
            LISTS_PSYCOPG3: (rows, app, lambda c: copy_rows(c, table, data.lists)),
            ORM: (len(sample), engine, lambda c: orm_add_all(c, model, sample)),
            "executemany INSERT": (len(sample), engine, lambda c: executemany(c, table, sample)),
            "text COPY": (len(sample), engine, lambda c: text_copy(c, sample)),
        }
        seconds: dict[str, list[float]] = {name: [] for name in methods}
        for repeat in range(repeats):
            for name, (_, method_engine, load) in in_turn(methods, repeat):
                seconds[name].append(timed_load(engine, method_engine, load))
    # Rows per second of each turn, so that a ratio compares methods that ran side by side.
    rates = {name: [count / s for s in seconds[name]] for name, (count, *_) in methods.items()}
    return [
        Load(
            name,
            count,
            Spread.of(seconds[name]),
            count / statistics.median(seconds[name]),
            ratios(rates[name], rates[FILE_COPY]),
            ratios(rates[name], rates[INSERT_SELECT]),
            ratios(rates[name], rates[PSYCOPG3_TWINS[name]]) if name in PSYCOPG3_TWINS else None,
        )
        for name, (count, *_) in methods.items()
    ]


@contextmanager
def server_file() -> Iterator[str]:
    """A path the server process (another user, on this machine) can write and read."""
    directory = Path(tempfile.mkdtemp(prefix="pgvector-bench-"))
    directory.chmod(0o777)
    try:
        yield str(directory / "item.bin")
    finally:
        shutil.rmtree(directory)


def timed_load(
    engine: Engine, method_engine: Engine, load: Callable[[Connection], object]
) -> float:
    """Seconds ``load`` takes in one transaction on an empty table, after a checkpoint so that
    none runs meanwhile."""
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE item"))
    checkpoint(engine)
    started = time.perf_counter()
    with method_engine.begin() as connection:
        load(connection)
    return time.perf_counter() - started


def orm_add_all(connection: Connection, model: type[Item], rows: list[Row]) -> None:
    """One ORM object per row, flushed at once."""
    with Session(connection) as session:
        session.add_all([model(id=i, category=c, embedding=v) for i, c, v in rows])
        session.flush()


def executemany(connection: Connection, table: Table, rows: list[Row]) -> None:
    """One Core INSERT with a list of parameter sets (batched by SQLAlchemy's insertmanyvalues)."""
    connection.execute(
        insert(table), [{"id": i, "category": c, "embedding": v} for i, c, v in rows]
    )


def text_copy(connection: Connection, rows: list[Row]) -> None:
    """COPY in text format, vectors written as pgvector's ``[1.0,2.0,...]`` literals."""
    dbapi_connection = connection.connection.dbapi_connection
    assert isinstance(dbapi_connection, psycopg2.extensions.connection)
    with dbapi_connection.cursor() as cursor:
        for start in range(0, len(rows), TEXT_COPY_BATCH):
            lines = "".join(
                f"{i}\t{c}\t[{','.join(map(str, v))}]\n"
                for i, c, v in rows[start : start + TEXT_COPY_BATCH]
            )
            cursor.copy_expert("COPY item (id, category, embedding) FROM STDIN", io.StringIO(lines))
