"""The benchmark's Citus part (``benchmarks/bench/citus.py``) runs end to end on a toy table, on
the tests' cluster; its figures at this size mean nothing, and none is asserted."""

from __future__ import annotations

import pytest
from benchmarks.bench import citus

from . import cluster as harness


def test_the_citus_part_runs_and_prints_its_table(
    citus_cluster: harness.Cluster,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(harness.URL_ENV, citus_cluster.url.render_as_string(hide_password=False))
    citus.main(
        ["--rows", "600", "--dim", "16", "--queries", "5", "--duration", "1", "--repeats", "1"]
    )
    table = capsys.readouterr().out
    for figure in ("load, rows/s", "HNSW build, s", "nearest_keys p50, ms", "recall@10"):
        assert f"| {figure} |" in table, table
