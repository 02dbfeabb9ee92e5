"""Read replicas against a real streaming replica (``cluster.py``): a migration on the primary
reaches the replica, whose searches use the migrated index; marked reads are served by the
replica, everything else by the primary; a replica that stops loses no request.

Which server answered is read from ``pg_is_in_recovery()`` in the very statement that was routed,
not from the routing code's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    BigInteger,
    Computed,
    Engine,
    Index,
    Select,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import QueuePool

from pgvector_base.aio import AsyncHybridSearch, AsyncVectorSearch
from pgvector_base.database import DatabaseConfigError, display
from pgvector_base.search import HybridHit, HybridSearch, SearchSettings, VectorSearch
from pgvector_base.session import (
    READ_REPLICA,
    REPLICA_URLS_ENV,
    EngineSettings,
    ReadReplicas,
    async_session_factory,
    create_app_engine,
    create_async_app_engine,
    create_async_replica_engines,
    create_replica_engines,
    read_from_primary,
    replica_urls,
    session_factory,
    set_local,
)

from ..autogenerate.project import Project
from . import cluster as harness

ROWS = 3000
DIMENSIONS = 128
K = 5
# Ignored by the cluster's trust authentication; must never be printed.
PASSWORD = "s3cret-pw"
SKIPPED = "pgvector_base.session"


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "replica_doc"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    embedding: Mapped[list[float]] = mapped_column(VECTOR(DIMENSIONS))
    __table_args__ = (
        Index(
            "ix_replica_doc_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_l2_ops"},
        ),
    )


class Draft(Base):
    """Rows added and rolled back by the tests, kept apart so as to leave Doc's graph alone."""

    __tablename__ = "replica_draft"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    embedding: Mapped[list[float]] = mapped_column(VECTOR(DIMENSIONS))
    __table_args__ = (
        Index(
            "ix_replica_draft_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_l2_ops"},
        ),
    )


class Page(Base):
    """Text and vectors for hybrid search: a generated tsvector and its GIN index."""

    __tablename__ = "replica_page"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    document: Mapped[str] = mapped_column(
        TSVECTOR, Computed("to_tsvector('english', body)", persisted=True)
    )
    embedding: Mapped[list[float]] = mapped_column(VECTOR(DIMENSIONS))
    __table_args__ = (
        Index(
            "ix_replica_page_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_l2_ops"},
        ),
        Index("ix_replica_page_document", "document", postgresql_using="gin"),
    )


def vector(generator: random.Random) -> list[float]:
    return [generator.uniform(-1, 1) for _ in range(DIMENSIONS)]


QUERIES = [vector(random.Random(seed)) for seed in range(8)]


def search(query: list[float]) -> Select[int, bool]:
    """A marked search that also says which server ran it."""
    return (
        select(Doc.id, func.pg_is_in_recovery())
        .order_by(Doc.embedding.l2_distance(query))
        .limit(K)
        .execution_options(**READ_REPLICA)
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Cluster]:
    """The cluster, migrated on the primary by the template's own ``env.py``, with rows."""
    with harness.start() as running:
        engine = create_engine(running.primary)
        project = Project(engine, tmp_path_factory.mktemp("replicas") / "versions")
        project.revise(Base.metadata, message="replica doc")
        project.upgrade()
        generator = random.Random(0)
        with engine.begin() as connection:
            connection.execute(
                insert(Doc),
                [{"id": n, "embedding": vector(generator)} for n in range(ROWS)],
            )
            connection.execute(
                insert(Page),
                [
                    {"id": n, "body": f"w{n % 7} w{n % 11}", "embedding": vector(generator)}
                    for n in range(ROWS)
                ],
            )
            connection.execute(text("ANALYZE replica_doc"))
            connection.execute(text("ANALYZE replica_page"))
        engine.dispose()
        running.wait_for_replay()
        yield running


@pytest.fixture(scope="module")
def expected(cluster: harness.Cluster) -> dict[int, list[int]]:
    """Each query's answer from the primary, over a direct connection."""
    engine = create_engine(cluster.primary)
    with engine.connect() as connection:
        answers = {
            n: [row[0] for row in connection.execute(search(query))]
            for n, query in enumerate(QUERIES)
        }
    engine.dispose()
    return answers


