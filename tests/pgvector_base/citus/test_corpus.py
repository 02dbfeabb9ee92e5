"""Real projects' schemas (``tests/pgvector_base/corpus/schemas/``), each table placed on the
cluster by a column, through the README's workflow on a coordinator: autogenerate, upgrade, check
clean, downgrade to base and upgrade again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine
from sqlalchemy.pool import NullPool

from pgvector_base.migration.distribution import INFO_KEY, Distributed, Placement, Reference

from ..autogenerate.project import Project
from ..corpus.schemas import metadata
from .conftest import CitusDatabase

PLACEMENTS: dict[str, dict[str, Placement]] = {
    "langchain_postgres": {
        "langchain_pg_collection": Reference(),
        "langchain_pg_embedding": Distributed("id"),
    },
    "agno": {"ai.vectors": Distributed("id")},
}


def placed(schema: str) -> MetaData:
    """A copy of the schema's models, each table placed as :data:`PLACEMENTS` says."""
    copy = MetaData(naming_convention=metadata(schema).naming_convention)
    for table in metadata(schema).tables.values():
        table.to_metadata(copy)
    for name, placement in PLACEMENTS[schema].items():
        table = copy.tables[name]
        table.info = {**table.info, INFO_KEY: placement}
    return copy


@pytest.fixture
def project(citus_database: CitusDatabase, tmp_path: Path) -> Iterator[Project]:
    engine = create_engine(citus_database(), poolclass=NullPool)
    yield Project(engine, tmp_path / "versions")
    engine.dispose()


@pytest.mark.parametrize("schema", sorted(PLACEMENTS))
def test_a_schema_distributed_by_a_column_migrates_clean(project: Project, schema: str) -> None:
    models = placed(schema)
    project.revise(models, message=schema)
    project.upgrade()
    assert {
        str(name)
        for (name,) in project.fetch("SELECT logicalrelid::regclass::text FROM pg_dist_partition")
    } == set(PLACEMENTS[schema])
    project.settled(models)
    project.downgrade("base")
    assert project.fetch("SELECT count(*) FROM pg_dist_partition") == [(0,)]
    project.upgrade()
    project.settled(models)
