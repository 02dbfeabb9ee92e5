"""Index build memory in migrations: sized for the server, overridable, restored after a build."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from pgvector_base.migration import builds
from pgvector_base.migration.builds import Server

from .revisions import Migrations, failed_line

MB = 1 << 20
RECORD = (
    "INSERT INTO observed VALUES ('{place}', "
    "pg_size_bytes(current_setting('maintenance_work_mem')), "
    "current_setting('max_parallel_maintenance_workers')::int)"
)
OBSERVE = f"""
op.create_table(
    "observed",
    sa.Column("place", sa.Text()),
    sa.Column("maintenance_work_mem", sa.BigInteger()),
    sa.Column("workers", sa.Integer()),
)
op.create_table("build_target", sa.Column("id", sa.Integer()))
op.execute("{RECORD.format(place="in the transaction")}")
indexes.create_index_concurrently(
    "ix_build_target_id", "build_target", ["id"], maintenance_work_mem="2MB"
)
op.execute("{RECORD.format(place="after a build with its own settings")}")
"""
IMPORTS = "from pgvector_base.migration import indexes"
COMPOSE = Server(
    shared_buffers=128 * MB,
    maintenance_work_mem=64 * MB,
    parallel_workers=2,
    posix_shared_memory=True,
    memory=512 * MB,
    shm=64 * MB,
)


@pytest.fixture
def migrations(tmp_path: Path) -> Migrations:
    """Migrations of the test's own, none written yet."""
    return Migrations(tmp_path / "migrations")


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        # The compose service: (512 - 128) / 2, serial because 64MB of /dev/shm cannot hold it.
        (COMPOSE, {"maintenance_work_mem": "192MB", "max_parallel_maintenance_workers": "0"}),
        # A large host: the ceiling, and /dev/shm holds it, so the build stays parallel.
        (
            Server(128 * MB, 64 * MB, 2, True, 24 * 1024 * MB, 12 * 1024 * MB),
            {"maintenance_work_mem": "1024MB"},
        ),
        # Nothing readable: memory taken as 4 x shared_buffers, /dev/shm as Docker's 64MB.
        (
            Server(256 * MB, 64 * MB, 2, True, None, None),
            {"maintenance_work_mem": "384MB", "max_parallel_maintenance_workers": "0"},
        ),
        # Dynamic shared memory outside /dev/shm (sysv, mmap) has no tmpfs limit.
        (Server(128 * MB, 64 * MB, 2, False, 512 * MB, 64 * MB), {"maintenance_work_mem": "192MB"}),
        # A server already tuned above the budget is never lowered; its build made serial if
        # /dev/shm is too small for what it has.
        (
            Server(128 * MB, 2048 * MB, 4, True, 1024 * MB, 1024 * MB),
            {"max_parallel_maintenance_workers": "0"},
        ),
        # /dev/shm larger than the 192MB budget but below 4/3 of it (256MB): serial, since
        # a parallel build needs about a third more shared memory than maintenance_work_mem.
        (
            Server(128 * MB, 64 * MB, 2, True, 512 * MB, 200 * MB),
            {"maintenance_work_mem": "192MB", "max_parallel_maintenance_workers": "0"},
        ),
        # /dev/shm of exactly 4/3 of the budget holds it: parallel.
        (Server(128 * MB, 64 * MB, 2, True, 512 * MB, 256 * MB), {"maintenance_work_mem": "192MB"}),
    ],
    ids=[
        "compose",
        "large host",
        "unreadable",
        "sysv shared memory",
        "tuned server",
        "shm between the budget and 4/3 of it",
        "shm of 4/3 of the budget",
    ],
)
def test_build_memory_is_sized_for_the_server(server: Server, expected: dict[str, str]) -> None:
    assert builds.plan(server) == expected


def observed(url: URL) -> list[tuple[str, int, int]]:
    """What the migration recorded, in order."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM observed")).all()
    engine.dispose()
    return [(place, memory, workers) for place, memory, workers in rows]


def plain_session(url: URL) -> tuple[int, int, dict[str, str]]:
    """maintenance_work_mem and max_parallel_maintenance_workers of a session outside migrations,
    and what :func:`builds.plan` sizes for that server."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        memory, workers = connection.execute(
            text(
                "SELECT pg_size_bytes(current_setting('maintenance_work_mem')), "
                "current_setting('max_parallel_maintenance_workers')::int"
            )
        ).one()
        sized = builds.plan(builds.describe(connection))
    engine.dispose()
    return int(memory), int(workers), sized


