"""Many tenants in one database, through a transaction-mode PgBouncer: the database isolates them.

``document`` is partitioned by tenant and isolated by row-level security
(:mod:`pgvector_base.migration.partitions`, :mod:`pgvector_base.migration.tenancy`), migrated by
autogenerate as its owner, a role that is not a superuser. The application connects as a role of
its own through PgBouncer in transaction mode, with fewer server connections than tenants, so
consecutive transactions of different tenants share server connections. The oracle is what was
stored: each tenant's rows are known by key, and every answer is checked against them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    BigInteger,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    select,
    text,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

from pgvector_base.loading import load
from pgvector_base.migration import partitions, tenancy
from pgvector_base.search import VectorSearch
from pgvector_base.session import (
    TENANT_SETTING,
    EngineSettings,
    async_session_factory,
    async_tenant_session,
    create_app_engine,
    create_async_app_engine,
    session_factory,
    tenant_session,
)
from tests.conftest import CreateDatabase
from tests.pgvector_base.autogenerate.project import Project

from .conftest import StartPgBouncer

DIM = 8
TENANTS = ("acme", "globex", "initech", "hooli")
ROWS_PER_TENANT = 200
REQUESTS = 30
# The first number of the rows that the threads' and the processes' requests write.
THREAD_ROWS = 500_000
PROCESS_ROWS = 600_000
# Cluster-wide names, one pair per test process.
OWNER = f"tenant_owner_{os.getpid()}"
APP = f"tenant_app_{os.getpid()}"


class TenantBase(DeclarativeBase):
    """This module's own tables."""


