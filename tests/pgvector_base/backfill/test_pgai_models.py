"""Changing the embedding model of a pgai vectorizer, as docs/embedding-models.md says: a second
vectorizer beside the first, then a migration that drops the first (and whose downgrade brings it
back). Skipped without the ``pgai`` group, like ``tests/pgvector_base/test_pgai.py``, whose
fixtures and helpers it uses."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import Engine

from tests.pgvector_base.test_pgai import (
    BLOG_VECTORIZER,
    alembic_config,
    autogenerate,
    blog_models,
    compare_all_schemas,
    engine,
    pgai_url,
    relations,
    vectorizers,
    versions,
)

__all__ = ["engine", "pgai_url"]  # the fixtures, used here by name

# The new model's vectorizer: its own name, destination and dimensions.
CONFIGURATION = """\
        source="blog",
        name="blog_content_embedder_v2",
        destination=DestinationTableConfig(destination="blog_embeddings_v2"),
        loading=LoadingColumnConfig(column_name="content"),
        embedding=EmbeddingOpenaiConfig(model="text-embedding-3-large", dimensions=1024),
        chunking=ChunkingNoneConfig(),
"""
FIRST = BLOG_VECTORIZER.split("    op.create_vectorizer(  # type: ignore[attr-defined]")[1].split(
    "    )\n"
)[0]
IMPORTS = """\
from alembic import op
from pgai.vectorizer.configuration import (
    ChunkingCharacterTextSplitterConfig,
    ChunkingNoneConfig,
    DestinationTableConfig,
    EmbeddingOpenaiConfig,
    FormattingPythonTemplateConfig,
    LoadingColumnConfig,
)
"""
SECOND_VECTORIZER = f'''\
"""The new model's vectorizer, beside the first."""

{IMPORTS}
revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_vectorizer(  # type: ignore[attr-defined]
{CONFIGURATION}    )


def downgrade() -> None:
    op.drop_vectorizer(name="blog_content_embedder_v2", drop_all=True)  # type: ignore[attr-defined]
'''
DROP_FIRST = f'''\
"""Contract: the old model's vectorizer goes, with its table, view, queue and triggers."""

{IMPORTS}
revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.drop_vectorizer(name="blog_content_embedder", drop_all=True)  # type: ignore[attr-defined]


def downgrade() -> None:
    op.create_vectorizer(  # type: ignore[attr-defined]{FIRST}    )
'''


def test_a_second_vectorizer_then_the_first_dropped(tmp_path: Path, engine: Engine) -> None:
    config = alembic_config(tmp_path, blog_models())
    autogenerate(config, "0001")
    (versions(config) / "0002_blog_vectorizer.py").write_text(BLOG_VECTORIZER)
    (versions(config) / "0003_second_vectorizer.py").write_text(SECOND_VECTORIZER)
    (versions(config) / "0004_drop_first.py").write_text(DROP_FIRST)

    command.upgrade(config, "0003")
    assert vectorizers(engine) == ["blog_content_embedder", "blog_content_embedder_v2"]
    assert {"blog_embeddings_store", "blog_embeddings_v2_store"} <= relations(engine)
    assert compare_all_schemas(engine, blog_models()) == []

    command.upgrade(config, "head")
    assert vectorizers(engine) == ["blog_content_embedder_v2"]
    assert "blog_embeddings_store" not in relations(engine)
    assert {"blog_embeddings_v2_store", "blog_embeddings_v2"} <= relations(engine)
    command.check(config)

    command.downgrade(config, "0003")
    assert vectorizers(engine) == ["blog_content_embedder", "blog_content_embedder_v2"]
