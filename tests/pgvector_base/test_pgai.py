"""pgai vectorizers in migrations, on a real database with pgai's library installed.

Needs the ``pgai`` Poetry group (``poetry install --with pgai``); without it, the module is
skipped. Each test gets a fresh database with ``pgai.install`` applied, runs ``env.py`` on its own
models (``config.attributes["target_metadata"]``) and keeps its migrations in a temporary versions
directory.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations.ops import MigrationScript
from alembic.util import CommandError
from sqlalchemy import Column, Engine, Integer, MetaData, Table, Text, create_engine, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

from pgvector_base import pgai_setup
from pgvector_base.migration.errors import location
from pgvector_base.migration.pgai import Exclusion, register_operations
from pgvector_base.migration.rendering import register_types

from .revisions import Migrations, revision_source

pgai = pytest.importorskip(
    "pgai", reason="pgai is not installed; its tests need `poetry install --with pgai`"
)
from pgai.sqlalchemy import vectorizer_relationship  # noqa: E402 (only once pgai is there)

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
ALEMBIC_INI = REPOSITORY_ROOT / "alembic.ini"

# pgai's generated embedding classes carry a `registry` attribute, which SQLAlchemy warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Attribute name 'registry':sqlalchemy.exc.SAWarning")

# The blog example of pgai's Alembic page, as docs/pgai.md shows it (the page misses a comma).
BLOG_VECTORIZER = '''\
"""Embed blog posts with pgai's vectorizer."""

from alembic import op
from pgai.vectorizer.configuration import (
    ChunkingCharacterTextSplitterConfig,
    DestinationTableConfig,
    EmbeddingOpenaiConfig,
    FormattingPythonTemplateConfig,
    LoadingColumnConfig,
)

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_vectorizer(  # type: ignore[attr-defined]  # registered by env.py at run time
        source="blog",
        name="blog_content_embedder",
        destination=DestinationTableConfig(destination="blog_embeddings"),
        loading=LoadingColumnConfig(column_name="content"),
        embedding=EmbeddingOpenaiConfig(model="text-embedding-3-small", dimensions=768),
        chunking=ChunkingCharacterTextSplitterConfig(
            chunk_size=800, chunk_overlap=400, separator=".", is_separator_regex=False
        ),
        formatting=FormattingPythonTemplateConfig(template="$title - $chunk"),
    )


def downgrade() -> None:
    op.drop_vectorizer(name="blog_content_embedder", drop_all=True)  # type: ignore[attr-defined]
