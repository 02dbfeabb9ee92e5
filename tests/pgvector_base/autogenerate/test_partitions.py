"""Tables partitioned by tenant: created, compared and migrated by autogenerate, never dropped.

The oracle is the server's catalog: which partitions a table has, with which bounds, and which
index each partition has under the parent's.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pgvector.sqlalchemy import VECTOR
from sqlalchemy import BigInteger, Column, Engine, Index, MetaData, String, Table

from pgvector_base.migration import partitions

from .project import REPOSITORY_ROOT, Project

TENANTS = {"acme": ["acme"], "globex": ["globex"], "small": ["initech", "hooli"]}


def documents(
    *,
    lists: Mapping[str, Sequence[str]] | None = None,
    modulus: int | None = None,
    concurrently: bool = False,
    index: bool = True,
) -> MetaData:
    """``document``, partitioned by ``tenant_id`` by list or hash, with an HNSW index."""
    metadata = MetaData()
    declaration = (
        partitions.by_list("tenant_id", lists)
        if lists is not None
        else partitions.by_hash("tenant_id", modulus or 1)
    )
    document = Table(
        "document",
        metadata,
        Column("tenant_id", String(40), primary_key=True),
        Column("id", BigInteger, primary_key=True),
        Column("embedding", VECTOR(3)),
        **declaration,
    )
    if index:
        Index(
            "ix_document_embedding",
            document.c.embedding,
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
            postgresql_concurrently=concurrently,
        )
    return metadata


def partition_bounds(project: Project, table: str = "document") -> dict[str, str]:
    """Each partition of ``table`` and its bound, from the catalog."""
    return {
        str(name): str(bound)
        for name, bound in project.fetch(
            "SELECT child.relname, pg_get_expr(child.relpartbound, child.oid) FROM pg_inherits "
            "JOIN pg_class AS child ON child.oid = inhrelid "
            "WHERE inhparent = to_regclass(:table)",
            table=table,
        )
    }


def partition_indexes(project: Project) -> dict[str, str]:
    """Each partition's index attached to ``ix_document_embedding``, by partition."""
    return {
        str(table): str(index)
        for table, index in project.fetch(
            "SELECT table_class.relname, index_class.relname FROM pg_inherits "
            "JOIN pg_class AS index_class ON index_class.oid = inhrelid "
            "JOIN pg_index ON pg_index.indexrelid = index_class.oid "
            "JOIN pg_class AS table_class ON table_class.oid = pg_index.indrelid "
            "WHERE inhparent = 'ix_document_embedding'::regclass"
        )
    }


def round_trip(project: Project, metadata: MetaData, expected: dict[str, str]) -> None:
    """Autogenerate, upgrade, settle, downgrade, upgrade; the partitions are ``expected``."""
    generated = project.revise(metadata, message="documents")
    assert "drop_table('document_" not in generated
    project.upgrade()
    assert partition_bounds(project) == expected
    assert set(partition_indexes(project)) == set(expected)
    assert project.index("ix_document_embedding") is not None
    project.settled(metadata)

    project.downgrade("base")
    assert project.tables() == ["public.alembic_version"]
    project.upgrade()
    assert partition_bounds(project) == expected
    project.settled(metadata)


def test_list_partitions_round_trip(project: Project) -> None:
    round_trip(
        project,
        documents(lists=TENANTS),
        {
            "document_acme": "FOR VALUES IN ('acme')",
            "document_globex": "FOR VALUES IN ('globex')",
            "document_small": "FOR VALUES IN ('initech', 'hooli')",
        },
    )
    # Each row lands in its tenant's partition, and the parent's index serves every one.
    project.execute(
        "INSERT INTO document VALUES ('acme', 1, '[1,0,0]'), ('hooli', 2, '[0,1,0]'), "
        "('globex', 3, '[0,0,1]')"
    )
    assert project.fetch("SELECT tableoid::regclass::text, id FROM document ORDER BY id") == [
        ("document_acme", 1),
        ("document_small", 2),
        ("document_globex", 3),
    ]


def test_hash_partitions_round_trip(project: Project) -> None:
    round_trip(
        project,
        documents(modulus=8),
        {
            f"document_p{remainder}": f"FOR VALUES WITH (modulus 8, remainder {remainder})"
            for remainder in range(8)
        },
    )


