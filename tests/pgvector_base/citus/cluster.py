"""A Citus cluster of its own, or ``CITUS_TEST_URL``'s: the benchmark's helper
(``benchmarks/bench/citus_cluster.py``), shared with the Citus tests."""

from benchmarks.bench.citus_cluster import URL_ENV, Cluster, node_url, start, unavailable

__all__ = ["URL_ENV", "Cluster", "node_url", "start", "unavailable"]