def test_a_migration_on_the_primary_reaches_the_replica_whose_searches_use_its_index(
    cluster: harness.Cluster, expected: dict[int, list[int]]
) -> None:
    replica = create_engine(cluster.replica)
    with replica.connect() as connection:
        assert connection.scalar(text("SELECT pg_is_in_recovery()"))
        assert connection.scalar(
            text(
                "SELECT indisvalid FROM pg_index "
                "WHERE indexrelid = 'ix_replica_doc_embedding'::regclass"
            )
        )
        compiled = search(QUERIES[0]).compile(replica, compile_kwargs={"literal_binds": True})
        plan = "\n".join(connection.scalars(text(f"EXPLAIN {compiled}")))
        assert "Index Scan using ix_replica_doc_embedding" in plan, plan
        for n, query in enumerate(QUERIES):
            assert [row[0] for row in connection.execute(search(query))] == expected[n]
    replica.dispose()


def test_marked_reads_go_to_the_replica_and_everything_else_to_the_primary(
    cluster: harness.Cluster, expected: dict[int, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REPLICA_URLS_ENV, cluster.replica.render_as_string(hide_password=False))
    primary = create_app_engine(cluster.primary, EngineSettings())
    replicas = create_replica_engines()  # from DATABASE_REPLICA_URLS
    sessions = session_factory(primary, replicas)
    try:
        with sessions() as session:
            for n, query in enumerate(QUERIES):
                rows = session.execute(search(query)).all()
                assert [row[0] for row in rows] == expected[n]
                assert all(in_recovery for _, in_recovery in rows)
            assert not session.scalar(select(func.pg_is_in_recovery()))  # unmarked
            # A write, then a marked read in the same session: the primary, which has the row.
            session.add(Doc(id=ROWS, embedding=QUERIES[0]))
            session.flush()
            assert session.execute(search(QUERIES[0])).first() == (ROWS, False)
            session.commit()
        with sessions() as session:
            assert session.execute(search(QUERIES[1])).first()[1]  # type: ignore[index]
            read_from_primary(session)
            assert session.execute(search(QUERIES[0])).first() == (ROWS, False)
        with sessions() as session:
            session.delete(session.get_one(Doc, ROWS))
            session.commit()
        cluster.wait_for_replay()
    finally:
        primary.dispose()
        for engine in replicas:
            engine.dispose()


def test_a_session_keeps_to_one_replica_so_settings_made_on_it_reach_its_reads(
    cluster: harness.Cluster,
) -> None:
    # Two engines on the one replica: a session that switched between them would lose the setting.
    primary = create_app_engine(cluster.primary)
    replicas = create_replica_engines([cluster.replica, cluster.replica])
    sessions = session_factory(primary, replicas)
    setting = select(func.current_setting("hnsw.ef_search"), func.pg_is_in_recovery())
    marked = setting.execution_options(**READ_REPLICA)
    try:
        for _ in range(4):
            with sessions() as session:
                # What search does for per-query settings: a savepoint, SET LOCAL, the read.
                savepoint = session.begin_nested()
                connection = session.connection(bind_arguments={"clause": marked})
                set_local(connection, {"hnsw.ef_search": "123"})
                for _ in range(3):
                    assert session.execute(marked).one() == ("123", True)
                savepoint.rollback()
                value, in_recovery = session.execute(marked).one()
                assert in_recovery
                assert value != "123"  # the savepoint took it back
    finally:
        primary.dispose()
        for engine in replicas:
            engine.dispose()


def test_async_marked_reads_go_to_the_replica_and_see_their_own_writes_on_the_primary(
    cluster: harness.Cluster, expected: dict[int, list[int]]
) -> None:
    async def main() -> None:
        primary = create_async_app_engine(cluster.primary)
        replicas = create_async_replica_engines([cluster.replica])
        sessions = async_session_factory(primary, replicas)

        async def request(n: int) -> None:
            async with sessions() as session:
                rows = (await session.execute(search(QUERIES[n % len(QUERIES)]))).all()
                assert [row[0] for row in rows] == expected[n % len(QUERIES)]
                assert all(in_recovery for _, in_recovery in rows)

        try:
            await asyncio.gather(*(request(n) for n in range(16)))
            async with sessions() as session:
                session.add(Doc(id=ROWS + 1, embedding=QUERIES[2]))
                await session.flush()
                assert (await session.execute(search(QUERIES[2]))).first() == (ROWS + 1, False)
                await session.rollback()
        finally:
            await primary.dispose()
            for engine in replicas:
                await engine.dispose()

    asyncio.run(main())


Served = list[tuple[bool, str, str]]


@contextmanager
def searches_served(*engines: Engine | AsyncEngine) -> Iterator[Served]:
    """For each search sent through ``engines`` (a statement with ORDER BY), what the connection
    that ran it says right after it, in the search's own transaction and savepoint: whether its
    server is a replica, its ``hnsw.ef_search``, and its plan for the statement."""
    served: Served = []

    def after(connection: Any, _: Any, statement: str, parameters: Any, *rest: Any) -> None:
        if "ORDER BY" not in statement:
            return
        # The driver's cursor (or, async, SQLAlchemy's adapter of it), on the same connection.
        with closing(connection.connection.dbapi_connection.cursor()) as raw:
            raw.execute("SELECT pg_is_in_recovery(), current_setting('hnsw.ef_search')")
            in_recovery, ef_search = raw.fetchone()
            raw.execute(f"EXPLAIN {statement}", parameters)
            plan = "\n".join(row[0] for row in raw.fetchall())
        served.append((in_recovery, ef_search, plan))

    targets = [
        engine.sync_engine if isinstance(engine, AsyncEngine) else engine for engine in engines
    ]
    for target in targets:
        event.listen(target, "after_cursor_execute", after)
    try:
        yield served
    finally:
        for target in targets:
            event.remove(target, "after_cursor_execute", after)


def on_the_replica_by_its_index(served: Served, ef_search: str) -> bool:
    return bool(served) and all(
        in_recovery and setting == ef_search and "Index Scan using ix_replica_doc_embedding" in plan
        for in_recovery, setting, plan in served
    )


def test_vector_searches_run_on_the_replica_with_their_settings_on_the_same_connection(
    cluster: harness.Cluster,
) -> None:
    primary = create_app_engine(cluster.primary)
    (replica,) = create_replica_engines([cluster.replica])
    sessions = session_factory(primary, [replica])
    docs = VectorSearch(Doc, Doc.embedding)
    # At most ef_search rows come back from an HNSW scan (sometimes fewer): a setting that
    # reached another server than the search would let all K through.
    few = SearchSettings(ef_search=3)
    current = select(func.current_setting("hnsw.ef_search"), func.pg_is_in_recovery())
    try:
        with Session(primary) as direct:  # the primary's own answers, the same index replayed
            answers = [docs.nearest_keys(direct, query, K) for query in QUERIES]
        with sessions() as session, searches_served(primary, replica) as served:
            for n, query in enumerate(QUERIES):
                assert docs.nearest_keys(session, query, K) == answers[n]
                assert [hit.item.id for hit in docs.nearest(session, query, K)] == [
                    key for key, _ in answers[n]
                ]
            assert on_the_replica_by_its_index(served, "40")
            served.clear()
            assert len(docs.nearest_keys(session, QUERIES[0], K, settings=few)) <= 3
            assert len(docs.nearest(session, QUERIES[0], K, settings=few)) <= 3
            assert len(docs.neighbors_of(session, 7, K, settings=few)) <= 3
            assert on_the_replica_by_its_index(served, "3")
            # Rolled back with the search's savepoint, on the replica connection it was set on.
            marked = current.execution_options(**READ_REPLICA)
            assert session.execute(marked).one() == ("40", True)
            served.clear()
            docs.configure(session, few)
            assert len(docs.nearest_keys(session, QUERIES[1], K)) <= 3
            assert on_the_replica_by_its_index(served, "3")
        with sessions() as session:
            assert session.execute(current).one() == ("40", False)  # the primary: untouched
    finally:
        primary.dispose()
        replica.dispose()


@pytest.mark.parametrize("settings", [None, SearchSettings(ef_search=100)])
def test_a_session_with_pending_changes_searches_the_primary(
    cluster: harness.Cluster, settings: SearchSettings | None
) -> None:
    """A row added and not yet flushed is found by every search, as only the primary's
    transaction has it; with autoflush off it stays unflushed, and the searches still run on the
    primary, where the session is about to write."""
    primary = create_app_engine(cluster.primary)
    (replica,) = create_replica_engines([cluster.replica])
    sessions = session_factory(primary, [replica])
    drafts = VectorSearch(Draft, Draft.embedding)
    try:
        with sessions() as session:
            session.add(Draft(id=1, embedding=QUERIES[3]))
            assert drafts.nearest_keys(session, QUERIES[3], K, settings=settings)[0][0] == 1
            session.rollback()
            session.add(Draft(id=1, embedding=QUERIES[3]))
            assert drafts.nearest(session, QUERIES[3], K, settings=settings)[0].item.id == 1
            session.rollback()
        with sessions() as session, searches_served(primary, replica) as served:
            session.autoflush = False
            pending = Draft(id=1, embedding=QUERIES[3])
            session.add(pending)
            keys = drafts.nearest_keys(session, QUERIES[3], K, settings=settings)
            hits = drafts.nearest(session, QUERIES[3], K, settings=settings)
            assert 1 not in [key for key, _ in keys] + [hit.item.id for hit in hits]
            assert pending in session.new
            assert len(served) == 2
            assert not any(in_recovery for in_recovery, _, _ in served)
    finally:
        primary.dispose()
        replica.dispose()


def test_async_vector_searches_run_on_the_replica_with_their_settings(
    cluster: harness.Cluster,
) -> None:
    docs = AsyncVectorSearch(Doc, Doc.embedding)
    few = SearchSettings(ef_search=3)

    async def main() -> None:
        primary = create_async_app_engine(cluster.primary)
        replicas = create_async_replica_engines([cluster.replica])
        sessions = async_session_factory(primary, replicas)

        async def request(n: int) -> tuple[int, int]:
            async with sessions() as session:
                found = await docs.nearest_keys(session, QUERIES[n % len(QUERIES)], K)
                limited = await docs.nearest(session, QUERIES[n % len(QUERIES)], K, settings=few)
                return len(found), len(limited)

        try:
            with searches_served(primary, *replicas) as served:
                sizes = await asyncio.gather(*(request(n) for n in range(16)))
            assert all(found == K and limited <= 3 for found, limited in sizes)
            assert sorted(setting for _, setting, _ in served) == ["3"] * 16 + ["40"] * 16
            for ef_search in ("3", "40"):
                assert on_the_replica_by_its_index(
                    [each for each in served if each[1] == ef_search], ef_search
                )
        finally:
            await primary.dispose()
            for engine in replicas:
                await engine.dispose()

    asyncio.run(main())


def test_hybrid_searches_run_on_the_replica_with_ef_search_raised_there(
    cluster: harness.Cluster,
) -> None:
    """A depth of 100 raises ef_search on the replica's connection, for the statement alone; the
    answers are the primary's, sync and async."""
    pages = HybridSearch(Page, Page.embedding)
    deep = AsyncHybridSearch(Page, Page.embedding)

    def ids(hits: list[HybridHit[Page]]) -> list[tuple[int, int | None, int | None]]:
        return [(hit.item.id, hit.vector_rank, hit.text_rank) for hit in hits]

    primary = create_app_engine(cluster.primary)
    (replica,) = create_replica_engines([cluster.replica])
    sessions = session_factory(primary, [replica])
    current = select(func.current_setting("hnsw.ef_search"), func.pg_is_in_recovery())
    try:
        with Session(primary) as direct:
            answers = [ids(pages.search(direct, q, "w3", K, depth=100)) for q in QUERIES]
        with sessions() as session, searches_served(primary, replica) as served:
            for n, query in enumerate(QUERIES):
                assert ids(pages.search(session, query, "w3", K, depth=100)) == answers[n]
            assert session.execute(current.execution_options(**READ_REPLICA)).one() == ("40", True)
        assert len(served) == len(QUERIES)
        # Not the plans: on 3,000 rows a sequential scan finds 100 sooner (see test_hybrid.py).
        assert all(in_recovery and setting == "100" for in_recovery, setting, _ in served)
    finally:
        primary.dispose()
        replica.dispose()

    async def main() -> list[list[tuple[int, int | None, int | None]]]:
        async_primary = create_async_app_engine(cluster.primary)
        replicas = create_async_replica_engines([cluster.replica])
        async_sessions = async_session_factory(async_primary, replicas)

        async def request(query: list[float]) -> list[tuple[int, int | None, int | None]]:
            async with async_sessions() as session:
                return ids(await deep.search(session, query, "w3", K, depth=100))

        try:
            with searches_served(async_primary, *replicas) as served:
                found = list(await asyncio.gather(*(request(query) for query in QUERIES)))
            assert len(served) == len(QUERIES)
            assert all(in_recovery and setting == "100" for in_recovery, setting, _ in served)
            return found
        finally:
            await async_primary.dispose()
            for engine in replicas:
                await engine.dispose()

    assert asyncio.run(main()) == answers


def replica_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == SKIPPED]


