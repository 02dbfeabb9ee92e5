"""Squawk on the SQL of each migration (``.ci/lint-migrations``): unsafe operations are flagged.

The shipped migrations pass. Revisions written after them each do one unsafe thing to the
existing ``product`` table, and each is flagged with its rule, in its own file; the safe way to
build an index on a populated table, and a finding silenced by a comment, are not.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict

from .revisions import REPOSITORY_ROOT, Migrations

LINT_MIGRATIONS = REPOSITORY_ROOT / ".ci" / "lint-migrations"
# squawk --reporter gcc: "FILE:LINE:COLUMN: warning: RULE MESSAGE"
FINDING = re.compile(r"^(?P<file>[^:\s]+\.sql):\d+:\d+: \w+: (?P<rule>[a-z-]+) ", re.MULTILINE)


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


def test_shipped_migrations_pass() -> None:
    assert lint() == (0, {})


def test_unsafe_operations_are_flagged_in_the_revision_that_does_them(
    migrations: Migrations,
) -> None:
    unsafe = {
        migrations.add(
            "index on an existing table", 'op.create_index("ix_product_name", "product", ["name"])'
        ): "require-concurrent-index-creation",
        migrations.add(
            "type rewrite",
            'op.alter_column("product", "embedding", type_=VECTOR(768))',
            imports="from pgvector.sqlalchemy import VECTOR",
        ): "changing-column-type",
        migrations.add(
            "new column not null without default",
            'op.add_column("product", sa.Column("sku", sa.Text(), nullable=False))',
        ): "adding-required-field",
        migrations.add(
            "existing column set not null",
            'op.alter_column("product", "embedding", nullable=False)',
        ): "adding-not-nullable-field",
    }
    concurrent = migrations.add(
        "concurrent index",
        'indexes.create_index_concurrently("ix_product_description", "product", ["description"])',
        imports="from pgvector_base.migration import indexes",
    )
    silenced = migrations.add(
        "silenced rewrite",
        """
        # squawk-ignore-file changing-column-type -- a test of the ignore comment
        op.alter_column("product", "description", type_=sa.String(500))
        """,
    )
    status, findings = lint("--config", str(migrations.ini))
    assert status == 1
    revisions = migrations.revisions()
    assert {concurrent, silenced} <= revisions
    flagged = {
        next(revision for revision in revisions if revision in file): rules
        for file, rules in findings.items()
    }
    assert flagged == {revision: {rule} for revision, rule in unsafe.items()}
