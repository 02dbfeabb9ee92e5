"""The benchmark still runs: each part of ``benchmarks/bench.py`` on a toy table, end to end.

Figures at this size mean nothing, so a missed goal (exit status 1) is accepted; a crash is not.
The benchmark's figures live in ``benchmarks/results.md``, never in a test (docs/benchmark.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPOSITORY_ROOT / "benchmarks" / "bench.py"
RESULTS = REPOSITORY_ROOT / "benchmarks" / "results.md"
TOY = ["--rows", "20000", "--dim", "32", "--queries", "20", "--duration", "1", "--clients", "1"]

# Each part's table rows and goals that its output must show.
EXPECTED = {
    "load": [
        "| server: COPY FROM a file (binary) |",
        "| loader: numpy column batch |",
        "| loader: rows of Python lists |",
        "| loader: rows of Python lists over the server's COPY from a file |",
    ],
    "build": [
        "| server defaults |",
        "| alembic upgrade |",
        "| HNSW build through alembic upgrade over BuildSettings() |",
    ],
    "query": [
        "| exact scan |",
        "| HNSW, iterative_scan = relaxed_order |",
        "| VectorSearch.nearest_keys() |",
        "| Clients (HNSW, ef_search = 40) |",
    ],
}


@pytest.mark.parametrize("part", sorted(EXPECTED))
def test_each_part_runs_and_writes_nothing(part: str, server_url: URL) -> None:
    if part == "load" and os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("the server's COPY bound needs the server on this machine: the embedded one")
    results_before = RESULTS.read_bytes()

    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--only",
            part,
            *TOY,
            "--server-url",
            server_url.render_as_string(hide_password=False),
        ],
        cwd=REPOSITORY_ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )

    # 1 is also Python's status for an uncaught exception, hence the second check.
    assert done.returncode in (0, 1), done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    for line in EXPECTED[part]:
        assert line in done.stdout, f"{line!r} missing from:\n{done.stdout}"
    assert RESULTS.read_bytes() == results_before, "--only must not replace the committed results"
