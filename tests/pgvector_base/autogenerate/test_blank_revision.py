"""A blank revision (``alembic revision -m``) keeps ``op`` and ``sa``, and passes ruff and mypy.

Filled in as Alembic's tutorial shows, it runs as written.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import BigInteger, Column, MetaData, Table, Text
from sqlalchemy.engine import Engine

from ..revisions import passes_lint_and_types
from .project import Project

BODY = """    op.create_table(
        "memo",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("body", sa.Text()),
    )"""


def test_a_blank_revision_filled_in_by_hand_runs(module_engine: Engine, tmp_path: Path) -> None:
    project = Project(module_engine, tmp_path / "migrations" / "versions", hooks=True)
    try:
        path = project.blank("memo table")
        written = path.read_text()
        assert "import sqlalchemy as sa\nfrom alembic import op\n" in written
        passes_lint_and_types(path)

        upgrade = '    """Upgrade schema."""\n    pass'
        downgrade = '    """Downgrade schema."""\n    pass'
        assert upgrade in written
        assert downgrade in written
        path.write_text(
            written.replace(upgrade, upgrade.replace("pass", BODY.lstrip())).replace(
                downgrade, downgrade.replace("pass", 'op.drop_table("memo")')
            )
        )
        passes_lint_and_types(path)
        project.upgrade()
        memo = MetaData()
        Table("memo", memo, Column("id", BigInteger, primary_key=True), Column("body", Text))
        project.settled(memo)
        project.downgrade()
        assert project.fetch("SELECT to_regclass('memo')") == [(None,)]
    finally:
        project.drop_all_tables()
