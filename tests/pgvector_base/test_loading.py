"""Bulk loading by binary COPY: exact round trips, the first-load order, all-or-nothing failures.

Round trips compare the server's own binary output (``vector_send`` and friends) with what
pgvector-python's encoders produce for the same input, so float4 and float2 rounding is checked
bit for bit against an implementation other than the loader's.
"""

from __future__ import annotations

import itertools
import math
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pgvector import HalfVector, SparseVector, Vector
from pgvector.sqlalchemy import BIT, HALFVEC, SPARSEVEC, VECTOR
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    Uuid,
    create_engine,
    func,
    select,
    text,
)
from sqlalchemy import (
    table as table_clause,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pgvector_base.loading import (
    BuildSettings,
    LoadError,
    SettingError,
    UnloadableError,
    copy_rows,
    load,
)
from tests.conftest import CreateDatabase

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT_DIM = 1536
DIM = 8


class LoadingBase(DeclarativeBase):
    """The tests' own tables: a typical one with a vector index, and one per encoding path."""


class Document(LoadingBase):
    """Text and an embedding with an HNSW index, as a team's table might be."""

    __tablename__ = "loading_document"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    embedding: Mapped[list[float] | None] = mapped_column(VECTOR(DOCUMENT_DIM))

    __table_args__ = (
        Index(
            "ix_loading_document_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )


class Sample(LoadingBase):
    """Every encodable type, nullable where it may be."""

    __tablename__ = "loading_sample"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    small: Mapped[int | None] = mapped_column(SmallInteger)
    flag: Mapped[bool | None] = mapped_column(Boolean)
    label: Mapped[str | None] = mapped_column(String(10))
    dense: Mapped[list[float] | None] = mapped_column(VECTOR(DIM))
    half: Mapped[list[float] | None] = mapped_column(HALFVEC(DIM))
    sparse: Mapped[SparseVector | None] = mapped_column(SPARSEVEC(1000))


class Packed(LoadingBase):
    """Fixed-width columns only, whose rows the loader packs with one struct call each."""

    __tablename__ = "loading_packed"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    small: Mapped[int | None] = mapped_column(SmallInteger)
    flag: Mapped[bool | None] = mapped_column(Boolean)
    dense: Mapped[list[float] | None] = mapped_column(VECTOR(DIM))
    half: Mapped[list[float] | None] = mapped_column(HALFVEC(DIM))


DOCUMENT: Table = LoadingBase.metadata.tables["loading_document"]
SAMPLE: Table = LoadingBase.metadata.tables["loading_sample"]
PACKED: Table = LoadingBase.metadata.tables["loading_packed"]


@pytest.fixture(scope="module")
def database_url(create_database: CreateDatabase) -> str:
    """The module's own database, with the tests' tables, as a URL string with its password."""
    url = create_database()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        LoadingBase.metadata.create_all(connection)
    engine.dispose()
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    """The module's database through psycopg2."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def empty_tables(engine: Engine) -> None:
    """Each test starts from empty tables."""
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE loading_document, loading_sample, loading_packed"))


def documents(count: int, first: int = 1) -> list[tuple[Any, ...]]:
    """Documents with random float64 embeddings, which float4 storage must round."""
    rng = np.random.default_rng(first)
    vectors = rng.standard_normal((count, DOCUMENT_DIM)).tolist()
    return [
        (i, f"document {i}", "ünïcode ✓", vectors[i - first]) for i in range(first, first + count)
    ]


def count(engine: Engine, table: str = "loading_document") -> int:
    """How many rows ``table`` has."""
    with engine.connect() as connection:
        return int(connection.scalar(text(f"SELECT count(*) FROM {table}")) or 0)


def copy_and_read(
    engine: Engine, table: Table, rows: list[Any], columns: str
) -> list[tuple[Any, ...]]:
    """Copy ``rows`` into ``table``, then read ``columns`` of every row back, in id order."""
    with engine.begin() as connection:
        copy_rows(connection, table, rows)
        stored = connection.execute(text(f"SELECT {columns} FROM {table.name} ORDER BY id")).all()
    # psycopg2 returns bytea as a memoryview, which never compares equal to bytes.
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in stored]


def test_vectors_round_trip_bit_for_bit(engine: Engine) -> None:
    rows = documents(50)
    with engine.begin() as connection:
        assert copy_rows(connection, DOCUMENT, rows, batch_size=7) == 50
        stored = connection.execute(
            text(
                "SELECT id, name, description, vector_send(embedding) "
                "FROM loading_document ORDER BY id"
            )
        ).all()
    assert [(i, name, description) for i, name, description, _ in stored] == [
        row[:3] for row in rows
    ]
    assert [bytes(binary) for *_, binary in stored] == [Vector(row[3]).to_binary() for row in rows]


def test_every_encoded_type_round_trips(engine: Engine) -> None:
    rng = np.random.default_rng(1)
    dense = rng.standard_normal((2, DIM)).tolist()
    sparse = {3: 0.5, 999: -1.25e-3, 17: 3.0}
    rows: list[tuple[Any, ...]] = [
        (1, -32768, True, "ten chars!", dense[0], dense[1], SparseVector(sparse, 1000)),
        (2, 32767, False, "", Vector(dense[1]), HalfVector(dense[0]), sparse),
        (3, None, None, None, None, None, None),
    ]
    stored = copy_and_read(
        engine,
        SAMPLE,
        rows,
        "id, small, flag, label, vector_send(dense), halfvec_send(half), sparsevec_send(sparse)",
    )

    sparse_binary = SparseVector(sparse, 1000).to_binary()
    expected = [
        (1, -32768, True, "ten chars!", dense[0], dense[1], sparse_binary),
        (2, 32767, False, "", dense[1], dense[0], sparse_binary),
    ]
    assert stored == [
        (i, small, flag, label, Vector(v).to_binary(), HalfVector(h).to_binary(), s)
        for i, small, flag, label, v, h, s in expected
    ] + [(3, None, None, None, None, None, None)]


def test_rows_of_fixed_width_columns_round_trip_whatever_their_form(engine: Engine) -> None:
    """Lists and tuples of exact types are packed whole; other forms take the field-by-field
    path, and both must store the same bytes."""
    rng = np.random.default_rng(2)
    dense = rng.standard_normal((4, DIM)).tolist()
    rows: list[Any] = [
        (1, 7, True, dense[0], dense[1]),
        [2, -32768, False, tuple(dense[1]), tuple(dense[2])],
        (3, 32767, None, Vector(dense[2]), HalfVector(dense[3])),
        (4, None, True, dense[3], None),
        (5, 1, False, [1, 2, 3, 4, 5, 6, 7, 8], dense[0]),
    ]
    stored = copy_and_read(
        engine, PACKED, rows, "id, small, flag, vector_send(dense), halfvec_send(half)"
    )

    def binary(value: Any, kind: type[Vector] | type[HalfVector]) -> bytes | None:
        if value is None:
            return None
        values = value.to_list() if isinstance(value, Vector | HalfVector) else list(value)
        return kind(values).to_binary()

    assert stored == [
        (row[0], row[1], row[2], binary(row[3], Vector), binary(row[4], HalfVector)) for row in rows
    ]


def test_a_first_load_rebuilds_the_vector_index_then_analyzes(engine: Engine) -> None:
    index = text(
        "SELECT pg_get_indexdef('ix_loading_document_embedding'::regclass), "
        "'ix_loading_document_embedding'::regclass::oid"
    )
    statistics = text(
        "SELECT histogram_bounds::text FROM pg_stats "
        "WHERE tablename = 'loading_document' AND attname = 'id'"
    )
    with engine.connect() as connection:
        before, before_oid = connection.execute(index).one()

    with engine.begin() as connection:
        first = load(connection, DOCUMENT, documents(30, first=1001), batch_size=8)
    with engine.connect() as connection:
        after_first, first_oid = connection.execute(index).one()
        histogram = connection.scalar(statistics)
    with engine.begin() as connection:
        second = load(connection, DOCUMENT, documents(5, first=1031))
    with engine.connect() as connection:
        after_second, second_oid = connection.execute(index).one()

    assert first.rows == 30
    assert first.rebuilt_indexes == ("ix_loading_document_embedding",)
    assert after_first == before
    assert first_oid != before_oid
    assert histogram.startswith("{1001,")
    assert histogram.endswith(",1030}")
    assert second.rebuilt_indexes == ()
    assert (after_second, second_oid) == (after_first, first_oid)
    assert count(engine) == 35


def test_build_settings_apply_to_the_build_only(engine: Engine) -> None:
    """1MB holds the graph of about 150 of these vectors: pgvector says so, and load reports it."""
    with engine.begin() as connection:
        result = load(
            connection,
            DOCUMENT,
            documents(300),
            build=BuildSettings(maintenance_work_mem="1MB", max_parallel_maintenance_workers=0),
        )
        setting = connection.scalar(text("SHOW maintenance_work_mem"))
    with engine.connect() as connection:
        default = connection.scalar(text("SHOW maintenance_work_mem"))

    assert len(result.notices) == 1
    assert "hnsw graph no longer fits into maintenance_work_mem after" in result.notices[0]
    assert setting == "1MB"
    assert default != "1MB"


def test_a_build_setting_the_server_refuses_stops_the_load_before_any_row(engine: Engine) -> None:
    read: list[int] = []

    def rows() -> Iterator[tuple[Any, ...]]:
        for row in documents(3):
            read.append(row[0])
            yield row

    with pytest.raises(SettingError) as refused, engine.begin() as connection:
        load(connection, DOCUMENT, rows(), build=BuildSettings(maintenance_work_mem="lots"))
    assert refused.value.name == "maintenance_work_mem"
    assert str(refused.value) == 'invalid value for parameter "maintenance_work_mem": "lots"'
    assert read == []


def test_progress_is_reported_per_batch(engine: Engine) -> None:
    batches: list[int] = []
    with engine.begin() as connection:
        copy_rows(connection, DOCUMENT, documents(7), batch_size=3, progress=batches.append)
    assert batches == [3, 3, 1]


def bad(position: int, value: Any) -> tuple[Any, ...]:
    """Document 6 with the value at ``position`` replaced."""
    row = documents(1, first=6)[0]
    return (*row[:position], value, *row[position + 1 :])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (bad(3, [0.5] * 3), f"embedding: expected {DOCUMENT_DIM} dimensions, got 3"),
        (bad(3, [math.nan] * DOCUMENT_DIM), "embedding: NaN not allowed in vector"),
        (
            bad(3, [1.0] * (DOCUMENT_DIM - 1) + [-math.inf]),
            "embedding: infinite value not allowed in vector",
        ),
        (bad(3, [1e39] * DOCUMENT_DIM), "embedding: a value is outside the range of vector"),
        (bad(3, ["0.5"] * DOCUMENT_DIM), "embedding: expected a list of numbers"),
        (bad(3, "[0.5, 0.5]"), "embedding: expected a list of numbers, got str"),
        (bad(0, "12"), "id: expected an integer, got '12'"),
        (bad(0, 2**63), "id: 9223372036854775808 is out of range for bigint"),
        (bad(1, None), "name must not be null"),
        (bad(1, "x" * 201), "name: 201 characters, more than the column's 200"),
        (bad(2, "a\x00b"), "description: contains a NUL character"),
        (bad(3, [0.5] * DOCUMENT_DIM)[:3], "expected 4 values (id, name, description, embedding)"),
    ],
)
def test_a_bad_row_stops_the_load_and_leaves_nothing(
    engine: Engine, row: tuple[Any, ...], message: str
) -> None:
    """The bad row is line 6; in batches of 2, lines 1 to 4 were sent and must not remain."""
    with pytest.raises(LoadError) as failed, engine.begin() as connection:
        load(connection, DOCUMENT, [*documents(5), row], batch_size=2)
    assert str(failed.value).startswith(f"line 6: {message}")
    assert count(engine) == 0


GOOD_PACKED = (6, 1, True, [0.5] * DIM, [0.5] * DIM)


def bad_packed(position: int, value: Any) -> tuple[Any, ...]:
    """A row of the packed table, line 6, with the value at ``position`` replaced."""
    return (*GOOD_PACKED[:position], value, *GOOD_PACKED[position + 1 :])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (bad_packed(0, True), "id: expected an integer, got True"),
        (bad_packed(0, 6.0), "id: expected an integer, got 6.0"),
        (bad_packed(0, None), "id must not be null"),
        (bad_packed(1, 32768), "small: 32768 is out of range for smallint"),
        (bad_packed(2, 1), "flag: expected true or false, got 1"),
        (bad_packed(3, [0.5] * (DIM + 1)), f"dense: expected {DIM} dimensions, got {DIM + 1}"),
        (
            (6, 1, True, [1] * (DIM + 1), [1] * (DIM - 1)),
            f"dense: expected {DIM} dimensions, got {DIM + 1}",
        ),
        (bad_packed(3, [None] * DIM), "dense: expected a list of numbers"),
        (bad_packed(3, [3.5e38] * DIM), "dense: a value is outside the range of vector (float4)"),
        (bad_packed(3, [math.nan] * DIM), "dense: NaN not allowed in vector"),
        (bad_packed(4, [65520.0] * DIM), "half: a value is outside the range of halfvec (±65504)"),
        (bad_packed(4, [-math.inf] * DIM), "half: infinite value not allowed in halfvec"),
        ((*GOOD_PACKED, None), "expected 5 values (id, small, flag, dense, half)"),
    ],
)
def test_a_bad_row_of_fixed_width_columns_is_named_like_any_other(
    engine: Engine, row: tuple[Any, ...], message: str
) -> None:
    good = [(i, *GOOD_PACKED[1:]) for i in range(1, 6)]
    with pytest.raises(LoadError) as failed, engine.begin() as connection:
        load(connection, PACKED, [*good, row], batch_size=2)
    assert str(failed.value) == f"line 6: {message}"
    assert count(engine, "loading_packed") == 0


def test_a_row_the_server_rejects_is_reported_by_its_line(engine: Engine) -> None:
    rows = [*documents(4), documents(1, first=2)[0]]
    with pytest.raises(LoadError) as failed, engine.begin() as connection:
        load(connection, DOCUMENT, rows, batch_size=3)
    assert str(failed.value) == (
        'line 5: duplicate key value violates unique constraint "loading_document_pkey": '
        "Key (id)=(2) already exists."
    )
    assert count(engine) == 0


def test_an_error_in_the_input_stops_the_load_and_leaves_nothing(engine: Engine) -> None:
    def rows() -> Iterator[tuple[Any, ...]]:
        yield from documents(3)
        raise LoadError(4, "not JSON")

    with pytest.raises(LoadError, match="line 4: not JSON"), engine.begin() as connection:
        load(connection, DOCUMENT, rows())
    assert count(engine) == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1000: 1.0}, "sparse: an index is outside 0..999"),
        ({1: math.nan}, "sparse: NaN not allowed in sparsevec"),
        (SparseVector({1: 1.0}, 10), "sparse: expected 1000 dimensions, got 10"),
        ([1.0, 2.0], "sparse: expected a SparseVector or a dict, got list"),
    ],
)
def test_bad_sparse_vectors_are_refused(engine: Engine, value: Any, message: str) -> None:
    with pytest.raises(LoadError, match=f"line 1: {message}"), engine.begin() as connection:
        copy_rows(connection, SAMPLE, [(1, None, None, None, None, None, value)])


@pytest.mark.parametrize(
    ("dense", "half", "message"),
    [
        (None, [70000.0] * DIM, "half: a value is outside the range of halfvec"),
        (None, [1.0] * (DIM - 1) + [math.inf], "half: infinite value not allowed in halfvec"),
        (None, [math.nan] + [1.0] * (DIM - 1), "half: NaN not allowed in halfvec"),
        ([1.0] * (DIM - 1) + [-math.inf], None, "dense: infinite value not allowed in vector"),
    ],
)
def test_bad_halfvec_and_vector_values_are_refused(
    engine: Engine, dense: list[float] | None, half: list[float] | None, message: str
) -> None:
    with pytest.raises(LoadError, match=f"line 1: {message}"), engine.begin() as connection:
        copy_rows(connection, SAMPLE, [(1, None, None, None, dense, half, None)])


def test_finite_values_at_the_limits_of_the_types_load(engine: Engine) -> None:
    """The largest finite float4 and float2 values look like infinity at a glance."""
    dense = [3.4e38, -3.4e38] * (DIM // 2)
    half = [65504.0, -65504.0] * (DIM // 2)
    with engine.begin() as connection:
        copy_rows(connection, SAMPLE, [(1, None, None, None, dense, half, None)])
        stored = connection.execute(text("SELECT dense, half FROM loading_sample")).one()
    assert [float(value) for value in stored.dense[1:-1].split(",")] == pytest.approx(dense)
    assert [float(value) for value in stored.half[1:-1].split(",")] == half


UUID_TABLE = Table(
    "loading_uuid",
    MetaData(),
    Column("id", Uuid, primary_key=True),
    Column("ref", postgresql.UUID(as_uuid=False)),
    Column("embedding", VECTOR(3)),
)


@pytest.fixture
def uuid_table(engine: Engine) -> Iterator[Table]:
    """:data:`UUID_TABLE`, made for the test and dropped after it."""
    UUID_TABLE.create(engine)
    yield UUID_TABLE
    UUID_TABLE.drop(engine)


def test_uuid_keys_load_as_the_server_reads_their_text(engine: Engine, uuid_table: Table) -> None:
    keys = [uuid.uuid4() for _ in range(3)]
    rows = [
        (keys[0], str(keys[1]), [1.0, 2.0, 3.0]),
        (keys[1], keys[2].hex.upper(), [0.5, 0.5, 0.5]),
        (keys[2], None, [0.0, 1.0, 0.0]),
    ]
    with engine.begin() as connection:
        assert load(connection, uuid_table, rows).rows == 3
        stored = connection.execute(
            text("SELECT id::text, ref::text FROM loading_uuid ORDER BY id")
        ).all()
    assert sorted(stored) == sorted(
        [(str(keys[0]), str(keys[1])), (str(keys[1]), str(keys[2])), (str(keys[2]), None)]
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not-a-uuid", "line 2: ref: 'not-a-uuid' is not a UUID"),
        (12, "line 2: ref: expected a UUID, got 12"),
    ],
)
def test_a_bad_uuid_is_named_by_its_line(
    engine: Engine, uuid_table: Table, value: Any, message: str
) -> None:
    rows = [(uuid.uuid4(), None, [1.0, 2.0, 3.0]), (uuid.uuid4(), value, [1.0, 2.0, 3.0])]
    with pytest.raises(LoadError) as failed, engine.begin() as connection:
        load(connection, uuid_table, rows)
    assert str(failed.value).startswith(message)
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM loading_uuid")) == 0


class Lowercase(TypeDecorator[str]):
    """Text stored lower-cased: a type of the application's own."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else value.lower()


DECORATED_TABLE = Table(
    "loading_decorated",
    MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("tag", Lowercase),
)


def test_a_type_of_its_own_stores_what_its_bind_processing_makes(engine: Engine) -> None:
    DECORATED_TABLE.create(engine)
    try:
        with engine.begin() as connection:
            load(connection, DECORATED_TABLE, [(1, "MiXeD"), (2, None)])
            stored = connection.execute(
                text("SELECT id, tag FROM loading_decorated ORDER BY id")
            ).all()
    finally:
        DECORATED_TABLE.drop(engine)
    assert stored == [(1, "mixed"), (2, None)]


def test_a_column_type_without_an_encoder_is_refused(engine: Engine) -> None:
    documents = Table("documents", MetaData(), Column("body", JSON))
    with (
        pytest.raises(UnloadableError, match="column body has type JSON, which the binary loader"),
        engine.begin() as connection,
    ):
        copy_rows(connection, documents, [])


def binaries(rows: Any) -> list[tuple[int, int, bool, bytes, bytes]]:
    """What pgvector-python's own encoders make of rows of the packed table."""
    return [
        (int(i), int(small), bool(flag), Vector(dense).to_binary(), HalfVector(half).to_binary())
        for i, small, flag, dense, half in rows
    ]


PACKED_BINARY = "id, small, flag, vector_send(dense), halfvec_send(half)"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_rows_and_column_batches_store_what_pgvector_encodes(
    engine: Engine, dtype: type[np.floating[Any]]
) -> None:
    """Rows with 1-D arrays, a column batch with 2-D arrays, and lists, in one input, crossing
    COPY boundaries; float64 must be rounded to float4 and float2 exactly as pgvector rounds it."""
    rng = np.random.default_rng(3)
    dense = (rng.standard_normal((9000, DIM)) * 100).astype(dtype)
    half = rng.standard_normal((9000, DIM)).astype(dtype)
    ids = np.arange(1, 9001)
    small = rng.integers(-32768, 32768, size=9000, dtype=np.int16)
    flags = rng.random(9000) < 0.5
    rows = list(zip(ids.tolist(), small.tolist(), flags.tolist(), dense, half, strict=True))
    batch: dict[str, Any] = {"id": ids, "small": small, "flag": flags, "dense": dense, "half": half}
    lists = [(i, s, f, d.tolist(), h.tolist()) for i, s, f, d, h in rows]
    items: list[Any] = [
        *rows[:5000],
        {name: values[5000:8990] for name, values in batch.items()},
        *lists[8990:],
    ]
    copied: list[int] = []

    with engine.begin() as connection:
        total = copy_rows(connection, PACKED, items, batch_size=3000, progress=copied.append)
        stored = connection.execute(
            text(f"SELECT {PACKED_BINARY} FROM loading_packed ORDER BY id")
        ).all()

    assert total == 9000
    assert copied == [3000, 3000, 3000]
    assert [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in stored] == (
        binaries(rows)
    )


def test_rows_that_change_form_every_few_rows_store_what_pgvector_encodes(
    engine: Engine,
) -> None:
    """Runs of one to four numpy rows, list rows and column batches, one after another and cut
    by COPY boundaries: each run is encoded its own way, and no row is lost or sent twice."""
    rng = np.random.default_rng(4)
    count = 90
    dense = rng.standard_normal((count, DIM)).astype(np.float32)
    half = rng.standard_normal((count, DIM)).astype(np.float32)
    ids = np.arange(1, count + 1)
    small = rng.integers(-100, 100, size=count, dtype=np.int16)
    flags = rng.random(count) < 0.5
    rows = list(zip(ids.tolist(), small.tolist(), flags.tolist(), dense, half, strict=True))
    batch: dict[str, Any] = {"id": ids, "small": small, "flag": flags, "dense": dense, "half": half}
    items: list[Any] = []
    start, run = 0, 1
    for form in itertools.cycle(("arrays", "lists", "batch")):
        if start >= count:
            break
        stop = min(start + run, count)
        if form == "arrays":
            items += rows[start:stop]
        elif form == "lists":
            items += [(i, s, f, d.tolist(), h.tolist()) for i, s, f, d, h in rows[start:stop]]
        else:
            items.append({name: values[start:stop] for name, values in batch.items()})
        start, run = stop, run % 4 + 1
    copied: list[int] = []

    with engine.begin() as connection:
        total = copy_rows(connection, PACKED, items, batch_size=7, progress=copied.append)
        stored = connection.execute(
            text(f"SELECT {PACKED_BINARY} FROM loading_packed ORDER BY id")
        ).all()

    assert total == count
    assert copied == [7] * 12 + [6]
    assert [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in stored] == (
        binaries(rows)
    )


def test_a_column_batch_alone_is_loaded(engine: Engine) -> None:
    rng = np.random.default_rng(4)
    batch = {
        "id": list(range(1, 11)),
        "small": np.zeros(10, dtype=np.int64),
        "flag": [True] * 10,
        "dense": rng.standard_normal((10, DIM), dtype=np.float32),
        "half": rng.standard_normal((10, DIM), dtype=np.float32),
    }
    with engine.begin() as connection:
        result = load(connection, PACKED, batch)
    assert result.rows == 10
    assert count(engine, "loading_packed") == 10


def good_batch() -> dict[str, Any]:
    """Ten good rows of the packed table as columns, for a test to spoil."""
    rng = np.random.default_rng(5)
    return {
        "id": np.arange(1, 11),
        "small": np.ones(10, dtype=np.int32),
        "flag": np.ones(10, dtype=bool),
        "dense": rng.standard_normal((10, DIM)),
        "half": rng.standard_normal((10, DIM), dtype=np.float32),
    }


def spoiled(column: str, value: Any, row: int = 5) -> dict[str, Any]:
    """:func:`good_batch` with ``column`` of 0-based ``row`` set to ``value``."""
    batch = good_batch()
    batch[column][row] = value
    return batch


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (spoiled("dense", math.nan), "line 10: dense: NaN not allowed in vector"),
        (spoiled("dense", -math.inf), "line 10: dense: infinite value not allowed in vector"),
        (spoiled("dense", 1e39), "line 10: dense: a value is outside the range of vector (float4)"),
        (spoiled("half", 7e4), "line 10: half: a value is outside the range of halfvec (±65504)"),
        (spoiled("half", math.inf), "line 10: half: infinite value not allowed in halfvec"),
        (spoiled("small", 40000), "line 10: small: 40000 is out of range for smallint"),
        (
            {**good_batch(), "dense": np.zeros((10, DIM + 1))},
            f"line 5: dense: expected {DIM} dimensions, got {DIM + 1}",
        ),
        (
            {**good_batch(), "id": np.arange(1, 11, dtype=np.float64)},
            "line 5: id: expected an integer, got 1.0",
        ),
        (
            {name: values for name, values in good_batch().items() if name != "half"},
            "line 5: a column batch needs exactly the columns id, small, flag, dense, half; "
            "missing half",
        ),
        (
            {**good_batch(), "id": np.arange(1, 10)},
            "line 5: the columns of a column batch differ in length: "
            "id 9, small 10, flag 10, dense 10, half 10",
        ),
    ],
)
def test_a_bad_value_in_a_column_batch_is_named_by_its_row(
    engine: Engine, batch: dict[str, Any], message: str
) -> None:
    """Four rows come first, so row 6 of the batch is line 10."""
    with pytest.raises(LoadError) as failed, engine.begin() as connection:
        load(connection, PACKED, [*[(i, *GOOD_PACKED[1:]) for i in range(11, 15)], batch])
    assert str(failed.value) == message.replace("line 5:", "line 5:").replace(
        "line 10:", "line 10:"
    )
    assert count(engine, "loading_packed") == 0


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        (np.zeros(DOCUMENT_DIM - 1), f"expected {DOCUMENT_DIM} dimensions, got {DOCUMENT_DIM - 1}"),
        (np.zeros((2, DOCUMENT_DIM)), "expected a 1-D array, got 2 dimensions"),
        (np.full(DOCUMENT_DIM, math.nan), "NaN not allowed in vector"),
        (np.array(["a"] * DOCUMENT_DIM), "expected an array of numbers, got dtype <U1"),
    ],
)
def test_a_bad_numpy_row_is_named_like_any_other(engine: Engine, vector: Any, message: str) -> None:
    """A table with text columns takes numpy rows one by one."""
    rows = [(i, "name", "", np.zeros(DOCUMENT_DIM)) for i in range(1, 6)]
    with pytest.raises(LoadError) as failed, engine.begin() as connection:
        load(connection, DOCUMENT, [*rows, (6, "name", "", vector)], batch_size=2)
    assert str(failed.value) == f"line 6: embedding: {message}"
    assert count(engine) == 0


