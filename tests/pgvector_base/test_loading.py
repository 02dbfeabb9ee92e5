"""Bulk loading by binary COPY: exact round trips, the first-load order, all-or-nothing failures.

Round trips compare the server's own binary output (``vector_send`` and friends) with what
pgvector-python's encoders produce for the same input, so float4 and float2 rounding is checked
bit for bit against an implementation other than the loader's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pgvector import HalfVector, SparseVector, Vector
from pgvector.sqlalchemy import HALFVEC, SPARSEVEC, VECTOR
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Engine,
    MetaData,
    SmallInteger,
    String,
    Table,
    create_engine,
    text,
)
from sqlalchemy.engine import URL
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.models import EMBEDDING_DIM, Base
from pgvector_base.loading import BuildSettings, LoadError, SettingError, copy_rows, load

PRODUCT: Table = Base.metadata.tables["product"]
DIM = 8


class LoadingBase(DeclarativeBase):
    """Test-only tables for the types the loader encodes besides the product's."""


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


SAMPLE: Table = LoadingBase.metadata.tables["loading_sample"]
PACKED: Table = LoadingBase.metadata.tables["loading_packed"]


@pytest.fixture(scope="module")
def engine(migrated_database_url: URL) -> Iterator[Engine]:
    """The module's database: the product table from the migrations, plus the sample table."""
    engine = create_engine(migrated_database_url)
    LoadingBase.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def empty_tables(engine: Engine) -> None:
    """Each test starts from empty tables."""
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE product, loading_sample, loading_packed"))


def products(count: int, first: int = 1) -> list[tuple[Any, ...]]:
    """Products with random float64 embeddings, which float4 storage must round."""
    rng = np.random.default_rng(first)
    vectors = rng.standard_normal((count, EMBEDDING_DIM)).tolist()
    return [
        (i, f"product {i}", "ünïcode ✓", vectors[i - first]) for i in range(first, first + count)
    ]


def count(engine: Engine, table: str = "product") -> int:
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
    rows = products(50)
    with engine.begin() as connection:
        assert copy_rows(connection, PRODUCT, rows, batch_size=7) == 50
        stored = connection.execute(
            text("SELECT id, name, description, vector_send(embedding) FROM product ORDER BY id")
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
        "SELECT pg_get_indexdef('ix_product_embedding_hnsw'::regclass), "
        "'ix_product_embedding_hnsw'::regclass::oid"
    )
    statistics = text(
        "SELECT histogram_bounds::text FROM pg_stats WHERE tablename = 'product' AND attname = 'id'"
    )
    with engine.connect() as connection:
        before, before_oid = connection.execute(index).one()

    with engine.begin() as connection:
        first = load(connection, PRODUCT, products(30, first=1001), batch_size=8)
    with engine.connect() as connection:
        after_first, first_oid = connection.execute(index).one()
        histogram = connection.scalar(statistics)
    with engine.begin() as connection:
        second = load(connection, PRODUCT, products(5, first=1031))
    with engine.connect() as connection:
        after_second, second_oid = connection.execute(index).one()

    assert first.rows == 30
    assert first.rebuilt_indexes == ("ix_product_embedding_hnsw",)
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
            PRODUCT,
            products(300),
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
        for row in products(3):
            read.append(row[0])
            yield row

    with pytest.raises(SettingError) as refused, engine.begin() as connection:
        load(connection, PRODUCT, rows(), build=BuildSettings(maintenance_work_mem="lots"))
    assert refused.value.name == "maintenance_work_mem"
    assert str(refused.value) == 'invalid value for parameter "maintenance_work_mem": "lots"'
    assert read == []


def test_progress_is_reported_per_batch(engine: Engine) -> None:
    batches: list[int] = []
    with engine.begin() as connection:
        copy_rows(connection, PRODUCT, products(7), batch_size=3, progress=batches.append)
    assert batches == [3, 3, 1]


def bad(position: int, value: Any) -> tuple[Any, ...]:
    """Product 6 with the value at ``position`` replaced."""
    row = products(1, first=6)[0]
    return (*row[:position], value, *row[position + 1 :])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (bad(3, [0.5] * 3), "embedding: expected 1536 dimensions, got 3"),
        (bad(3, [math.nan] * 1536), "embedding: NaN not allowed in vector"),
        (bad(3, [1.0] * 1535 + [-math.inf]), "embedding: infinite value not allowed in vector"),
        (bad(3, [1e39] * 1536), "embedding: a value is outside the range of vector"),
        (bad(3, ["0.5"] * 1536), "embedding: expected a list of numbers"),
        (bad(3, "[0.5, 0.5]"), "embedding: expected a list of numbers, got str"),
        (bad(0, "12"), "id: expected an integer, got '12'"),
        (bad(0, 2**63), "id: 9223372036854775808 is out of range for bigint"),
        (bad(1, None), "name must not be null"),
        (bad(1, "x" * 201), "name: 201 characters, more than the column's 200"),
        (bad(2, "a\x00b"), "description: contains a NUL character"),
        (bad(3, [0.5] * 1536)[:3], "expected 4 values (id, name, description, embedding)"),
    ],
)
def test_a_bad_row_stops_the_load_and_leaves_nothing(
    engine: Engine, row: tuple[Any, ...], message: str
) -> None:
    """The bad row is line 6; in batches of 2, lines 1 to 4 were sent and must not remain."""
    with pytest.raises(LoadError) as failed, engine.begin() as connection:
        load(connection, PRODUCT, [*products(5), row], batch_size=2)
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
    rows = [*products(4), products(1, first=2)[0]]
    with pytest.raises(LoadError) as failed, engine.begin() as connection:
        load(connection, PRODUCT, rows, batch_size=3)
    assert str(failed.value) == (
        'line 5: duplicate key value violates unique constraint "pk_product": '
        "Key (id)=(2) already exists."
    )
    assert count(engine) == 0


def test_an_error_in_the_input_stops_the_load_and_leaves_nothing(engine: Engine) -> None:
    def rows() -> Iterator[tuple[Any, ...]]:
        yield from products(3)
        raise LoadError(4, "not JSON")

    with pytest.raises(LoadError, match="line 4: not JSON"), engine.begin() as connection:
        load(connection, PRODUCT, rows())
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


def test_a_column_type_without_an_encoder_is_refused(engine: Engine) -> None:
    documents = Table("documents", MetaData(), Column("body", JSON))
    with (
        pytest.raises(TypeError, match="column body has type JSON, which the binary loader"),
        engine.begin() as connection,
    ):
        copy_rows(connection, documents, [])
