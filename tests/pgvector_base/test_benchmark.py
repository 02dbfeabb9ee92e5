"""The benchmark still runs: each part of ``python -m benchmarks.bench`` on a toy table, end to end.

Figures at this size mean nothing, so a missed goal (exit status 1) is accepted; a crash is not.
The benchmark's figures live in ``benchmarks/results.md``, never in a test (docs/benchmark.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from benchmarks.bench.datasets import glove
from sqlalchemy.engine import URL

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
RESULTS = REPOSITORY_ROOT / "benchmarks" / "results.md"
TOY = ["--dim", "32", "--queries", "20", "--duration", "1", "--clients", "1,2", "--tasks", "1,4"]
# Rows of each part's toy table: enough for the planner to choose the HNSW index over a sort. The
# scaling part turns sequential scans off for its searches, so fewer do for it (its smallest size
# is a tenth of them). The quantized part runs on two data sets, so it gets fewer, to stay quick.
ROWS = {"scaling": 15000, "quantized": 5000}
CHARTS = ("recall_latency.png", "throughput.png")

# Each part's table rows and goals that its output must show.
EXPECTED = {
    "load": [
        "| server: COPY FROM a file (binary) |",
        "| loader: numpy column batch |",
        "| loader: rows of Python lists |",
        "| loader: rows of Python lists, psycopg 3 over the server's COPY from a file |",
        "| loader: rows of Python lists (psycopg2) over the same through psycopg 3 |",
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
        "| 2 | ",
    ],
    "async": [
        "| Async tasks, one process, a session per request (HNSW, ef_search = 40) |",
        "| 4 tasks: raw async psycopg, same SQL |",
        "| 4 tasks: pgbench -M simple |",
        "| async nearest_keys() QPS over raw async psycopg's, N = 1 tasks |",
        "| async nearest_keys() QPS over raw async psycopg's, N = 4 tasks |",
    ],
    # The part checks that the routed searches, and only they, were served by the replica.
    "replica": [
        "| nearest_keys(), a request at a time: median latency, ms |",
        "| nearest(), a request at a time: median latency, ms |",
        "| nearest_keys(), 4 async tasks: QPS |",
        "on a 2-core machine it adds no capacity",
    ],
    "hybrid": [
        "| VectorSearch.nearest() |",
        "| HybridSearch.search(), depth = 40 |",
        "| HybridSearch.search(), depth = 100 |",
    ],
    "prepared": [
        "| nearest_keys | close |",
        "| nearest | commit |",
    ],
    "backfill": [
        "| backfill(), free embed function, batches of 500 |",
        "| reader p99 ms, nearest_keys() on item |",
        "| backfill rows/s over the server's UPDATE ... FROM |",
    ],
    "startup": [
        "| alembic current: stock Alembic (alembic init's generic env.py) |",
        "over stock Alembic's |",
    ],
    "quantized": [
        "| vector HNSW |",
        "| halfvec expression HNSW, 2x re-ranked |",
        "| binary quantization HNSW, 8x re-ranked |",
        "| halfvec index size over the vector index's (synthetic, 5,000 x 32) |",
    ],
    "tenants": ["| 0.1% | 20 | exact |", "| 50.0% | 10,000 | partition |"],
    # A tenth of the rows up to twice as many.
    "scaling": ["| 1,500 |", "| 3,750 |", "| 7,500 |", "| 15,000 |", "| 30,000 |"],
}


def run_part(part: str, server_url: URL, *options: str) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks.bench --only part`` on the toy table; it must not crash."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench",
            "--only",
            part,
            "--rows",
            str(ROWS.get(part, 20000)),
            *TOY,
            *options,
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
    return done


@pytest.mark.parametrize("part", sorted(set(EXPECTED) - {"query"}))
def test_each_part_runs_and_writes_nothing(part: str, server_url: URL) -> None:
    if part == "load" and os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("the server's COPY bound needs the server on this machine: the embedded one")
    results_before = RESULTS.read_bytes()

    done = run_part(part, server_url)

    for line in EXPECTED[part]:
        assert line in done.stdout, f"{line!r} missing from:\n{done.stdout}"
    assert RESULTS.read_bytes() == results_before, "--only must not replace the committed results"


def test_the_query_part_writes_its_results_and_charts_where_asked(
    server_url: URL, tmp_path: Path
) -> None:
    results_before = RESULTS.read_bytes()

    done = run_part("query", server_url, "--output", str(tmp_path))

    for line in EXPECTED["query"]:
        assert line in done.stdout, f"{line!r} missing from:\n{done.stdout}"
    assert (tmp_path / "results.md").read_text() == done.stdout.removesuffix("\n")
    written = json.loads((tmp_path / "results.json").read_text())
    assert [t["clients"] for t in written["throughput"]] == [1, 2]
    for chart in CHARTS:
        assert f"![{chart}]({chart})" in done.stdout
        pixels = matplotlib.image.imread(tmp_path / chart)
        # A picture of its own size, not a blank canvas.
        assert pixels.shape[:2] == (500, 800)
        assert pixels.std() > 0.05
    assert RESULTS.read_bytes() == results_before, "--output elsewhere leaves the committed results"


def test_glove_is_read_as_unit_vectors_or_its_absence_said_in_one_line() -> None:
    """The first words and vector of the GloVe 6B 50d file as Stanford publishes it
    ("the 0.418 0.24968 -0.41242 0.1217 0.34527 ..."), when the optional package is installed."""
    found, missing = glove(1000)
    if found is None:
        assert missing.endswith("is not installed (poetry install --with bench)")
        return
    assert found.words[:5] == ["the", ",", ".", "of", "to"]
    assert found.vectors.shape == (1000, 50)
    assert found.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(found.vectors, axis=1), 1, atol=1e-6)
    first = np.array([0.418, 0.24968, -0.41242, 0.1217, 0.34527])
    ratios = found.vectors[0, :5] / first
    assert np.allclose(ratios, ratios[0], rtol=1e-5)  # the published values, scaled by one factor
    assert "the 1,000 most frequent words" in found.source
