"""The async service example of docs/application.md ("Async services"), run as the page shows
it, with the page's ``Item`` model, against a real primary and streaming replica (``cluster.py``).

Its answers are the primary's own for the same search (the replica replays the primary's index),
and which server ran each search is read on the connection that ran it.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Engine, Index, create_engine, event, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pgvector_base.database import DATABASE_URL_ENV
from pgvector_base.loading import load
from pgvector_base.search import SearchSettings, VectorSearch
from pgvector_base.session import REPLICA_URLS_ENV

from . import cluster as harness

ROOT = Path(__file__).resolve().parents[3]
GUIDE = ROOT / "docs" / "application.md"
MARKER = "<!-- tested by tests/pgvector_base/replicas/test_docs_example.py -->"
PYTHON = re.compile(r"```python\n(.*?)```", re.DOTALL)
ROWS = 1000
DIMENSIONS = 384  # the page's Item


def example_code() -> tuple[str, str]:
    """The page's first Python block (the ``Item`` model) and the block after the marker."""
    guide = GUIDE.read_text()
    model = PYTHON.search(guide)
    assert model is not None
    service = PYTHON.search(guide, guide.index(MARKER))
    assert service is not None
    return model.group(1), service.group(1)


@pytest.fixture(scope="module")
def namespace() -> dict[str, Any]:
    """What the page's code defines, on a ``Base`` of the test's own."""

    class Base(DeclarativeBase):
        pass

    defined: dict[str, Any] = {
        "__name__": __name__,  # where SQLAlchemy resolves the model's annotations
        "Base": Base,
        "BigInteger": BigInteger,
        "Index": Index,
        "Mapped": Mapped,
        "mapped_column": mapped_column,
        "VECTOR": VECTOR,
    }
    for code in example_code():
        exec(compile(code, str(GUIDE), "exec"), defined)
    return defined


@pytest.fixture(scope="module")
def cluster(namespace: dict[str, Any]) -> Iterator[harness.Cluster]:
    """A primary with the page's ``item`` table and rows, and its replica."""
    with harness.start() as running:
        engine = create_engine(running.primary)
        generator = random.Random(4)
        with engine.begin() as connection:
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            namespace["Base"].metadata.create_all(connection)
            item = namespace["Item"].__table__
            rows = [
                (n, n % 5, [generator.uniform(-1, 1) for _ in range(DIMENSIONS)])
                for n in range(ROWS)
            ]
            load(connection, item, rows)
        engine.dispose()
        running.wait_for_replay()
        yield running


def test_the_documented_async_service_searches_on_the_replica(
    namespace: dict[str, Any], cluster: harness.Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, cluster.primary.render_as_string(hide_password=False))
    monkeypatch.setenv(REPLICA_URLS_ENV, cluster.replica.render_as_string(hide_password=False))
    generator = random.Random(5)
    queries = [[generator.uniform(-1, 1) for _ in range(DIMENSIONS)] for _ in range(12)]
    item = namespace["Item"]
    primary = create_engine(cluster.primary)
    with Session(primary) as session:
        search = VectorSearch(item, item.embedding)
        settings = SearchSettings(ef_search=80)  # the handler's
        expected = [
            [key for key, _ in search.nearest_keys(session, query, 10, settings=settings)]
            for query in queries
        ]
    primary.dispose()
    served: list[bool] = []

    def after(connection: Any, _: Any, statement: str, *rest: Any) -> None:
        if "ORDER BY" in statement:
            with closing(connection.connection.dbapi_connection.cursor()) as raw:
                raw.execute("SELECT pg_is_in_recovery()")
                served.append(raw.fetchone()[0])

    # On every engine, for the example makes its own.
    event.listen(Engine, "after_cursor_execute", after)
    try:
        answers = asyncio.run(namespace["serve"](queries))
    finally:
        event.remove(Engine, "after_cursor_execute", after)
    assert answers == expected
    assert served == [True] * len(queries)