def test_numpy_is_not_imported_for_rows_or_column_batches_of_lists(database_url: str) -> None:
    script = f"""
import sys
from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy import BigInteger, Boolean, Column, MetaData, SmallInteger, Table, create_engine
from pgvector_base.loading import copy_rows

packed = Table(
    "loading_packed", MetaData(), Column("id", BigInteger), Column("small", SmallInteger),
    Column("flag", Boolean), Column("dense", VECTOR({DIM})), Column("half", HALFVEC({DIM})),
)
with create_engine({database_url!r}).connect() as connection:
    copy_rows(connection, packed, [(100, 1, True, [0.5] * {DIM}, [0.5] * {DIM})])
    batch = dict(id=[101], small=[2], flag=[False], dense=[[0.25] * {DIM}], half=[[0.25] * {DIM}])
    copy_rows(connection, packed, [batch])
    stored = "SELECT array_agg(id ORDER BY id) FROM loading_packed"
    print(connection.exec_driver_sql(stored).scalar())
    connection.rollback()
print("numpy" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[100,", "101]", "False"]


def test_psycopg3_connections_load_the_same_bytes_and_report_build_notices(
    database_url: str,
) -> None:
    engine = create_engine(database_url.replace("+psycopg2", "+psycopg"))
    rows = documents(300)
    try:
        with engine.begin() as connection:
            result = load(
                connection,
                DOCUMENT,
                rows,
                batch_size=128,
                build=BuildSettings(maintenance_work_mem="1MB", max_parallel_maintenance_workers=0),
            )
            stored = connection.execute(
                text("SELECT vector_send(embedding) FROM loading_document ORDER BY id")
            ).scalars()
            assert [bytes(binary) for binary in stored] == [
                Vector(row[3]).to_binary() for row in rows
            ]
    finally:
        engine.dispose()
    assert result.rebuilt_indexes == ("ix_loading_document_embedding",)
    assert len(result.notices) == 1
    assert "hnsw graph no longer fits into maintenance_work_mem after" in result.notices[0]


def exactly(message: str) -> str:
    """A ``match`` pattern for exactly ``message``."""
    return f"^{re.escape(message)}$"


def table_state(engine: Engine, table: str) -> tuple[list[tuple[str, str]], list[str], int]:
    """What a failed load must leave as it was: the table's indexes (pg_indexes), its columns
    with their types, and its row count."""
    with engine.connect() as connection:
        indexes = connection.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t ORDER BY 1"),
            {"t": table},
        ).all()
        columns = connection.execute(
            text(
                "SELECT attname || ' ' || format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = to_regclass(quote_ident(:t)) AND attnum > 0 ORDER BY attnum"
            ),
            {"t": table},
        ).scalars()
        rows = connection.execute(
            select(func.count()).select_from(table_clause(table))
        ).scalar_one()
        return [(name, definition) for name, definition in indexes], list(columns), rows


def indexed_table(name: str, *columns: Column[Any]) -> Table:
    """A table of the test's own with an id, ``columns`` and an embedding with an HNSW index,
    created in the module's database."""
    table = Table(
        name,
        MetaData(),
        Column("id", BigInteger, primary_key=True),
        *columns,
        Column("embedding", VECTOR(DIM)),
        Index(
            f"ix_{name}",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_l2_ops"},
        ),
    )
    return table


