"""Alembic driven in-process, the way a user drives it from the shell, for the autogenerate tests.

A :class:`Project` is the template's ``migrations/`` environment (its ``env.py`` and
``script.py.mako``) with a versions directory of its own and models that each test declares, so a
test can autogenerate, upgrade, check and downgrade without a subprocess per command.
"""

from __future__ import annotations

import io
import shutil
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Engine

REPOSITORY_ROOT = Path(__file__).resolve().parents[3]


class Project:
    """``alembic.ini`` and ``migrations/env.py`` as shipped, with versions kept in ``versions``.

    ``env.py`` connects through ``engine`` and compares against the models in
    ``config.attributes``, the two hand-overs it accepts from programs (pytest-alembic's
    convention). The post-write hooks (ruff) are off unless ``hooks`` is true: a few tests run
    them, the rest need not pay for them. With hooks, ``versions`` must be a
    ``.../migrations/versions`` folder: the project's ``pyproject.toml`` is copied two levels up,
    so ruff applies the settings a project's ``migrations/versions`` gets.
    """

    def __init__(self, engine: Engine, versions: Path, *, hooks: bool = False) -> None:
        versions.mkdir(parents=True, exist_ok=True)
        if hooks:
            assert versions.parts[-2:] == ("migrations", "versions")
            shutil.copy(REPOSITORY_ROOT / "pyproject.toml", versions.parents[1])
        self.engine = engine
        self.versions = versions
        self.output = io.StringIO()
        self.config = Config(str(REPOSITORY_ROOT / "alembic.ini"), output_buffer=self.output)
        self.config.set_main_option("version_locations", str(versions))
        self.config.attributes["connection"] = engine
        if not hooks:
            self.config.set_section_option("post_write_hooks", "hooks", "")

    def revise(self, metadata: MetaData, message: str = "change", **x: str) -> str:
        """Autogenerate a revision for ``metadata`` (``x``: the ``-x`` arguments); its text."""
        self.config.attributes["target_metadata"] = metadata
        self.config.cmd_opts = Namespace(x=[f"{key}={value}" for key, value in x.items()])
        script = command.revision(self.config, message=message, autogenerate=True)
        assert script is not None
        assert not isinstance(script, list)
        return Path(script.path).read_text()

    def refused(self, metadata: MetaData, **x: str) -> str:
        """Assert that :meth:`revise` stops with an error and writes no revision; its message."""
        before = set(self.versions.glob("*.py"))
        with pytest.raises(CommandError) as raised:
            self.revise(metadata, **x)
        assert set(self.versions.glob("*.py")) == before
        return str(raised.value)

    def blank(self, message: str) -> Path:
        """``alembic revision -m message``: a revision to fill in by hand; its path."""
        script = command.revision(self.config, message=message)
        assert script is not None
        assert not isinstance(script, list)
        return Path(script.path)

    def check(self, metadata: MetaData) -> None:
        """``alembic check`` against ``metadata``: raises if autogenerate would write anything."""
        self.config.attributes["target_metadata"] = metadata
        self.config.cmd_opts = None
        command.check(self.config)

    def settled(self, metadata: MetaData) -> None:
        """Assert that the database matches ``metadata``, both ways a user would ask.

        ``alembic check`` finds nothing, and a new autogenerate writes an empty revision, which
        is then removed.
        """
        self.check(metadata)
        before = set(self.versions.glob("*.py"))
        generated = self.revise(metadata, message="nothing")
        (path,) = set(self.versions.glob("*.py")) - before
        path.unlink()
        body = generated.split("def upgrade()", 1)[1]
        code = [line.strip() for line in body.splitlines()]
        assert [line for line in code if line and not line.startswith("#")] == [
            "-> None:",
            '"""Upgrade schema."""',
            "pass",
            "def downgrade() -> None:",
            '"""Downgrade schema."""',
            "pass",
        ], generated

    def upgrade(self, revision: str = "head") -> None:
        """``alembic upgrade``."""
        command.upgrade(self.config, revision)

    def downgrade(self, revision: str = "-1") -> None:
        """``alembic downgrade``."""
        command.downgrade(self.config, revision)

    def sql(self, *, upgrade: bool = True) -> str:
        """The offline script of ``upgrade head --sql``, or of ``downgrade head:base --sql``."""
        self.output.seek(0)
        self.output.truncate()
        if upgrade:
            command.upgrade(self.config, "head", sql=True)
        else:
            command.downgrade(self.config, "head:base", sql=True)
        return self.output.getvalue()

    def fetch(self, sql: str, **parameters: Any) -> list[tuple[Any, ...]]:
        """The rows of one query on the project's database."""
        with self.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql), parameters)]

    def execute(self, sql: str, *, autocommit: bool = False, **parameters: Any) -> None:
        """Run one statement on the project's database, in a transaction unless ``autocommit``."""
        with self.engine.connect() as connection:
            if autocommit:
                connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(text(sql), parameters)
            connection.commit()

    def index(self, name: str) -> tuple[str, list[str], dict[str, str], str] | None:
        """Access method, operator classes, ``WITH`` parameters and definition of index ``name``."""
        found = self.fetch(
            "SELECT method.amname, array(SELECT class.opcname FROM unnest(ix.indclass::oid[]) "
            "WITH ORDINALITY AS key(oid, n) JOIN pg_opclass AS class ON class.oid = key.oid "
            "ORDER BY key.n), coalesce(index.reloptions, '{}'), pg_get_indexdef(index.oid) "
            "FROM pg_index AS ix JOIN pg_class AS index ON index.oid = ix.indexrelid "
            "JOIN pg_am AS method ON method.oid = index.relam WHERE index.oid = to_regclass(:name)",
            name=name,
        )
        if not found:
            return None
        ((method, operator_classes, options, definition),) = found
        return method, operator_classes, dict(item.split("=") for item in options), definition

    def tables(self) -> list[str]:
        """``schema.table`` of every table outside the system schemas, sorted."""
        return [
            f"{schema}.{table}"
            for schema, table in self.fetch(
                "SELECT schemaname, tablename FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
            )
        ]

    def drop_all_tables(self) -> None:
        """Drop every schema but the current one, and every table and type in it.

        The next test starts from nothing, whatever schemas, tables, views, sequences or enum
        types this one created. The ``vector`` extension stays where it is.
        """
        for (schema,) in self.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname <> current_schema() "
            "AND nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' "
            "AND oid NOT IN (SELECT extnamespace FROM pg_extension)"
        ):
            self.execute(f'DROP SCHEMA "{schema}" CASCADE')
        for (table,) in self.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ):
            self.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
        for (sequence,) in self.fetch(
            "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()"
        ):
            self.execute(f'DROP SEQUENCE IF EXISTS "{sequence}" CASCADE')
        for (enum,) in self.fetch(
            "SELECT typname FROM pg_type WHERE typtype = 'e' "
            "AND typnamespace = current_schema()::regnamespace"
        ):
            self.execute(f'DROP TYPE "{enum}" CASCADE')
