"""Several runners at once share the rows, directly and through a transaction-mode PgBouncer, on
the sync engine (threads) and the async one (tasks of one event loop).

Each runner's first embed call waits until the other's has begun, so both hold a claimed batch at
the same moment: without ``SKIP LOCKED`` the second would wait for the first's rows (and the wait
would never end), and with a claim that did not lock they would embed the same rows. Every source
must be embedded exactly once, and every row hold the embedding of its source.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from pgvector_base.backfill import abackfill, backfill
from pgvector_base.session import EngineSettings, create_app_engine, create_async_app_engine
from tests.pgvector_base import pgbouncer as harness

from .conftest import fill, wrong_rows
from .embedder import Doc, vectors

ROWS = 4000
BATCH = 250
RUNNERS = 2
# Bounds a broken run (the runners never meeting), not a wait for anything.
MEET_TIMEOUT = 30.0


@pytest.fixture(params=["direct", "pgbouncer"])
def app_url(request: pytest.FixtureRequest, doc_url: URL, server_url: URL) -> Any:
    """The database's URL as the application sees it: direct, or through a transaction pool."""
    if request.param == "direct":
        yield doc_url
        return
    if harness.binary() is None:
        pytest.skip(harness.SKIP_REASON)
    with harness.start(server_url, pool_mode="transaction", pool_size=RUNNERS) as bouncer:
        yield bouncer.url(doc_url)


SETTINGS = EngineSettings(pool_size=1, max_overflow=0)


def test_sync_runners_embed_every_row_once(app_url: URL, doc_engine: Engine) -> None:
    fill(doc_engine, 1, ROWS)
    embedded: list[str] = []
    lock = threading.Lock()
    meet = threading.Barrier(RUNNERS, timeout=MEET_TIMEOUT)

    def runner() -> None:
        first = True

        def embed(sources: list[Any]) -> npt.NDArray[np.float32]:
            nonlocal first
            with lock:
                embedded.extend(sources)
            if first:
                first = False
                meet.wait()
            return vectors(sources)

        engine = create_app_engine(app_url, SETTINGS)
        try:
            backfill(engine, Doc.embedding_v2, ["body"], embed, batch_size=BATCH)
        finally:
            engine.dispose()

    errors = run_threads(runner)
    assert errors == []
    assert_each_once(embedded, doc_engine)


def run_threads(target: Callable[[], None]) -> list[BaseException]:
    """Run ``target`` in ``RUNNERS`` threads at once; what they raised."""
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            target()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guarded) for _ in range(RUNNERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_async_runners_embed_every_row_once(app_url: URL, doc_engine: Engine) -> None:
    fill(doc_engine, 1, ROWS)
    embedded: list[str] = []

    async def main() -> None:
        arrived = 0
        met = asyncio.Event()

        async def runner() -> None:
            first = True

            async def embed(sources: list[Any]) -> npt.NDArray[np.float32]:
                nonlocal first, arrived
                embedded.extend(sources)
                if first:
                    first = False
                    arrived += 1
                    if arrived == RUNNERS:
                        met.set()
                    await asyncio.wait_for(met.wait(), MEET_TIMEOUT)
                return vectors(sources)

            engine = create_async_app_engine(app_url, SETTINGS)
            try:
                await abackfill(engine, Doc.embedding_v2, ["body"], embed, batch_size=BATCH)
            finally:
                await engine.dispose()

        await asyncio.gather(*(runner() for _ in range(RUNNERS)))

    asyncio.run(main())
    assert_each_once(embedded, doc_engine)


def assert_each_once(embedded: list[str], engine: Engine) -> None:
    """Every row's source embedded exactly once, and stored as embedded."""
    assert len(embedded) == ROWS
    assert [source for source, times in Counter(embedded).items() if times > 1] == []
    assert wrong_rows(engine) == []
