"""The shipped migrations plus revisions a test writes, and ``alembic`` run as a user runs it.

Each test that needs migrations of its own (a slow one, one that alters ``product``) writes them
into a temporary versions directory, chained after the shipped head, and gets an ``alembic.ini``
that reads both directories. ``alembic`` then runs in a subprocess, as at a container's start, so
its exit code and its output are the ones a user sees.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

REPOSITORY_ROOT = Path(__file__).resolve().parents[3]
SHIPPED_INI = REPOSITORY_ROOT / "alembic.ini"
ALEMBIC_TIMEOUT = 120

REVISION_TEMPLATE = '''"""{message}"""

import sqlalchemy as sa
from alembic import op
{imports}

revision = "{revision}"
down_revision = {down_revision!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


def shipped_head() -> str:
    """The head revision of the template's own migrations."""
    head = ScriptDirectory.from_config(Config(str(SHIPPED_INI))).get_current_head()
    assert head is not None
    return head


class Migrations:
    """The template's ``migrations/`` with an extra versions directory under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.versions = directory / "versions"
        self.versions.mkdir(parents=True)
        self.ini = directory / "alembic.ini"
        self.head = shipped_head()
        parser = configparser.RawConfigParser()
        parser.read(SHIPPED_INI)
        parser["alembic"]["script_location"] = str(REPOSITORY_ROOT / "migrations")
        parser["alembic"]["prepend_sys_path"] = str(REPOSITORY_ROOT)
        parser["alembic"]["version_locations"] = os.pathsep.join(
            [str(REPOSITORY_ROOT / "migrations" / "versions"), str(self.versions)]
        )
        with self.ini.open("w") as file:
            parser.write(file)

    def add(self, message: str, upgrade: str, downgrade: str = "pass", imports: str = "") -> str:
        """Write a revision after the current head; return its id.

        ``upgrade`` and ``downgrade`` are function bodies; ``imports`` adds import lines.
        """
        revision = uuid.uuid4().hex[:12]
        source = REVISION_TEMPLATE.format(
            message=message,
            imports=imports,
            revision=revision,
            down_revision=self.head,
            upgrade=textwrap.indent(textwrap.dedent(upgrade).strip(), "    "),
            downgrade=textwrap.indent(textwrap.dedent(downgrade).strip(), "    "),
        )
        (self.versions / f"{revision}_{message.replace(' ', '_')}.py").write_text(source)
        self.head = revision
        return revision

    def revisions(self) -> set[str]:
        """Every revision: the shipped ones and the test's."""
        script = ScriptDirectory.from_config(Config(str(self.ini)))
        return {revision.revision for revision in script.walk_revisions()}

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``alembic ARGS`` with this project's ``alembic.ini``; see :func:`run_alembic`."""
        return run_alembic("-c", str(self.ini), *args, env=env)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start ``alembic ARGS`` without waiting; output is collected for ``communicate()``."""
        return subprocess.Popen(
            [sys.executable, "-m", "alembic", "-c", str(self.ini), *args],
            cwd=REPOSITORY_ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def run_alembic(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``alembic ARGS`` from the repository root to completion.

    ``env`` is added to this process's environment (where the fixtures set ``DATABASE_URL``).
    """
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=REPOSITORY_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=ALEMBIC_TIMEOUT,
    )


def failed_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``FAILED:`` line of a failed run (Alembic prints it on stdout), with no traceback."""
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    (line,) = [line for line in output.splitlines() if line.startswith("FAILED:")]
    return line
