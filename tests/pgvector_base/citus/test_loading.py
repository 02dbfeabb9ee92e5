"""Loading into a distributed table: every row stored bit for bit, the first load's index dropped
and rebuilt on every shard with settings that reach the shards' builds, a bad row named by its
line before it is sent, and one a shard rejects by its key.

Stored vectors are read back in the server's binary output (``vector_send``) and compared with
pgvector's binary format written here with ``struct``, an encoder other than the loader's.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    Table,
    create_engine,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from pgvector_base.loading import LoadError, copy_rows, load
from pgvector_base.session import set_local

from . import cluster as harness
from .conftest import CitusDatabase

DIMENSIONS = 8
SHARDS = 4
METADATA = MetaData()
ITEM = Table(
    "citus_item",
    METADATA,
    Column("tenant", Integer, primary_key=True),
    Column("id", BigInteger, primary_key=True),
    Column("embedding", VECTOR(DIMENSIONS), nullable=False),
    Index(
        "ix_citus_item_embedding",
        "embedding",
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_l2_ops"},
    ),
)


@pytest.fixture
def engine(citus_database: CitusDatabase) -> Iterator[Engine]:
    """A cluster database with the table, distributed and empty."""
    engine = create_engine(citus_database(), poolclass=NullPool)
    with engine.begin() as connection:
        METADATA.create_all(connection)
        connection.execute(
            text("SELECT create_distributed_table('citus_item', 'tenant', shard_count => :n)"),
            {"n": SHARDS},
        )
    yield engine
    engine.dispose()


def rows(count: int, first: int = 0) -> list[tuple[int, int, Any]]:
    vectors = np.random.default_rng(first).standard_normal((count, DIMENSIONS), dtype=np.float32)
    return [(n % 7, n, vectors[n - first]) for n in range(first, first + count)]


def binary(vector: Any) -> bytes:
    """pgvector's binary format: dimensions, a reserved int16, then big-endian float4s."""
    return struct.pack(f">hh{DIMENSIONS}f", DIMENSIONS, 0, *vector)


def stored(engine: Engine) -> dict[int, bytes]:
    with engine.connect() as connection:
        return {
            key: bytes(value)
            for key, value in connection.execute(
                text("SELECT id, vector_send(embedding) FROM citus_item")
            )
        }


def shard_indexes(engine: Engine) -> list[str]:
    """The definition of the HNSW index on each shard, from the workers."""
    with engine.connect() as connection:
        return sorted(
            connection.scalars(
                text(
                    "SELECT result FROM run_command_on_shards('citus_item', $$SELECT "
                    "pg_get_indexdef(indexrelid) FROM pg_index JOIN pg_class c "
                    "ON c.oid = indexrelid JOIN pg_am a ON a.oid = c.relam "
                    "WHERE indrelid = '%s'::regclass AND a.amname = 'hnsw'$$)"
                )
            )
        )


def test_a_first_load_stores_every_row_bit_for_bit_and_rebuilds_every_shards_index(
    engine: Engine,
) -> None:
    before = shard_indexes(engine)
    loaded = rows(2000)
    with engine.begin() as connection:
        result = load(connection, ITEM, loaded, batch_size=300)
    assert result.rows == 2000
    assert result.rebuilt_indexes == ("ix_citus_item_embedding",)
    assert stored(engine) == {key: binary(vector) for _, key, vector in loaded}
    after = shard_indexes(engine)
    assert len(after) == SHARDS
    assert after == before

    more = rows(50, first=2000)
    with engine.begin() as connection:
        assert copy_rows(connection, ITEM, more) == 50
        again = load(connection, ITEM, rows(10, first=2050))
    assert again.rebuilt_indexes == ()
    assert len(stored(engine)) == 2060


def test_a_row_a_shard_rejects_is_named_by_its_key(engine: Engine) -> None:
    # A shard's error carries no line of the coordinator's COPY (one server's does: see
    # tests/pgvector_base/test_loading.py); its detail names the row's key.
    duplicate = rows(1, first=3)[0]
    with pytest.raises(DBAPIError) as failed, engine.begin() as connection:
        load(connection, ITEM, [*rows(6), duplicate], batch_size=4)
    assert "duplicate key value violates unique constraint" in str(failed.value.orig)
    assert "Key (tenant, id)=(3, 3) already exists." in str(failed.value.orig)
    assert stored(engine) == {}
    assert len(shard_indexes(engine)) == SHARDS


def test_a_bad_row_is_refused_before_it_is_sent(engine: Engine) -> None:
    bad = (1, 99, [1.0] * (DIMENSIONS - 1))
    with pytest.raises(LoadError) as failed, engine.begin() as connection:
        load(connection, ITEM, [*rows(3), bad])
    assert str(failed.value).startswith("line 4: embedding"), failed.value
    assert stored(engine) == {}


def test_settings_made_for_a_build_reach_the_shards_builds(engine: Engine) -> None:
    # What load does with BuildSettings (set_local, then CREATE INDEX), seen through a setting
    # whose effect on a shard can be observed: lock_timeout, while a worker's session holds a
    # lock on one shard. Only a build that got the setting gives up; the coordinator's own lock
    # is free. (maintenance_work_mem would show as pgvector's notice, which Citus does not relay.)
    with engine.connect() as connection:
        shard, host, port = connection.execute(
            text(
                "SELECT shard_name('citus_item', shardid), nodename, nodeport FROM citus_shards "
                "WHERE table_name = 'citus_item'::regclass ORDER BY shardid LIMIT 1"
            )
        ).one()
    assert engine.url.database is not None
    worker = create_engine(
        harness.node_url(engine.url, host, port, engine.url.database), poolclass=NullPool
    )
    try:
        with worker.connect() as holder:
            holder.execute(text("SET LOCAL citus.enable_manual_changes_to_shards = on"))
            holder.execute(text(f"LOCK TABLE {shard} IN ROW EXCLUSIVE MODE"))
            with engine.connect() as connection:
                # A guard: without the setting on the shard, the build would wait this long.
                connection.execute(text("SELECT set_config('statement_timeout', '20s', true)"))
                set_local(connection, {"lock_timeout": "100ms"})
                with pytest.raises(DBAPIError, match="canceling statement due to lock timeout"):
                    connection.execute(text("CREATE INDEX ix_citus_item_again ON citus_item (id)"))
            holder.rollback()
    finally:
        worker.dispose()