def out_and_back(caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    """The routing's lines saying a replica is out, and those saying it is back."""
    lines = replica_lines(caplog)
    out = [line for line in lines if "its reads go elsewhere" in line]
    back = [line for line in lines if " is back: " in line]
    assert sorted(out + back) == sorted(lines)
    return out, back


def test_a_replica_that_stops_is_skipped_in_one_line_and_no_request_fails(
    cluster: harness.Cluster, expected: dict[int, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=SKIPPED)
    replica_url = cluster.url(harness.REPLICA_PORT, password=PASSWORD)
    primary = create_app_engine(cluster.primary)
    (replica,) = create_replica_engines([replica_url])
    # retry_after=0: every request tries the replica again, and fails while it is down.
    sessions = session_factory(primary, [replica], retry_after=0)

    def request(n: int) -> bool:
        """One search; whether the replica served it."""
        with sessions() as session:
            rows = session.execute(search(QUERIES[n % len(QUERIES)])).all()
        assert [row[0] for row in rows] == expected[n % len(QUERIES)]
        return all(in_recovery for _, in_recovery in rows)

    try:
        with ThreadPoolExecutor(4) as threads:
            assert all(threads.map(request, range(40)))
            assert isinstance(replica.pool, QueuePool)
            assert replica.pool.checkedin() > 1  # idle connections to the replica
            cluster.stop_replica()  # ends them, as a failover or a restart would
            assert not any(threads.map(request, range(40)))
            out, back = out_and_back(caplog)
            (line,) = out  # one line for the outage, not one per request or thread
            assert back == []
            assert "\n" not in line
            assert "postgres:***@" in line
            assert PASSWORD not in line
            cluster.start_replica()
            assert all(threads.map(request, range(40)))
        out, back = out_and_back(caplog)
        assert len(out) == 1
        assert back == [f"Read replica {display(replica.url)} is back: its reads go to it again"]
    finally:
        cluster.start_replica()
        primary.dispose()
        replica.dispose()


def test_the_skip_line_masks_a_password_the_driver_message_quotes(
    cluster: harness.Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A driver message that contains the replica's password (here: a database named like it,
    which the server quotes) is logged with it masked, in each of the password's spellings."""
    caplog.set_level(logging.WARNING, logger=SKIPPED)
    password = "pw with space+&"
    spellings = [password, quote(password, safe=""), quote_plus(password)]
    (replica,) = create_replica_engines([cluster.url(harness.REPLICA_PORT, password=password)])
    for database in spellings:
        mistyped = create_engine(cluster.replica.set(database=database))
        with pytest.raises(OperationalError) as refused:
            mistyped.connect()
        mistyped.dispose()
        assert database in str(refused.value.orig)  # the server quotes it
        ReadReplicas([replica]).skip(replica, refused.value)
    lines = replica_lines(caplog)
    assert len(lines) == len(spellings)
    for line in lines:
        assert f"Read replica {display(replica.url)} " in line
        assert 'database "***" does not exist' in line
        assert not any(spelling in line for spelling in spellings)
    replica.dispose()


def test_async_reads_survive_a_replica_that_stops(
    cluster: harness.Cluster, expected: dict[int, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=SKIPPED)

    async def main() -> None:
        primary = create_async_app_engine(cluster.primary)
        replicas = create_async_replica_engines([cluster.replica])
        sessions = async_session_factory(primary, replicas, retry_after=0)

        async def request(n: int) -> bool:
            async with sessions() as session:
                rows = (await session.execute(search(QUERIES[n % len(QUERIES)]))).all()
            assert [row[0] for row in rows] == expected[n % len(QUERIES)]
            return all(in_recovery for _, in_recovery in rows)

        try:
            assert all(await asyncio.gather(*(request(n) for n in range(16))))
            await asyncio.to_thread(cluster.stop_replica)
            assert not any(await asyncio.gather(*(request(n) for n in range(16))))
            assert [len(lines) for lines in out_and_back(caplog)] == [1, 0]
            await asyncio.to_thread(cluster.start_replica)
            # retry_after=0: the next read tries the replica again, and finds it.
            assert all(await asyncio.gather(*(request(n) for n in range(16))))
        finally:
            await primary.dispose()
            for engine in replicas:
                await engine.dispose()

    try:
        asyncio.run(main())
    finally:
        cluster.start_replica()
    assert [len(lines) for lines in out_and_back(caplog)] == [1, 1]


def test_replica_urls_come_from_the_environment_with_their_passwords_masked() -> None:
    assert replica_urls({}) == []
    urls = replica_urls(
        {REPLICA_URLS_ENV: f"postgresql://app:{PASSWORD}@r1/app , postgres://app:x@r2:6432/app"}
    )
    assert [(url.host, url.port, url.password) for url in urls] == [
        ("r1", None, PASSWORD),
        ("r2", 6432, "x"),
    ]
    for raw, message in [
        ("postgresql://app:pw@r1/app,,postgresql://r2/app", "has an empty entry"),
        (f"postgresql://r1/app,postgresql://app:{PASSWORD}@r2:port/app", "(URL 2) has a port"),
        (f"postgresql://app:{PASSWORD}@r1", "(URL 1) names no database"),
    ]:
        with pytest.raises(DatabaseConfigError) as refused:
            replica_urls({REPLICA_URLS_ENV: raw})
        assert message in str(refused.value)
        assert PASSWORD not in str(refused.value)
        assert "\n" not in str(refused.value)


@pytest.mark.parametrize("separator", [",", " , ", "\n", "\n\n", ",\n", " ", "\t"], ids=repr)
def test_replica_urls_are_separated_by_commas_or_whitespace(separator: str) -> None:
    # A YAML block scalar (DATABASE_REPLICA_URLS: |) gives one URL a line, and a final newline.
    raw = f"postgresql://app:{PASSWORD}@r1/app{separator}postgres://app:x@r2:6432/app\n"
    urls = replica_urls({REPLICA_URLS_ENV: raw})
    assert [(url.host, url.port, url.password) for url in urls] == [
        ("r1", None, PASSWORD),
        ("r2", 6432, "x"),
    ]


SEPARATORS = "separate the URLs with commas, spaces or newlines"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(
            f"postgresql://app:{PASSWORD}@r1/app;postgresql://app:{PASSWORD}@r2/app",
            f"{REPLICA_URLS_ENV} (URL 1) holds more than one URL; {SEPARATORS}",
            id="semicolon",
        ),
        pytest.param(
            f"postgresql://r1/app,postgresql://app:{PASSWORD}@r2/app|postgresql://r3/app",
            f"{REPLICA_URLS_ENV} (URL 2) holds more than one URL; {SEPARATORS}",
            id="pipe",
        ),
        pytest.param(
            "postgresql://app:Quokka7 Wombat9@r1/app",
            f"{REPLICA_URLS_ENV} (URL 2) is no URL of its own; {SEPARATORS}, "
            "so URL-encode a space or comma in a password (%20, %2C)",
            id="raw space in a password",
        ),
    ],
)
def test_replica_urls_joined_otherwise_are_refused_saying_what_separates_them(
    raw: str, message: str
) -> None:
    with pytest.raises(DatabaseConfigError) as refused:
        replica_urls({REPLICA_URLS_ENV: raw})
    assert str(refused.value) == message
    for secret in (PASSWORD, "Quokka7", "Wombat9"):
        assert secret not in str(refused.value)
