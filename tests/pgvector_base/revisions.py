"""Migrations of a test's own, run by the template's ``env.py`` as a user runs ``alembic``.

A test writes its revisions into a temporary directory, the first with no ``down_revision``, and
gets an ``alembic.ini`` that reads only that directory: never the project's ``migrations/versions``.
The directory's ``env.py`` runs the template's ``migrations/env.py`` with the test's models as its
target metadata (``models.py`` beside it, empty unless the test writes one), so that neither
``alembic check`` nor the version checks before a run depend on what ``app.models`` declares.
``alembic`` runs in a subprocess, as at a container's start, so its exit code and its output are
the ones a user sees; in-process commands take :meth:`Migrations.config`.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from pathlib import Path
from typing import IO

from alembic.config import Config
from alembic.script import ScriptDirectory

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_MIGRATIONS = REPOSITORY_ROOT / "migrations"
ALEMBIC_TIMEOUT = 120
RUNNING_UPGRADE = re.compile(r"Running upgrade (\w*) -> (\w+),")

ENV_PY = f'''"""The template's env.py, with models.py beside this file as its target metadata."""

import runpy
from pathlib import Path

from alembic import context

# A caller's metadata (pytest-alembic's, a test's in-process command) still comes first.
if "target_metadata" not in context.config.attributes:
    models = runpy.run_path(str(Path(__file__).with_name("models.py")))
    context.config.attributes["target_metadata"] = models["metadata"]
runpy.run_path({str(TEMPLATE_MIGRATIONS / "env.py")!r})
'''
NO_MODELS = "from sqlalchemy import MetaData\n\nmetadata = MetaData()\n"

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


def revision_source(
    message: str,
    revision: str,
    down_revision: str | None,
    *,
    upgrade: str,
    downgrade: str = "pass",
    imports: str = "",
) -> str:
    """A revision file's text: ``upgrade`` and ``downgrade`` are function bodies (dedented here),
    ``imports`` adds import lines."""
    return REVISION_TEMPLATE.format(
        message=message,
        imports=imports,
        revision=revision,
        down_revision=down_revision,
        upgrade=textwrap.indent(textwrap.dedent(upgrade).strip(), "    "),
        downgrade=textwrap.indent(textwrap.dedent(downgrade).strip(), "    "),
    )


class Migrations:
    """A migrations directory of a test's own under ``directory``, with its ``alembic.ini``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.versions = directory / "versions"
        self.versions.mkdir(parents=True)
        (directory / "env.py").write_text(ENV_PY)
        (directory / "models.py").write_text(NO_MODELS)
        shutil.copy(TEMPLATE_MIGRATIONS / "script.py.mako", directory)
        self.ini = directory / "alembic.ini"
        self.head: str | None = None
        parser = configparser.RawConfigParser()
        parser.read(REPOSITORY_ROOT / "alembic.ini")
        parser["alembic"]["script_location"] = str(directory)
        parser["alembic"]["prepend_sys_path"] = str(REPOSITORY_ROOT)
        with self.ini.open("w") as file:
            parser.write(file)

    def models(self, source: str) -> None:
        """Make ``source``, a module defining ``metadata``, the models ``env.py`` compares to."""
        (self.directory / "models.py").write_text(textwrap.dedent(source))

    def add(self, message: str, upgrade: str, downgrade: str = "pass", imports: str = "") -> str:
        """Write a revision after the current head (the first has none); return its id."""
        revision = uuid.uuid4().hex[:12]
        source = revision_source(
            message, revision, self.head, upgrade=upgrade, downgrade=downgrade, imports=imports
        )
        (self.versions / f"{revision}_{message.replace(' ', '_')}.py").write_text(source)
        self.head = revision
        return revision

    def config(self) -> Config:
        """The ``alembic.ini`` as an in-process command reads it."""
        return Config(str(self.ini))

    def revisions(self) -> set[str]:
        """Every revision the test wrote."""
        script = ScriptDirectory.from_config(self.config())
        return {revision.revision for revision in script.walk_revisions()}

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``alembic ARGS`` to completion; ``env`` is added to this process's environment
        (where the fixtures set ``DATABASE_URL``)."""
        return subprocess.run(
            self.command(*args),
            cwd=REPOSITORY_ROOT,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            check=False,
            timeout=ALEMBIC_TIMEOUT,
        )

    def start(
        self, *args: str, env: dict[str, str] | None = None, stderr: IO[str] | int = subprocess.PIPE
    ) -> subprocess.Popen[str]:
        """Start ``alembic ARGS`` without waiting; output is collected for ``communicate()``,
        or its log goes to ``stderr`` (a file the test can read while it runs)."""
        return subprocess.Popen(
            self.command(*args),
            cwd=REPOSITORY_ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )

    def command(self, *args: str) -> list[str]:
        """The ``alembic ARGS`` command line, with this directory's ``alembic.ini``."""
        return [sys.executable, "-m", "alembic", "-c", str(self.ini), *args]


def run_replicas(migrations: Migrations, count: int, env: dict[str, str]) -> Counter[str]:
    """Start ``count`` replicas' ``alembic upgrade head`` at once, with ``env`` added to the
    environment; assert all succeed; count each revision's runs."""
    replicas = [migrations.start("upgrade", "head", env=env) for _ in range(count)]
    runs: Counter[str] = Counter()
    for replica in replicas:
        try:
            stdout, stderr = replica.communicate(timeout=ALEMBIC_TIMEOUT)
        except subprocess.TimeoutExpired:
            for each in replicas:
                each.kill()
            raise
        assert replica.returncode == 0, stdout + stderr
        runs.update(match[2] for match in RUNNING_UPGRADE.finditer(stderr))
    return runs


def failed_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``FAILED:`` line of a failed run (Alembic prints it on stdout), with no traceback."""
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    (line,) = [line for line in output.splitlines() if line.startswith("FAILED:")]
    return line


def passes_lint_and_types(*files: Path | str) -> None:
    """ruff check, ruff format --check and mypy --strict on ``files``, as the project runs them."""
    for tool in (["ruff", "check"], ["ruff", "format", "--check"], ["mypy", "--strict"]):
        result = subprocess.run(
            [sys.executable, "-m", *tool, *map(str, files)],
            cwd=REPOSITORY_ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