def test_a_migration_session_builds_with_the_sized_settings(
    migrations: Migrations, fresh_database_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(builds.MAINTENANCE_WORK_MEM_ENV, raising=False)
    monkeypatch.delenv(builds.PARALLEL_WORKERS_ENV, raising=False)
    migrations.add("observe build settings", OBSERVE, imports=IMPORTS)
    result = migrations.run("upgrade", "head")
    assert result.returncode == 0, result.stderr

    default_memory, default_workers, sized = plain_session(fresh_database_url)
    memory = int(sized.get("maintenance_work_mem", "0MB").removesuffix("MB")) * MB
    workers = int(sized.get("max_parallel_maintenance_workers", default_workers))
    assert memory > default_memory, "this server needs no tuning: run the test on another"
    assert observed(fresh_database_url) == [
        ("in the transaction", memory, workers),
        ("after a build with its own settings", memory, workers),
    ]


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"MIGRATION_MAINTENANCE_WORK_MEM": "300MB"}, (300 * MB, None)),
        ({"MIGRATION_MAX_PARALLEL_MAINTENANCE_WORKERS": "1"}, (None, 1)),
        (
            {
                "MIGRATION_MAINTENANCE_WORK_MEM": "server",
                "MIGRATION_MAX_PARALLEL_MAINTENANCE_WORKERS": "server",
            },
            ("server", "server"),
        ),
    ],
    ids=["memory", "workers", "the server's own"],
)
def test_the_environment_overrides_the_sizing(
    migrations: Migrations,
    fresh_database_url: URL,
    environment: dict[str, str],
    expected: tuple[int | str | None, int | str | None],
) -> None:
    migrations.add("observe build settings", OBSERVE, imports=IMPORTS)
    result = migrations.run("upgrade", "head", env=environment)
    assert result.returncode == 0, result.stderr

    server_memory, server_workers, _ = plain_session(fresh_database_url)
    recorded = observed(fresh_database_url)
    memory, workers = expected
    for _, seen_memory, seen_workers in recorded:
        if memory == "server":
            assert seen_memory == server_memory
        elif memory is not None:
            assert seen_memory == memory
        if workers == "server":
            assert seen_workers == server_workers
        elif workers is not None:
            assert seen_workers == workers
    assert len({row[1:] for row in recorded}) == 1


def test_offline_sql_sets_only_the_overrides(migrations: Migrations) -> None:
    migrations.add("observe build settings", OBSERVE, imports=IMPORTS)
    overridden = migrations.run(
        "upgrade", "head", "--sql", env={builds.MAINTENANCE_WORK_MEM_ENV: "2GB"}
    )
    plain = migrations.run("upgrade", "head", "--sql")
    assert overridden.returncode == plain.returncode == 0, overridden.stderr + plain.stderr
    statements = [line for line in overridden.stdout.splitlines() if line.strip()]
    assert statements[:3] == [
        "SET lock_timeout = '5s';",
        "SET statement_timeout = '5min';",
        "SET maintenance_work_mem = '2GB';",
    ]
    # After the index's own 2MB, the session's value comes back.
    after_build = statements[statements.index("SET maintenance_work_mem = '2MB';") :]
    assert after_build[1:4] == [
        "CREATE INDEX CONCURRENTLY ix_build_target_id ON build_target (id);",
        "RESET maintenance_work_mem;",
        "SET maintenance_work_mem = '2GB';",
    ]
    assert "SET maintenance_work_mem = '2GB';" not in plain.stdout


def test_a_bad_override_fails_with_one_line(
    migrations: Migrations, fresh_database_url: URL
) -> None:
    migrations.add("observe build settings", OBSERVE, imports=IMPORTS)
    result = migrations.run("upgrade", "head", env={builds.MAINTENANCE_WORK_MEM_ENV: "lots"})
    assert failed_line(result) == (
        "FAILED: MIGRATION_MAINTENANCE_WORK_MEM='lots' is not valid; use a value such as 512MB "
        "or 2GB, or 'server' to keep the server's setting"
    )
