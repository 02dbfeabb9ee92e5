"""``pgvector-app load`` on a server short of shared memory: one line, and its advice works.

The loader's own behaviour there is tested with a table of its own
(``tests/pgvector_base/reliability/test_shared_memory.py``); this is the example's command line
around it, on the example's migrated ``product`` table.
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
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from app.models import EMBEDDING_DIM
from pgvector_base.database import DATABASE_URL_ENV
from tests.pgvector_base.reliability import servers
from tests.pgvector_base.reliability.conftest import PASSWORD, scalars
from tests.pgvector_base.reliability.test_shared_memory import ADVICE

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
ROWS = 50


@pytest.fixture(scope="module")
def database() -> Iterator[URL]:
    """A database migrated to head on a server with 16 MB of ``/dev/shm``,
    where every table is large enough for a parallel index build."""
    if os.geteuid() != 0:
        pytest.skip("only root can give a server a /dev/shm of its own; CI runs as root")
    with servers.start(servers.EMBEDDED_BIN, PASSWORD, shm_size="16m") as server:
        admin = create_engine(server.url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with admin.connect() as connection:
            connection.execute(text("CREATE DATABASE app"))
        url = server.url("app")
        upgraded = run(url, "alembic", "upgrade", "head")
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        with admin.connect() as connection:
            connection.execute(text("ALTER DATABASE app SET min_parallel_table_scan_size = 0"))
        admin.dispose()
        yield url


def run(url: URL, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m ARGS`` against ``url``, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPOSITORY_ROOT,
        env={**os.environ, DATABASE_URL_ENV: url.render_as_string(hide_password=False)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


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


def test_a_first_load_short_of_shared_memory_fails_in_one_line(
    database: URL, tmp_path: Path
) -> None:
    path = products(tmp_path / "products.jsonl")
    parallel = ("--maintenance-work-mem", "64MB", "--parallel-workers", "1")

    failed = run(database, "app.cli", "load", str(path), *parallel)
    retried = run(database, "app.cli", "load", str(path), "--maintenance-work-mem", "48MB")

    assert (failed.returncode, failed.stdout) == (1, "")
    # Before the error, the command's progress log says which index it was building.
    assert failed.stderr.splitlines() == [
        "Building index ix_product_embedding_hnsw",
        f"pgvector-app: error: PostgreSQL at 127.0.0.1:{database.port} {ADVICE}",
    ]
    assert retried.returncode == 0, retried.stderr
    assert scalars(database, "SELECT count(*) FROM product") == [ROWS]
