"""A replica promoted to a primary of its own (a failover, or a mistake) while the application
routes reads to it: its marked reads go to the primary from the next checkout on, with one log
line, since a promoted former replica no longer replays the primary's writes (split brain).

A cluster of its own (``cluster.py``): a promotion cannot be undone. Which server answered is read
from ``current_setting('port')`` in the routed statement itself; both servers are out of recovery
once the replica is promoted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool, QueuePool

from pgvector_base.database import display
from pgvector_base.session import (
    READ_REPLICA,
    EngineSettings,
    async_session_factory,
    create_app_engine,
    create_async_app_engine,
    create_async_replica_engines,
    create_replica_engines,
    session_factory,
)

from . import cluster as harness

ROUTING = "pgvector_base.session"
# Which server ran the statement, and whether it is in recovery.
SERVED_BY = select(func.current_setting("port"), func.pg_is_in_recovery()).execution_options(
    **READ_REPLICA
)
REPLICA = (str(harness.REPLICA_PORT), True)
PRIMARY = (str(harness.PRIMARY_PORT), False)


@pytest.fixture
def cluster() -> Iterator[harness.Cluster]:
    with harness.start() as running:
        yield running


def promote(cluster: harness.Cluster) -> None:
    """Promote the replica, and return once it is out of recovery (``pg_promote`` waits)."""
    replica = create_engine(cluster.replica, poolclass=NullPool)
    with replica.connect() as connection:
        assert connection.scalar(text("SELECT pg_promote()"))
        assert not connection.scalar(text("SELECT pg_is_in_recovery()"))
    replica.dispose()


OUT = (
    "is out, its reads go elsewhere until it is back (tried again after 0s): the server is no "
    "longer in recovery (promoted, or a primary behind a replica URL); point "
    "DATABASE_REPLICA_URLS at the current replicas"
)


def test_a_promoted_replica_gets_no_more_marked_reads_and_one_log_line(
    cluster: harness.Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=ROUTING)
    primary = create_app_engine(cluster.primary)
    # Both drivers; retry_after=0: every request tries the promoted server again.
    replicas = [
        create_replica_engines([cluster.replica], EngineSettings(driver=driver))[0]
        for driver in ("psycopg", "psycopg2")
    ]
    factories = [session_factory(primary, [replica], retry_after=0) for replica in replicas]
    async_primary = create_async_app_engine(cluster.primary)
    (async_replica,) = create_async_replica_engines([cluster.replica])
    async_sessions = async_session_factory(async_primary, [async_replica], retry_after=0)

    def request(number: int) -> tuple[str, bool]:
        with factories[number % len(factories)]() as session:
            port, in_recovery = session.execute(SERVED_BY).one()
            return port, in_recovery

    async def async_requests() -> set[tuple[str, bool]]:
        async def one() -> tuple[str, bool]:
            async with async_sessions() as session:
                port, in_recovery = (await session.execute(SERVED_BY)).one()
                return port, in_recovery

        return set(await asyncio.gather(*(one() for _ in range(16))))

    def served(threads: ThreadPoolExecutor) -> set[tuple[str, bool]]:
        return set(threads.map(request, range(40)))

    async def main() -> None:
        with ThreadPoolExecutor(4) as threads:
            try:
                assert await asyncio.to_thread(served, threads) == {REPLICA}
                assert await async_requests() == {REPLICA}
                # Idle connections opened while it was a replica: promotion does not end them.
                for replica in [*replicas, async_replica.sync_engine]:
                    assert isinstance(replica.pool, QueuePool)
                    assert replica.pool.checkedin() > 1
                await asyncio.to_thread(promote, cluster)
                assert await asyncio.to_thread(served, threads) == {PRIMARY}
                assert await async_requests() == {PRIMARY}
            finally:
                await async_primary.dispose()
                await async_replica.dispose()
                primary.dispose()
                for replica in replicas:
                    replica.dispose()

    asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == ROUTING]
    assert sorted(lines) == sorted(
        f"Read replica {display(replica.url)} {OUT}"
        for replica in [*replicas, async_replica.sync_engine]
    )