TIMED = indexed_table("loading_timed", Column("at", DateTime))
WEIGHED = indexed_table("loading_weighed", Column("weight", Float))
FLAGGED = indexed_table("loading_flagged", Column("bits", BIT(8)))
# The loading_document table as a model out of step with the database would describe it.
STALE_DIMENSIONS = Table(
    "loading_document",
    MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("embedding", VECTOR(DIM)),
)
STALE_COLUMNS = Table(
    "loading_document",
    MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("title", String(20)),
)
SUPPORTED = "supported: integers, booleans, strings, UUID, VECTOR, HALFVEC, SPARSEVEC"
ADVICE = "run the migrations (alembic upgrade head) or fix the model of loading_document"


@pytest.mark.parametrize(
    ("table", "columns", "message"),
    [
        (
            TIMED,
            None,
            "column at has type TIMESTAMP WITHOUT TIME ZONE, which the binary loader does not "
            f"encode; {SUPPORTED} (pass columns= to leave it to its default)",
        ),
        (
            WEIGHED,
            None,
            "column weight has type FLOAT, which the binary loader does not encode; "
            f"{SUPPORTED} (pass columns= to leave it to its default)",
        ),
        (
            FLAGGED,
            None,
            "column bits has type BIT(8), which the binary loader does not encode; "
            f"{SUPPORTED} (pass columns= to leave it to its default)",
        ),
        (
            DOCUMENT,
            ["id", "embeding"],
            "columns= names embeding, not a column of loading_document; loading_document has "
            "id, name, description, embedding",
        ),
        (
            DOCUMENT,
            ["id", "id"],
            "columns= names id more than once; loading_document has id, name, description, "
            "embedding",
        ),
        (
            STALE_DIMENSIONS,
            None,
            "loading_document.embedding is vector(1536) in the database and vector(8) in the "
            f"model; {ADVICE}",
        ),
        (STALE_COLUMNS, None, f"loading_document has no column title in the database; {ADVICE}"),
    ],
    ids=["DateTime", "Float", "BIT", "unknown column", "repeated column", "dimensions", "column"],
)
def test_what_cannot_be_loaded_is_refused_before_the_indexes_are_dropped(
    engine: Engine, table: Table, columns: list[str] | None, message: str
) -> None:
    """The caller who catches the error and commits keeps the table's index."""
    table.metadata.create_all(engine, [table]) if table.name != "loading_document" else None
    before = table_state(engine, table.name)
    assert before[0], "the table has its vector index"
    with engine.connect() as connection:
        with pytest.raises(UnloadableError, match=exactly(message)):
            load(connection, table, [(1, None, [1.0] * DIM)], columns=columns)
        connection.commit()
    assert table_state(engine, table.name) == before


