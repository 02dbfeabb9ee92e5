"""Squawk on the SQL of each migration (``.ci/lint-migrations``): unsafe operations are flagged.

A first revision creates a table, and passes. Revisions written after it each do one unsafe thing
to that existing table, and each is flagged with its rule, in its own file; the safe way to build
an index on a populated table, and a finding silenced by a comment, are not.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict

from ..revisions import REPOSITORY_ROOT, Migrations

LINT_MIGRATIONS = REPOSITORY_ROOT / ".ci" / "lint-migrations"
# squawk --reporter gcc: "FILE:LINE:COLUMN: warning: RULE MESSAGE"
FINDING = re.compile(r"^(?P<file>[^:\s]+\.sql):\d+:\d+: \w+: (?P<rule>[a-z-]+) ", re.MULTILINE)
CREATE_WIDGET = """
op.create_table(
    "widget",
    sa.Column("id", sa.BigInteger(), nullable=False),
    sa.Column("name", sa.String(length=200), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("embedding", VECTOR(dim=3), nullable=True),
    sa.PrimaryKeyConstraint("id", name="pk_widget"),
)
"""
VECTOR_IMPORT = "from pgvector.sqlalchemy import VECTOR"


def lint(*args: str) -> tuple[int, dict[str, set[str]]]:
    """Run ``.ci/lint-migrations ARGS --reporter gcc``: exit status, rules found per file."""
    result = subprocess.run(
        [sys.executable, str(LINT_MIGRATIONS), *args, "--reporter", "gcc"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    findings: dict[str, set[str]] = defaultdict(set)
    for match in FINDING.finditer(result.stdout):
        findings[match["file"]].add(match["rule"])
    assert result.returncode in {0, 1}, result.stdout + result.stderr
    return result.returncode, dict(findings)


def test_unsafe_operations_are_flagged_in_the_revision_that_does_them(
    migrations: Migrations,
) -> None:
    created = migrations.add("widget", CREATE_WIDGET, imports=VECTOR_IMPORT)
    unsafe = {
        migrations.add(
            "index on an existing table", 'op.create_index("ix_widget_name", "widget", ["name"])'
        ): "require-concurrent-index-creation",
        migrations.add(
            "type rewrite",
            'op.alter_column("widget", "embedding", type_=VECTOR(4))',
            imports=VECTOR_IMPORT,
        ): "changing-column-type",
        migrations.add(
            "new column not null without default",
            'op.add_column("widget", sa.Column("sku", sa.Text(), nullable=False))',
        ): "adding-required-field",
        migrations.add(
            "existing column set not null",
            'op.alter_column("widget", "embedding", nullable=False)',
        ): "adding-not-nullable-field",
    }
    concurrent = migrations.add(
        "concurrent index",
        'indexes.create_index_concurrently("ix_widget_description", "widget", ["description"])',
        imports="from pgvector_base.migration import indexes",
    )
    silenced = migrations.add(
        "silenced rewrite",
        """
        # squawk-ignore-file changing-column-type -- a test of the ignore comment
        op.alter_column("widget", "description", type_=sa.String(500))
        """,
    )
    status, findings = lint("--config", str(migrations.ini))
    assert status == 1
    revisions = migrations.revisions()
    assert {created, concurrent, silenced} <= revisions
    flagged = {
        next(revision for revision in revisions if revision in file): rules
        for file, rules in findings.items()
    }
    assert flagged == {revision: {rule} for revision, rule in unsafe.items()}
