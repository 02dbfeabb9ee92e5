"""Alembic driven in-process, the way a user drives it from the shell, for the autogenerate tests.

A :class:`Project` is the template's ``migrations/`` environment (its ``env.py`` and
``script.py.mako``) with a versions directory of its own and models that each test declares, so a
test can autogenerate, upgrade, check and downgrade without a subprocess per command.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Engine

REPOSITORY_ROOT = Path(__file__).resolve().parents[3]


class Project:
    """``alembic.ini`` and ``migrations/env.py`` as shipped, with versions kept in ``versions``.

    ``env.py`` connects through ``engine`` and compares against the models in
    ``config.attributes``, the two hand-overs it accepts from programs (pytest-alembic's
    convention). The post-write hooks (ruff) are off unless ``hooks`` is true: one test runs
    them, the rest need not pay for them.
    """

    def __init__(self, engine: Engine, versions: Path, *, hooks: bool = False) -> None:
        versions.mkdir(parents=True, exist_ok=True)
        self.engine = engine
        self.versions = versions
        self.output = io.StringIO()
        self.config = Config(str(REPOSITORY_ROOT / "alembic.ini"), output_buffer=self.output)
        self.config.set_main_option("version_locations", str(versions))
        self.config.attributes["connection"] = engine
        if not hooks:
            self.config.set_section_option("post_write_hooks", "hooks", "")

    def revise(self, metadata: MetaData, message: str = "change") -> str:
        """Autogenerate a revision for ``metadata``; return the generated file's text."""
        self.config.attributes["target_metadata"] = metadata
        script = command.revision(self.config, message=message, autogenerate=True)
        assert script is not None
        assert not isinstance(script, list)
        return Path(script.path).read_text()

    def check(self, metadata: MetaData) -> None:
        """``alembic check`` against ``metadata``: raises if autogenerate would write anything."""
        self.config.attributes["target_metadata"] = metadata
        command.check(self.config)

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

    def drop_all_tables(self) -> None:
        """Empty the database's current schema, so the next test starts from nothing."""
        for (table,) in self.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ):
            self.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
