"""A primary and a streaming replica of its own: the benchmark's helper
(``benchmarks/bench/cluster.py``), shared with the replica tests."""

from benchmarks.bench.cluster import PRIMARY_PORT, REPLICA_PORT, Cluster, start

__all__ = ["PRIMARY_PORT", "REPLICA_PORT", "Cluster", "start"]