def test_a_partition_added_later_is_one_migration_and_nothing_is_dropped(
    project: Project,
) -> None:
    project.revise(documents(lists=TENANTS))
    project.upgrade()
    project.execute("INSERT INTO document VALUES ('acme', 1, '[1,0,0]')")

    more = documents(lists={**TENANTS, "umbrella": ["umbrella"]})
    generated = project.revise(more, message="umbrella")
    upgrade = generated[generated.index("def upgrade") : generated.index("def downgrade")]
    assert "CREATE TABLE document_umbrella PARTITION OF document FOR VALUES IN" in upgrade
    assert "drop" not in upgrade.lower()
    project.upgrade()
    assert partition_bounds(project)["document_umbrella"] == "FOR VALUES IN ('umbrella')"
    assert "document_umbrella" in partition_indexes(project)
    project.settled(more)

    # A partition the model no longer declares is kept with its rows, and not reported.
    project.settled(documents(lists={"globex": ["globex"]}))
    assert project.fetch("SELECT id FROM document_acme") == [(1,)]

    project.downgrade()
    assert "document_umbrella" not in partition_bounds(project)
    assert project.fetch("SELECT id FROM document_acme") == [(1,)]
    project.upgrade()
    project.settled(more)


def test_bounds_that_would_move_rows_are_refused(project: Project) -> None:
    project.revise(documents(modulus=4))
    project.upgrade()
    message = project.refused(documents(modulus=8))
    assert "document_p0 holds FOR VALUES WITH (modulus 4, remainder 0)" in message
    assert "write that migration by hand" in message


def test_an_unpartitioned_table_is_not_converted(project: Project) -> None:
    project.execute(
        "CREATE TABLE document (tenant_id varchar(40), id bigint, PRIMARY KEY (tenant_id, id))"
    )
    message = project.refused(documents(lists=TENANTS))
    assert "table document exists and is not partitioned" in message


def test_a_concurrent_build_on_a_partitioned_table_goes_partition_by_partition(
    project: Project,
) -> None:
    project.revise(documents(lists=TENANTS, index=False))
    project.upgrade()
    project.execute(
        "INSERT INTO document VALUES ('acme', 1, '[1,0,0]'), ('hooli', 2, '[0,1,0]'), "
        "('globex', 3, '[0,0,1]')"
    )
    concurrent = documents(lists=TENANTS, concurrently=True)
    generated = project.revise(concurrent, message="index")
    assert "indexes.create_index_concurrently(" in generated
    project.upgrade()
    # The parent's index is valid: every partition has its own, attached to it.
    assert project.fetch(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_document_embedding'::regclass"
    ) == [(True,)]
    assert partition_indexes(project) == {
        f"document_{suffix}": f"document_{suffix}_ix_document_embedding" for suffix in TENANTS
    }
    project.settled(concurrent)

    # A build interrupted after the first partition: run again, it keeps that partition's index
    # and builds the others.
    project.downgrade()
    assert project.index("ix_document_embedding") is None
    method = "USING hnsw (embedding vector_cosine_ops)"
    project.execute(f"CREATE INDEX ix_document_embedding ON ONLY document {method}")
    project.execute(f"CREATE INDEX document_acme_ix_document_embedding ON document_acme {method}")
    project.execute(
        "ALTER INDEX ix_document_embedding ATTACH PARTITION document_acme_ix_document_embedding"
    )
    kept = project.fetch("SELECT 'document_acme_ix_document_embedding'::regclass::oid")
    project.upgrade()
    assert project.fetch("SELECT 'document_acme_ix_document_embedding'::regclass::oid") == kept
    assert set(partition_indexes(project)) == {f"document_{suffix}" for suffix in TENANTS}
    assert project.fetch(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_document_embedding'::regclass"
    ) == [(True,)]

    # A tenant added later gets its index from PostgreSQL, with its partition.
    more = documents(lists={**TENANTS, "umbrella": ["umbrella"]}, concurrently=True)
    project.revise(more, message="umbrella")
    project.upgrade()
    assert "document_umbrella" in partition_indexes(project)
    project.settled(more)

    project.downgrade("-2")
    assert project.index("ix_document_embedding") is None
    assert project.fetch("SELECT count(*) FROM document") == [(3,)]


def test_declarations_postgresql_refuses_stop_autogenerate(project: Project) -> None:
    metadata = MetaData()
    Table(
        "document",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("tenant_id", String(40)),
        **partitions.by_hash("tenant_id", 2),
    )
    assert "which its primary key lacks" in project.refused(metadata)


def test_the_generated_file_passes_ruff_and_mypy(module_engine: Engine, tmp_path: Path) -> None:
    project = Project(module_engine, tmp_path / "migrations" / "versions", hooks=True)
    try:
        project.revise(documents(lists={"o'hare": ["o'hare"], "acme": ["acme"]}))
        (script,) = project.versions.glob("*.py")
        for tool in (["ruff", "check"], ["ruff", "format", "--check"], ["mypy"]):
            result = subprocess.run(
                [sys.executable, "-m", *tool, str(script)],
                cwd=REPOSITORY_ROOT,
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
            assert result.returncode == 0, result.stdout + result.stderr
        project.upgrade()
        assert partition_bounds(project)["document_o'hare"] == "FOR VALUES IN ('o''hare')"
    finally:
        project.drop_all_tables()