'''

# What the hand-written revisions below use of pgai's configuration classes.
VECTORIZER_IMPORTS = """\
from pgai.vectorizer.configuration import (
    ChunkingNoneConfig,
    DestinationColumnConfig,
    DestinationTableConfig,
    EmbeddingOpenaiConfig,
    LoadingColumnConfig,
)"""

# As if pgai were not installed: `import pgai` raises ImportError, `find_spec("pgai")` is None.
BLOCK = "import sys; sys.modules[{module!r}] = None\n"


def blog_models(
    *, vectorizer: bool = False, target_table: str | None = None, target_schema: str | None = None
) -> MetaData:
    """The page's ``blog`` table as a model, optionally with a ``vectorizer_relationship``."""

    class Base(DeclarativeBase):
        pass

    class Blog(Base):
        __tablename__ = "blog"
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str] = mapped_column(Text)
        content: Mapped[str] = mapped_column(Text)
        if vectorizer:
            content_embeddings = vectorizer_relationship(
                dimensions=768, target_table=target_table, target_schema=target_schema
            )

    return Base.metadata


def note_models() -> MetaData:
    """A ``note`` table as a model; a column-destination vectorizer adds its embedding column."""

    class Base(DeclarativeBase):
        pass

    class Note(Base):
        __tablename__ = "note"
        id: Mapped[int] = mapped_column(primary_key=True)
        body: Mapped[str] = mapped_column(Text)

    return Base.metadata


@pytest.fixture
def pgai_url(fresh_database_url: URL) -> URL:
    """A fresh database with pgai's library installed, as ``pgai-install`` does it."""
    pgai.install(pgai_setup.libpq_url(fresh_database_url))
    return fresh_database_url


@pytest.fixture
def engine(pgai_url: URL) -> Iterator[Engine]:
    """An engine on the ``pgai_url`` database."""
    engine = create_engine(pgai_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def blog_example(tmp_path: Path, engine: Engine) -> Engine:
    """The database with the page's blog example migrated: the blog table and its vectorizer.

    A fixture, so that the logging setup of ``alembic.ini`` is done before ``caplog`` starts.
    """
    config = alembic_config(tmp_path, blog_models())
    autogenerate(config, "0001")
    (versions(config) / "0002_blog_vectorizer.py").write_text(BLOG_VECTORIZER)
    command.upgrade(config, "head")
    return engine


def alembic_config(tmp_path: Path, metadata: MetaData) -> Config:
    """The project's ``alembic.ini`` and ``env.py`` on ``metadata``; versions in ``tmp_path``."""
    versions = tmp_path / "versions"
    versions.mkdir()
    config = Config(str(ALEMBIC_INI), output_buffer=io.StringIO())
    config.set_main_option("version_locations", str(versions))
    config.attributes["target_metadata"] = metadata
    return config


def versions(config: Config) -> Path:
    """The temporary versions directory of an :func:`alembic_config`."""
    return Path(config.get_main_option("version_locations") or "")


def autogenerate(config: Config, revision: str, write: bool = True) -> list[Any]:
    """``alembic revision --autogenerate`` through ``env.py``; returns the differences found.

    With ``write=False`` no file is written (Alembic's recipe: empty the directives).
    """
    diffs: list[Any] = []

    def capture(context: Any, revisions: Any, directives: list[MigrationScript]) -> None:
        for script in directives:
            diffs.extend(script.upgrade_ops.as_diffs())  # type: ignore[union-attr]
        if not write:
            directives.clear()

    command.revision(
        config,
        message=f"autogenerated {revision}",
        autogenerate=True,
        rev_id=revision,
        process_revision_directives=capture,
    )
    return diffs


def tables(diffs: list[Any]) -> list[tuple[str, str]]:
    """``(kind, table)`` of table-level differences, e.g. ``("add_table", "blog")``."""
    return [(diff[0], diff[1].fullname) for diff in diffs if diff[0].endswith("_table")]


def write_migration(config: Config, revision: str, upgrade: str, downgrade: str) -> None:
    """Write a hand-written migration after ``revision - 1`` (revisions are "0001", "0002", ...)."""
    down_revision = f"{int(revision) - 1:04d}"
    (versions(config) / f"{revision}_pgai.py").write_text(
        revision_source(
            f"pgai {revision}",
            revision,
            down_revision,
            upgrade=upgrade,
            downgrade=downgrade,
            imports=VECTORIZER_IMPORTS,
        )
    )


def compare_all_schemas(engine: Engine, metadata: MetaData) -> list[Any]:
    """Autogenerate's differences with ``include_schemas=True`` and the template's pgai hooks."""
    with engine.connect() as connection:
        register_types(connection.dialect)
        exclusion = Exclusion(metadata, connection)
        context = MigrationContext.configure(
            connection,
            opts={
                "include_schemas": True,
                "compare_type": True,
                "include_name": exclusion.include_name,
                "include_object": exclusion.include_object,
            },
        )
        diffs: list[Any] = compare_metadata(context, metadata)
        return diffs


def relations(engine: Engine, schema: str = "public") -> set[str]:
    """Tables and views in ``schema``."""
    inspector = inspect(engine)
    return set(inspector.get_table_names(schema)) | set(inspector.get_view_names(schema))


def vectorizers(engine: Engine) -> list[str]:
    """Names of the vectorizers in ``ai.vectorizer``."""
    with engine.connect() as connection:
        return list(connection.scalars(text("SELECT name FROM ai.vectorizer ORDER BY name")))


def test_blog_example_upgrades_checks_clean_and_downgrades(tmp_path: Path, engine: Engine) -> None:
    config = alembic_config(tmp_path, blog_models())
    assert tables(autogenerate(config, "0001")) == [("add_table", "blog")]
    (versions(config) / "0002_blog_vectorizer.py").write_text(BLOG_VECTORIZER)

    command.upgrade(config, "head")
    assert vectorizers(engine) == ["blog_content_embedder"]
    assert {"blog_embeddings_store", "blog_embeddings"} <= relations(engine)
    command.check(config)
    assert autogenerate(config, "0003", write=False) == []

    command.downgrade(config, "0001")
    assert vectorizers(engine) == []
    assert relations(engine) == {"alembic_version", "blog"}
    with engine.connect() as connection:
        queues = connection.scalar(
            text("SELECT count(*) FROM pg_tables WHERE tablename ~ '^_vectorizer_q'")
        )
    assert queues == 0

    command.upgrade(config, "head")
    assert vectorizers(engine) == ["blog_content_embedder"]
    command.check(config)


def test_vectorizer_before_pgai_install_fails_in_one_line(
    tmp_path: Path, fresh_database_url: URL
) -> None:
    config = alembic_config(tmp_path, blog_models())
    autogenerate(config, "0001")
    (versions(config) / "0002_blog_vectorizer.py").write_text(BLOG_VECTORIZER)
    with pytest.raises(CommandError) as raised:
        command.upgrade(config, "head")
    assert str(raised.value) == (
        f"database '{fresh_database_url.database}' at {location(fresh_database_url)} has no pgai "
        "library (schema ai); run `poetry run pgai-install` once, then migrate again"
    )
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    assert inspect(engine).get_table_names() == ["alembic_version"]  # made by autogenerate
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM alembic_version")) == 0
    engine.dispose()


@pytest.mark.usefixtures("pgai_url")
def test_blog_example_as_sql_names_the_vectorizer_to_drop(tmp_path: Path) -> None:
    config = alembic_config(tmp_path, blog_models())
    autogenerate(config, "0001")
    (versions(config) / "0002_blog_vectorizer.py").write_text(BLOG_VECTORIZER)
    buffer = config.output_buffer
    assert isinstance(buffer, io.StringIO)

    command.upgrade(config, "0001:0002", sql=True)
    assert "SELECT ai.create_vectorizer(\n'blog'::regclass" in buffer.getvalue()
    command.downgrade(config, "0002:0001", sql=True)
    assert "ai.drop_vectorizer('blog_content_embedder', drop_all => true)" in buffer.getvalue()


@pytest.mark.parametrize(
    ("target_table", "target_schema", "store"),
    [
        (None, None, "public.blog_embedding_store"),
        ("blog_embeddings_store", None, "public.blog_embeddings_store"),
        (None, "embeddings", "embeddings.blog_embedding_store"),
        ("blog_embeddings_store", "embeddings", "embeddings.blog_embeddings_store"),
    ],
    ids=["default", "target_table", "target_schema", "target_table_and_schema"],
)
def test_vectorizer_relationship_tables_are_neither_created_nor_dropped(
    tmp_path: Path,
    engine: Engine,
    target_table: str | None,
    target_schema: str | None,
    store: str,
) -> None:
    metadata = blog_models(vectorizer=True, target_table=target_table, target_schema=target_schema)
    config = alembic_config(tmp_path, metadata)
    assert tables(autogenerate(config, "0001")) == [("add_table", "blog")]
    assert store in metadata.tables
    command.upgrade(config, "head")
    command.check(config)

    schema = target_schema or "public"
    write_migration(
        config,
        "0002",
        upgrade=f"""
            op.execute("CREATE SCHEMA IF NOT EXISTS {schema}")
            op.create_vectorizer(
                source="blog",
                name="blog_embedder",
                destination=DestinationTableConfig(
                    target_table={target_table!r}, target_schema={target_schema!r}
                ),
                loading=LoadingColumnConfig(column_name="content"),
                embedding=EmbeddingOpenaiConfig(model="text-embedding-3-small", dimensions=768),
            )
        """,
        downgrade='op.drop_vectorizer(name="blog_embedder")',
    )
    command.upgrade(config, "head")
    assert store.split(".")[1] in relations(engine, schema)
    command.check(config)
    assert compare_all_schemas(engine, metadata) == []


def test_destination_in_another_schema_is_left_alone(tmp_path: Path, engine: Engine) -> None:
    config = alembic_config(tmp_path, blog_models())
    autogenerate(config, "0001")
    write_migration(
        config,
        "0002",
        upgrade="""
            op.execute("CREATE SCHEMA embeddings")
            op.create_vectorizer(
                source="blog",
                name="blog_embedder",
                destination=DestinationTableConfig(
                    destination="blog_embeddings", target_schema="embeddings"
                ),
                loading=LoadingColumnConfig(column_name="content"),
                embedding=EmbeddingOpenaiConfig(model="text-embedding-3-small", dimensions=768),
            )
        """,
        downgrade='op.drop_vectorizer(name="blog_embedder")',
    )
    command.upgrade(config, "head")
    assert "blog_embeddings_store" in relations(engine, "embeddings")
    command.check(config)
    assert compare_all_schemas(engine, blog_models()) == []


def test_vectorizers_on_a_table_the_models_do_not_know(tmp_path: Path, engine: Engine) -> None:
    metadata = blog_models()
    config = alembic_config(tmp_path, metadata)
    autogenerate(config, "0001")
    write_migration(
        config,
        "0002",
        upgrade="""
            op.execute("CREATE TABLE note (id int PRIMARY KEY, body text NOT NULL)")
            op.create_vectorizer(
                source="note",
                loading=LoadingColumnConfig(column_name="body"),
                embedding=EmbeddingOpenaiConfig(model="text-embedding-3-small", dimensions=768),
            )
            op.create_vectorizer(
                source="note",
                name="note_body_column",
                destination=DestinationColumnConfig(embedding_column="body_embedding"),
                loading=LoadingColumnConfig(column_name="body"),
                embedding=EmbeddingOpenaiConfig(model="text-embedding-3-small", dimensions=768),
                chunking=ChunkingNoneConfig(),
            )
        """,
        downgrade='op.execute("DROP TABLE note")',
    )
    command.upgrade(config, "head")
    assert {"note_embedding_store", "note_embedding"} <= relations(engine)

    # The source table itself is the user's, not pgai's: autogenerate may rightly propose
    # dropping it (when allowed to: the column vectorizer stored vectors in it), but nothing that
    # the vectorizers made.
    config.cmd_opts = Namespace(x=["allow_drop=note"])
    assert tables(autogenerate(config, "0003", write=False)) == [("remove_table", "note")]
    assert tables(compare_all_schemas(engine, metadata)) == [("remove_table", "note")]


def test_embedding_column_and_its_index_are_left_alone(tmp_path: Path, engine: Engine) -> None:
    metadata = note_models()
    config = alembic_config(tmp_path, metadata)
    autogenerate(config, "0001")
    write_migration(
        config,
        "0002",
        upgrade="""
            op.create_vectorizer(
                source="note",
                name="note_body_column",
                destination=DestinationColumnConfig(embedding_column="body_embedding"),
                loading=LoadingColumnConfig(column_name="body"),
                embedding=EmbeddingOpenaiConfig(model="text-embedding-3-small", dimensions=768),
                chunking=ChunkingNoneConfig(),
            )
            # What pgai's worker does once enough rows are embedded.
            op.execute(
                "CREATE INDEX note_body_embedding_idx ON note "
                "USING hnsw (body_embedding vector_cosine_ops)"
            )
        """,
        downgrade="""
            op.drop_vectorizer(name="note_body_column")
            op.drop_column("note", "body_embedding")
        """,
    )
    command.upgrade(config, "head")
    assert "body_embedding" in {column["name"] for column in inspect(engine).get_columns("note")}
    command.check(config)
    assert compare_all_schemas(engine, metadata) == []


def test_pgai_schema_is_left_out_on_both_sides(tmp_path: Path, engine: Engine) -> None:
    # A model of pgai's catalog, say for reading vectorizer names, is not the app's to create.
    metadata = MetaData()
    Table("vectorizer", metadata, Column("id", Integer, primary_key=True), schema="ai")
    command.check(alembic_config(tmp_path, metadata))
    assert compare_all_schemas(engine, metadata) == []
    with engine.connect() as connection:
        exclusion = Exclusion(metadata, connection)
        assert not exclusion.include_name("ai", "schema", {})
        assert exclusion.include_name("public", "schema", {})


def test_warns_when_no_vectorizer_writes_to_the_models_embedding_table(
    blog_example: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # The pitfall: without target_table=, the model's table is blog_embedding_store, while the
    # page's vectorizer writes to blog_embeddings_store.
    assert compare_all_schemas(blog_example, blog_models(vectorizer=True)) == []
    assert warnings(caplog) == [
        "public.blog_embedding_store is vectorizer_relationship's embedding table, but no "
        "vectorizer in the database writes to it: write op.create_vectorizer in a migration, "
        "with this table as its destination (docs/pgai.md)"
    ]

    caplog.clear()
    matching = blog_models(vectorizer=True, target_table="blog_embeddings_store")
    assert compare_all_schemas(blog_example, matching) == []
    assert warnings(caplog) == []


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the template's pgai module logged."""
    return [r.getMessage() for r in caplog.records if r.name == "pgvector_base.migration.pgai"]


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a new interpreter at the repository root (``DATABASE_URL`` inherited)."""
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_without_pgai_the_template_migration_tests_pass_and_never_import_it() -> None:
    result = run_python(
        BLOCK.format(module="pgai")
        + textwrap.dedent(
            """
            import pytest
            code = pytest.main(["-q", "-p", "no:cacheprovider", "tests/schema/test_migrations.py"])
            print("pgai modules:", [name for name in sys.modules if name.startswith("pgai.")])
            sys.exit(code)
            """
        )
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pgai modules: []" in result.stdout


def test_pgai_without_tiktoken_fails_in_one_line(tmp_path: Path) -> None:
    # Without tiktoken, importing pgai.alembic would end the process (pgai/vectorizer/__init__.py);
    # env.py imports it only for a migration that uses pgai's operations.
    migrations = Migrations(tmp_path)
    (migrations.versions / "0002_blog_vectorizer.py").write_text(BLOG_VECTORIZER)
    result = run_python(
        BLOCK.format(module="tiktoken")
        + f'from alembic.config import main\nmain(["-c", {str(migrations.ini)!r}, "check"])'
    )
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip()
    assert output == (
        "FAILED: pgai is installed without tiktoken, which its Alembic operations need; "
        "run `poetry install --with pgai`"
    )


def test_pgai_missing_a_module_of_its_import_chain_says_how_to_fix_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pgai.alembic", None)
    with pytest.raises(CommandError, match=r"^pgai is installed but its Alembic operations cannot"):
        register_operations()


def test_pgai_install_command_installs_once_and_again(
    fresh_database_url: URL, capsys: pytest.CaptureFixture[str]
) -> None:
    pgai_setup.main()
    pgai_setup.main()
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    assert vectorizers(engine) == []  # pgai's catalog is there, and empty
    engine.dispose()
    assert capsys.readouterr().out.count("pgai is installed in") == 2


def test_pgai_install_command_reports_an_unreachable_server_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:s3cret@127.0.0.1:9/app")
    with pytest.raises(SystemExit) as exit_info:
        pgai_setup.main()
    message = str(exit_info.value.code)
    assert message.startswith(
        "cannot install pgai into postgresql+psycopg2://app:***@127.0.0.1:9/app"
    )
    assert "s3cret" not in message
    assert len(message.splitlines()) == 1


def test_pgai_install_command_without_pgai_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pgai", None)
    with pytest.raises(SystemExit) as exit_info:
        pgai_setup.main()
    assert exit_info.value.code == "pgai is not installed; run `poetry install --with pgai`"
