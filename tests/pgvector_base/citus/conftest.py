"""The Citus tests' cluster: started once per test session (once per pytest-xdist worker, each in
a folder of its own), or ``CITUS_TEST_URL``'s; without either the tests skip and say why.

Citus's metadata is per database, so each test module (or test) gets a database of its own with
Citus and the ``vector`` extension on every node (:func:`citus_database`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from . import cluster as harness

CitusDatabase = Callable[[], URL]


@pytest.fixture(scope="session")
def citus_cluster() -> Iterator[harness.Cluster]:
    """The running cluster; skips the test when none can be had."""
    reason = harness.unavailable()
    if reason is not None:
        pytest.skip(reason)
    with harness.start() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def citus_database(citus_cluster: harness.Cluster) -> Iterator[CitusDatabase]:
    """A factory of new databases on the cluster, each with ``vector``; dropped at the end from
    a cluster given by URL (a cluster of our own goes with them)."""
    created: list[URL] = []

    def create() -> URL:
        url = citus_cluster.create_database()
        created.append(url)
        engine = create_engine(url, poolclass=NullPool)
        with engine.begin() as connection:
            # On the coordinator; Citus creates it on the workers too.
            connection.execute(text("CREATE EXTENSION vector"))
        engine.dispose()
        return url

    yield create
    if not citus_cluster.temporary:
        for url in created:
            citus_cluster.drop_database(url)
