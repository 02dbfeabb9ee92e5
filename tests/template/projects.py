"""Helpers of the generation tests: templates as git repositories, Copier, and commands run in
a generated project.

A generated project's commands run with this checkout's virtualenv (``sys.executable``) and the
project's own ``src`` first on ``PYTHONPATH``, on databases of the test server: no test starts an
embedded server of its own, and only the full README command installs a project of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlalchemy.engine import URL

from tests.conftest import REPOSITORY_ROOT

# Commits made by the tests, and by Copier during an update, need an author even where git has
# no identity configured (CI runners).
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Template tests",
    "GIT_AUTHOR_EMAIL": "template-tests@example.invalid",
    "GIT_COMMITTER_NAME": "Template tests",
    "GIT_COMMITTER_EMAIL": "template-tests@example.invalid",
}
# Settings of this test run that must not leak into a generated project's commands.
OWN_SETTINGS = ("VIRTUAL_ENV", "PYTHONPATH", "DATABASE_URL", "TEST_DATABASE_URL", "PYTEST_ADDOPTS")


def clean_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment minus its virtualenv and database settings, plus ``settings``."""
    environment = {k: v for k, v in os.environ.items() if k not in OWN_SETTINGS}
    own_bin = str(Path(sys.executable).parent)
    environment["PATH"] = os.pathsep.join(
        entry for entry in environment.get("PATH", "").split(os.pathsep) if entry != own_bin
    )
    return {**environment, **GIT_IDENTITY, **settings}


def run(
    command: Sequence[str | Path],
    cwd: Path,
    settings: Mapping[str, str] | None = None,
    *,
    timeout: float = 300,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in ``cwd`` in a clean environment plus ``settings``; unless ``check`` is
    false, fail with its output when it fails."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=clean_environment(settings or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0 or not check, (
        f"{' '.join(map(str, command))} failed in {cwd}:\n{result.stdout}\n{result.stderr}"
    )
    return result


def working_tree_files(root: Path = REPOSITORY_ROOT) -> list[str]:
    """The files of the working tree that git tracks or would track (not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted({name for name in listed.split("\0") if name and (root / name).is_file()})


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but git's own, and its content."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(root).parts[:1]
    }


def copy_files(names: Sequence[str], source: Path, destination: Path) -> None:
    """Copy the files ``names`` from ``source`` to ``destination``, keeping their modes."""
    for name in names:
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, destination / name)


def commit_all(repository: Path, message: str) -> str:
    """Commit every file of ``repository`` (``git init`` first if needed); return the commit."""
    if not (repository / ".git").exists():
        run(["git", "init", "-q", "-b", "main"], repository)
    run(["git", "add", "-A"], repository)
    run(["git", "commit", "-q", "--no-verify", "-m", message], repository)
    return run(["git", "rev-parse", "HEAD"], repository).stdout.strip()


def copier(*arguments: str | Path, cwd: Path, **answers: str) -> None:
    """Run ``copier ARGUMENTS --trust --defaults`` in ``cwd``, with ``answers`` to its questions."""
    data = [f"--data={name}={value}" for name, value in answers.items()]
    run([sys.executable, "-m", "copier", *arguments, "--trust", "--defaults", *data], cwd)


def project_settings(project: Path, database: URL | None = None, **settings: str) -> dict[str, str]:
    """Settings that run ``project``'s code with this virtualenv, on ``database`` if given."""
    if database is not None:
        settings["DATABASE_URL"] = database.render_as_string(hide_password=False)
    return {"PYTHONPATH": str(project / "src"), **settings}


# A team's own schema, as the trial had it: tables with names of their own, a foreign key,
# a halfvec column with an HNSW index, and a plain vector one.
TEAM_IMPORTS = """\
from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy import BigInteger, ForeignKey, Index, Text
from sqlalchemy.orm import Mapped, mapped_column
"""
TEAM_MODELS = '''

class Document(Base):
    """A document, cut into chunks."""

    __tablename__ = "document"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    title: Mapped[str] = mapped_column(Text)


class Chunk(Base):
    """A passage of a document and its embedding."""

    __tablename__ = "chunk"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("document.id"))
    body: Mapped[str] = mapped_column(Text)
    embedding: Mapped[list[float] | None] = mapped_column(HALFVEC(768))

    __table_args__ = (
        Index(
            "ix_chunk_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "halfvec_cosine_ops"},
        ),
    )


class Item(Base):
    """Something else with an embedding, not indexed."""

    __tablename__ = "item"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    embedding: Mapped[list[float] | None] = mapped_column(VECTOR(3))
'''


def add_team_models(project: Path, python: Path | str = sys.executable) -> None:
    """Add the team's models to ``project``'s models.py as a developer would: write them, then let
    ruff (run by ``python``) merge and sort the imports and format the file."""
    models = project / "src" / "app" / "models.py"
    future = "from __future__ import annotations\n\n"
    text = models.read_text().replace(future, future + TEAM_IMPORTS, 1)
    models.write_text(text + TEAM_MODELS)
    run([python, "-m", "ruff", "check", "--no-cache", "--fix", "--select", "I", models], project)
    run([python, "-m", "ruff", "format", "--no-cache", models], project)
