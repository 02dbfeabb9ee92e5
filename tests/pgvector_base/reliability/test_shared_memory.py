"""A parallel index build on a server short of shared memory ends in one line, and the advice works.

A parallel HNSW build allocates all of ``maintenance_work_mem`` as shared memory, from
``/dev/shm``, and Docker gives a container 64 MB of it: a first load into the compose server, or a
migration that builds an index on a full table, can run out. The server here has 16 MB, and its
database plans a parallel build for a table of any size, so a few rows show it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from app.models import EMBEDDING_DIM
from pgvector_base.database import DATABASE_URL_ENV

from . import servers
from .conftest import PASSWORD, scalars
from .revisions import REPOSITORY_ROOT, Migrations, failed_line, shipped_head

ROWS = 50
ADVICE = (
    "ran out of shared memory (/dev/shm) during a parallel index build, which takes all of "
    "maintenance_work_mem; use less (pgvector-app load --maintenance-work-mem 48MB), build "
    "without parallel workers (max_parallel_maintenance_workers = 0), or give the server a larger "
    "/dev/shm (shm_size in docker-compose.yaml)"
)


@pytest.fixture(scope="module")
def server() -> Iterator[servers.Server]:
    """A PostgreSQL + pgvector server with 16 MB of ``/dev/shm``."""
    if os.geteuid() != 0:
        pytest.skip("only root can give a server a /dev/shm of its own; CI runs as root")
    with servers.start(servers.EMBEDDED_BIN, PASSWORD, shm_size="16m") as server:
        yield server


@pytest.fixture
def database(server: servers.Server, migrations: Migrations) -> Iterator[str]:
    """``DATABASE_URL`` of a fresh database on that server, migrated to the shipped head, where
    every table is large enough for a parallel index build."""
    admin = create_engine(server.url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text("CREATE DATABASE app"))
    url = server.url("app").render_as_string(hide_password=False)
    upgraded = migrations.run("upgrade", "head", env={DATABASE_URL_ENV: url})
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    with admin.connect() as connection:
        connection.execute(text("ALTER DATABASE app SET min_parallel_table_scan_size = 0"))
    yield url
    with admin.connect() as connection:
        connection.execute(text("DROP DATABASE app WITH (FORCE)"))
    admin.dispose()


def products(path: Path) -> Path:
    """A JSON Lines file of ``ROWS`` products."""
    vectors = np.random.default_rng(9).standard_normal((ROWS, EMBEDDING_DIM)).tolist()
    path.write_text(
        "".join(
            json.dumps({"id": i, "name": f"lamp {i}", "description": "", "embedding": v}) + "\n"
            for i, v in enumerate(vectors, 1)
        )
    )
    return path


def pgvector_app(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``pgvector-app ARGS`` against ``url``, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=REPOSITORY_ROOT,
        env={**os.environ, DATABASE_URL_ENV: url},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_a_first_load_short_of_shared_memory_fails_in_one_line(
    server: servers.Server, database: str, tmp_path: Path
) -> None:
    path = products(tmp_path / "products.jsonl")
    parallel = ("--maintenance-work-mem", "64MB", "--parallel-workers", "1")

    failed = pgvector_app(database, "load", str(path), *parallel)
    retried = pgvector_app(database, "load", str(path), "--maintenance-work-mem", "48MB")

    assert (failed.returncode, failed.stdout) == (1, "")
    # Before the error, the command's progress log says which index it was building.
    assert failed.stderr.splitlines() == [
        "Building index ix_product_embedding_hnsw",
        f"pgvector-app: error: PostgreSQL at 127.0.0.1:{server.port} {ADVICE}",
    ]
    assert retried.returncode == 0, retried.stderr
    assert scalars(database, "SELECT count(*) FROM product") == [ROWS]


def test_a_migration_short_of_shared_memory_fails_in_one_line(
    server: servers.Server, database: str, migrations: Migrations, tmp_path: Path
) -> None:
    """With the server's defaults (64MB, up to 2 workers), an index on a full table is built by
    one worker and 64 MB of shared memory."""
    loaded = pgvector_app(
        database, "load", str(products(tmp_path / "p.jsonl")), "--parallel-workers", "0"
    )
    assert loaded.returncode == 0, loaded.stderr
    migrations.add(
        "l2 index",
        """
        op.create_index(
            "ix_product_embedding_l2",
            "product",
            ["embedding"],
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_l2_ops"},
        )
        """,
    )

    failed = migrations.run("upgrade", "head", env={DATABASE_URL_ENV: database})

    assert failed_line(failed) == f"FAILED: PostgreSQL at 127.0.0.1:{server.port} {ADVICE}"
    assert PASSWORD not in failed.stdout + failed.stderr
    assert scalars(database, "SELECT version_num FROM alembic_version") == [shipped_head()]