def test_a_failure_after_the_indexes_are_dropped_fails_the_transaction(engine: Engine) -> None:
    """The rows' source breaks between two COPYs, outside either: a caller who commits anyway
    gets a rollback, and the index back, not three rows and no index."""

    def rows() -> Iterator[tuple[Any, ...]]:
        yield from documents(3)
        raise LoadError(4, "not JSON")

    before = table_state(engine, "loading_document")
    with engine.connect() as connection:
        with pytest.raises(LoadError, match=exactly("line 4: not JSON")):
            load(connection, DOCUMENT, rows(), batch_size=3)
        connection.commit()
    assert table_state(engine, "loading_document") == before


def test_a_sparse_vector_an_hnsw_index_cannot_take_is_named_by_its_line(engine: Engine) -> None:
    """pgvector's HNSW index takes at most 1,000 non-zero elements: a first load rebuilding it
    would fail without naming the row. The server's own index build is the oracle for the limit:
    1,000 build."""
    table = Table(
        "loading_sparse",
        MetaData(),
        Column("id", BigInteger, primary_key=True),
        Column("embedding", SPARSEVEC(2000)),
        Index(
            "ix_loading_sparse",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "sparsevec_l2_ops"},
        ),
    )
    table.metadata.create_all(engine)
    before = table_state(engine, "loading_sparse")

    def dense(count: int) -> SparseVector:
        return SparseVector(dict.fromkeys(range(count), 1.0), 2000)

    rows = [(1, dense(3)), (2, dense(1001)), (3, dense(5))]
    with engine.connect() as connection:
        with pytest.raises(LoadError) as failed:
            load(connection, table, rows)
        connection.commit()
    assert str(failed.value) == (
        "line 2: embedding: 1001 non-zero elements; its HNSW index ix_loading_sparse takes at "
        "most 1000"
    )
    assert table_state(engine, "loading_sparse") == before
    with engine.begin() as connection:
        result = load(connection, table, [(1, dense(1000))])
        connection.rollback()
    assert result.rebuilt_indexes == ("ix_loading_sparse",)