class Document(TenantBase):
    __tablename__ = "document"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    embedding: Mapped[Any] = mapped_column(VECTOR(DIM))

    __table_args__ = (
        Index(
            "ix_document_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
        tenancy.isolated_by(
            "tenant_id",
            role=APP,
            partitions=partitions.by_list("tenant_id", {tenant: [tenant] for tenant in TENANTS}),
        ),
    )


SEARCH = VectorSearch(Document, Document.embedding)


def key(tenant: str, number: int) -> int:
    """The id of a tenant's ``number``-th stored row: each tenant's ids are its own."""
    return TENANTS.index(tenant) * 1_000_000 + number


@dataclass
class Deployment:
    """The database, its owner's migrations project and the server URL as superuser."""

    database: URL
    project: Project


@pytest.fixture(scope="module")
def deployment(create_database: CreateDatabase, tmp_path_factory: Any) -> Iterator[Deployment]:
    """``document`` migrated by its owner, and each tenant's rows stored."""
    database = create_database()
    admin = create_engine(database, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        connection.execute(text(f"CREATE ROLE {OWNER} LOGIN"))
        connection.execute(text(f"CREATE ROLE {APP} LOGIN"))
        connection.execute(text(f"ALTER SCHEMA public OWNER TO {OWNER}"))
    owner = create_engine(database.set(username=OWNER), poolclass=NullPool)
    project = Project(owner, Path(tmp_path_factory.mktemp("tenants")) / "versions")
    try:
        project.revise(TenantBase.metadata, message="documents")
        project.upgrade()
        vectors = np.random.default_rng(3).random((len(TENANTS) * ROWS_PER_TENANT, DIM))
        with admin.begin() as connection:
            # A superuser is not held to the policies: it loads every tenant's rows at once,
            # routed to their partitions.
            load(
                connection,
                Document.__table__,  # type: ignore[arg-type]
                {
                    "tenant_id": [t for t in TENANTS for _ in range(ROWS_PER_TENANT)],
                    "id": [key(t, n) for t in TENANTS for n in range(ROWS_PER_TENANT)],
                    "embedding": vectors.astype(np.float32),
                },
            )
        yield Deployment(database, project)
    finally:
        owner.dispose()
        with admin.begin() as connection:
            for role in (APP, OWNER):
                connection.execute(text(f"DROP OWNED BY {role} CASCADE"))
        admin.dispose()
        drop_roles(create_engine(database.set(database="postgres"), poolclass=NullPool))


def drop_roles(engine: Engine) -> None:
    """Drop the module's roles (nothing in any database refers to them any more)."""
    with engine.begin() as connection:
        for role in (APP, OWNER):
            connection.execute(text(f"DROP ROLE IF EXISTS {role}"))
    engine.dispose()


def app_engine(pooler: Any, database: URL, pool_size: int) -> Engine:
    """The application's engine, as the application role, through the pooler."""
    return create_app_engine(
        pooler.url(database).set(username=APP),
        EngineSettings(pool_size=pool_size, max_overflow=0),
    )


def requests(engine: Engine, tenant: str, first: int, start: Any) -> list[str]:
    """A client's requests for ``tenant``, each committing a row numbered from ``first``: a line
    per wrong answer. ``start`` is a barrier the clients pass together."""
    sessions = session_factory(engine)
    query = np.random.default_rng(first + TENANTS.index(tenant)).random(DIM).tolist()
    problems: list[str] = []
    own = {key(tenant, n) for n in range(ROWS_PER_TENANT)}
    theirs = range(key(tenant, 0), key(tenant, 999_999) + 1)
    others = [key(other, 1) for other in TENANTS if other != tenant]
    start.wait()
    for number in range(REQUESTS):
        with tenant_session(sessions, tenant) as session:
            found = SEARCH.nearest(session, query, 10)
            tenants = {hit.item.tenant_id for hit in found}
            if len(found) != 10 or tenants != {tenant}:
                problems.append(f"{tenant} #{number}: search gave {len(found)} rows of {tenants}")
            keys = {row.id for row in session.scalars(select(Document))}
            written = {key(tenant, first + n) for n in range(number)}
            foreign = [found_key for found_key in keys if found_key not in theirs]
            if foreign or not own | written <= keys:
                problems.append(f"{tenant} #{number}: plain query saw {foreign}, not all its own")
            leaked = [
                other
                for other in others
                if session.get(Document, (TENANTS[other // 1_000_000], other))
            ]
            if leaked or session.get(Document, (tenant, key(tenant, 1))) is None:
                problems.append(f"{tenant} #{number}: loads gave {leaked}, not its own row")
            session.add(Document(tenant_id=tenant, id=key(tenant, first + number), embedding=query))
            session.commit()
    return problems


def process_requests(*, url: URL, tenant: str, first: int, start: Any, found: Any) -> None:
    """A client process: its own engine on ``url``, its problems put on ``found``."""
    engine = create_app_engine(url, EngineSettings(pool_size=1, max_overflow=0))
    try:
        found.put(requests(engine, tenant, first, start))
    except BaseException as error:
        found.put([f"{tenant}: {error!r}"])
    finally:
        engine.dispose()


def stored_requests(database: URL, first: int) -> list[tuple[str, int]]:
    """Each partition and how many request rows numbered from ``first`` it holds."""
    with create_engine(database, poolclass=NullPool).connect() as connection:
        return [
            (str(partition), int(count))
            for partition, count in connection.execute(
                text(
                    "SELECT tableoid::regclass::text, count(*) FROM document "
                    "WHERE id % 1000000 BETWEEN :first AND :first + 99999 GROUP BY 1 ORDER BY 1"
                ),
                {"first": first},
            )
        ]


def test_threads_of_many_tenants_see_only_their_own_rows(
    deployment: Deployment, pgbouncer: StartPgBouncer
) -> None:
    # Two server connections for four tenants' clients: their transactions take turns on them.
    pooler = pgbouncer(pool_mode="transaction", pool_size=2, users=[APP])
    engine = app_engine(pooler, deployment.database, pool_size=4)
    start = threading.Barrier(len(TENANTS))
    try:
        with ThreadPoolExecutor(len(TENANTS)) as pool:
            futures = [
                pool.submit(requests, engine, tenant, THREAD_ROWS, start) for tenant in TENANTS
            ]
            problems = [line for future in futures for line in future.result()]
    finally:
        engine.dispose()
    assert problems == []
    servers = [row for row in pooler.admin("SHOW SERVERS") if row["user"] == APP]
    assert 1 <= len(servers) <= 2
    # Every request's row was stored, in its tenant's partition.
    assert stored_requests(deployment.database, THREAD_ROWS) == sorted(
        (f"document_{tenant}", REQUESTS) for tenant in TENANTS
    )


def test_processes_of_many_tenants_see_only_their_own_rows(
    deployment: Deployment, pgbouncer: StartPgBouncer
) -> None:
    pooler = pgbouncer(pool_mode="transaction", pool_size=2, users=[APP])
    url = pooler.url(deployment.database).set(username=APP)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(TENANTS))
    found = context.Queue()
    processes = [
        context.Process(
            target=process_requests,
            kwargs={
                "url": url,
                "tenant": tenant,
                "first": PROCESS_ROWS,
                "start": start,
                "found": found,
            },
        )
        for tenant in TENANTS
    ]
    for process in processes:
        process.start()
    problems = [line for _ in processes for line in found.get()]
    for process in processes:
        process.join()
    assert problems == []
    assert stored_requests(deployment.database, PROCESS_ROWS) == sorted(
        (f"document_{tenant}", REQUESTS) for tenant in TENANTS
    )


def test_a_reused_connection_carries_no_tenant(
    deployment: Deployment, pgbouncer: StartPgBouncer
) -> None:
    pooler = pgbouncer(pool_mode="transaction", pool_size=1, users=[APP])
    engine = app_engine(pooler, deployment.database, pool_size=1)
    sessions = session_factory(engine)
    try:
        with tenant_session(sessions, "acme") as session:
            first = session.scalar(select(func.pg_backend_pid()))
            stored = session.scalar(select(func.count()).select_from(Document))
            assert stored is not None
            assert stored >= ROWS_PER_TENANT
            session.commit()
        with sessions() as session:
            # The same server connection, right after acme's transaction.
            assert session.scalar(select(func.pg_backend_pid())) == first
            assert session.scalar(select(func.current_setting(TENANT_SETTING, True))) in {"", None}
            assert session.scalar(select(func.count()).select_from(Document)) == 0
            assert session.get(Document, ("acme", key("acme", 1))) is None
            assert SEARCH.nearest(session, [1.0] * DIM, 10) == []
    finally:
        engine.dispose()


def test_a_search_for_one_tenant_scans_only_its_partition(deployment: Deployment) -> None:
    """The policy alone (no WHERE of the caller's) prunes the other tenants' partitions when the
    query starts: the search reads only the tenant's partition."""
    engine = create_app_engine(
        deployment.database.set(username=APP), EngineSettings(pool_size=1, max_overflow=0)
    )
    statement = SEARCH.statement().params(query=[0.5] * DIM, k=10)
    sql = statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    try:
        with tenant_session(session_factory(engine), "globex") as session:
            connection = session.connection()
            plan = list(connection.exec_driver_sql(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}").scalars())
    finally:
        engine.dispose()
    shown = "\n".join(plan)
    # Only globex's partition is scanned; the others are removed before they run. (Whether by
    # its vector index is the planner's choice by size: at 200 rows it sorts them.)
    assert any("Subplans Removed: 3" in line for line in plan), shown
    assert any("document_globex" in line for line in plan), shown
    others = [f"document_{tenant}" for tenant in TENANTS if tenant != "globex"]
    assert not [line for line in plan if any(other in line for other in others)], shown


def test_an_async_session_for_a_tenant_sees_its_rows_only(deployment: Deployment) -> None:
    async def run() -> tuple[set[str], int | None]:
        engine = create_async_app_engine(
            deployment.database.set(username=APP), EngineSettings(pool_size=1, max_overflow=0)
        )
        try:
            sessions = async_session_factory(engine)
            async with async_tenant_session(sessions, "globex") as session:
                tenants = set(await session.scalars(select(Document.tenant_id)))
            async with sessions() as session:
                untenanted = await session.scalar(select(func.count()).select_from(Document))
        finally:
            await engine.dispose()
        return tenants, untenanted

    assert asyncio.run(run()) == ({"globex"}, 0)


@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("SET LOCAL row_security = off; SELECT count(*) FROM document", "row-level security"),
        ("ALTER TABLE document DISABLE ROW LEVEL SECURITY", "must be owner"),
        ("ALTER TABLE document NO FORCE ROW LEVEL SECURITY", "must be owner"),
        ("DROP POLICY tenant_isolation ON document", "must be owner"),
        ("SELECT count(*) FROM document_globex", "permission denied"),
        ("INSERT INTO document VALUES ('globex', 9, NULL)", "row-level security policy"),
        ("UPDATE document SET tenant_id = 'globex'", "row-level security policy"),
    ],
)
def test_the_application_role_cannot_bypass_the_policy(
    deployment: Deployment, statement: str, refusal: str
) -> None:
    engine = create_app_engine(
        deployment.database.set(username=APP), EngineSettings(pool_size=1, max_overflow=0)
    )
    try:
        with (
            tenant_session(session_factory(engine), "acme") as session,
            pytest.raises(DBAPIError, match=refusal),
        ):
            session.execute(text(statement))
    finally:
        engine.dispose()


def test_the_owners_migrations_still_run(deployment: Deployment) -> None:
    project = deployment.project
    # A new tenant's partition, migrated by the owner while the table holds every tenant's rows.
    metadata = MetaData()
    TenantBase.metadata.tables["document"].to_metadata(metadata)
    metadata.tables["document"].info[partitions.INFO_KEY] = partitions.by_list(
        "tenant_id", {tenant: [tenant] for tenant in (*TENANTS, "umbrella")}
    )["info"][partitions.INFO_KEY]
    generated = project.revise(metadata, message="umbrella")
    assert "CREATE TABLE document_umbrella PARTITION OF document" in generated
    project.upgrade()
    project.settled(metadata)
    with create_engine(deployment.database, poolclass=NullPool).connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM document_acme")) >= ROWS_PER_TENANT
        assert connection.scalar(text("SELECT count(*) FROM document_umbrella")) == 0
    # The owner is held to the policy too (FORCE): without a tenant it reads nothing.
    assert project.fetch("SELECT count(*) FROM document") == [(0,)]

    # The owner loads the new tenant's rows into its partition, which has no policy of its own
    # (COPY is refused where one applies), by the loader, with the partition's index in place.
    vectors = np.random.default_rng(8).random((50, DIM)).astype(np.float32)
    with project.engine.begin() as connection:
        umbrella = Table("document_umbrella", MetaData(), autoload_with=connection)
        result = load(
            connection,
            umbrella,
            {"tenant_id": ["umbrella"] * 50, "id": np.arange(50), "embedding": vectors},
        )
    assert result.rows == 50
    assert result.rebuilt_indexes == ()
    engine = create_app_engine(
        deployment.database.set(username=APP), EngineSettings(pool_size=1, max_overflow=0)
    )
    try:
        with tenant_session(session_factory(engine), "umbrella") as session:
            found = SEARCH.nearest(session, vectors[7].tolist(), 3)
            assert found[0].item.id == 7
            assert {hit.item.tenant_id for hit in found} == {"umbrella"}
            assert session.scalar(select(func.count()).select_from(Document)) == 50
    finally:
        engine.dispose()