def test_a_load_into_a_table_that_has_rows_analyzes_it(engine: Engine) -> None:
    """The planner's statistics must cover the rows of every load, not only the first."""
    statistics = text(
        "SELECT histogram_bounds::text FROM pg_stats "
        "WHERE tablename = 'loading_document' AND attname = 'id'"
    )
    with engine.begin() as connection:
        load(connection, DOCUMENT, documents(30, first=1))
    with engine.begin() as connection:
        second = load(connection, DOCUMENT, documents(30, first=5001))
    with engine.connect() as connection:
        histogram = connection.scalar(statistics)
    assert second.rebuilt_indexes == ()
    assert histogram.startswith("{1,")
    assert histogram.endswith(",5030}")


def test_table_names_reach_sql_only_quoted(engine: Engine) -> None:
    """A name with ``:v2`` in it would be a bind parameter if it were spliced into text()."""
    table = indexed_table("loading items :v2 100%")
    table.metadata.create_all(engine)
    before = table_state(engine, table.name)
    with engine.begin() as connection:
        result = load(connection, table, [(1, [1.0] * DIM), (2, [2.0] * DIM)])
    indexes, columns, rows = table_state(engine, table.name)
    assert result.rebuilt_indexes == ('"ix_loading items :v2 100%"',)
    assert (indexes, columns, rows) == (before[0], before[1], 2)


def test_the_server_watches_for_a_lost_client_during_a_load_only(engine: Engine) -> None:
    """A killed loader's index build must stop within seconds; the setting must not stay on the
    connection, which a pool hands to someone else."""
    interval = text("SELECT current_setting('client_connection_check_interval')")
    seen: list[str | None] = []
    with engine.begin() as connection:
        load(
            connection,
            DOCUMENT,
            documents(3),
            progress=lambda _: seen.append(connection.scalar(interval)),
        )
        after = connection.scalar(interval)
    with engine.connect() as connection:
        later = connection.scalar(interval)
    assert (seen, after, later) == (["5s"], "5s", "0")
