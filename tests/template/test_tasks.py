"""The task script by hand, on a copy of the working tree as a clone has it (no Copier).

Its result is judged by independent tools: ruff (the import pruning and the blank lines left where
a passage was) and the files themselves, before and after.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPOSITORY_ROOT
from tests.template.projects import copy_files, run, snapshot, working_tree_files

TASKS = Path(".copier/tasks.py")
REMOVED_PATHS = (
    "src/app/cli.py",
    "tests/example",
    "docs/example.md",
    "tests/pgvector_base/test_pgai.py",
    "copier.yml",
    "{{ _copier_conf.answers_file }}.jinja",
    "tests/template",
)
ANSWERS = "include_example: true\ninclude_pgai: true\nproject_name: pgvector base\n"


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """The working tree's files, as a fresh clone of the template has them."""
    copy_files(working_tree_files(), REPOSITORY_ROOT, tmp_path)
    return tmp_path


def tasks(root: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the task script of ``root`` there."""
    return subprocess.run(
        [sys.executable, str(TASKS), *arguments],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )


def test_removal_leaves_a_lint_clean_project_and_a_second_run_changes_nothing(clone: Path) -> None:
    (clone / ".copier-answers.yml").write_text(ANSWERS)
    before = snapshot(clone)
    arguments = ("--project-name=Acme Search", "--include-example=false", "--include-pgai=false")
    first = tasks(clone, *arguments)
    assert first.returncode == 0, first.stderr
    after_first = snapshot(clone)
    assert tasks(clone, *arguments).returncode == 0
    assert snapshot(clone) == after_first

    for path in REMOVED_PATHS:
        assert not (clone / path).exists(), path
    assert not list((clone / "migrations" / "versions").glob("*.py"))
    # errors="replace": the benchmark's charts are PNG files.
    texts = {name: content.decode(errors="replace") for name, content in after_first.items()}
    markdown = [text for name, text in texts.items() if name.endswith(".md")]
    assert not [text for text in markdown if "<!-- example -->" in text or "<!-- pgai -->" in text]
    assert "Product" not in texts["src/app/models.py"]
    assert "pgvector-app" not in texts["pyproject.toml"]
    assert "pgai-install" not in texts["pyproject.toml"]
    assert "--with pgai" not in texts["README.md"]
    assert "include_example: false\ninclude_pgai: false\n" in texts[".copier-answers.yml"]
    changed = [name for name in after_first if name.endswith(".py") and name in before]
    changed = [name for name in changed if before[name] != after_first[name]]
    assert changed == ["src/app/models.py"]
    run([sys.executable, "-m", "ruff", "check", "--no-cache", *changed], clone)
    run([sys.executable, "-m", "ruff", "format", "--no-cache", "--check", *changed], clone)


def test_models_written_inside_the_example_passage_stay(clone: Path) -> None:
    models = clone / "src" / "app" / "models.py"
    team = models.read_text().replace("class Product(Base):", "class Document(Base):")
    models.write_text(team.replace('"product"', '"document"'))
    result = tasks(clone, "--include-example=false")
    assert result.returncode == 0, result.stderr
    text = models.read_text()
    assert "class Document(Base):" in text
    assert "EMBEDDING_DIM = 1536" in text
    assert "# <example>" not in text
    assert "# </example>" not in text
    run([sys.executable, "-m", "ruff", "check", "--no-cache", str(models)], clone)
    run([sys.executable, "-m", "ruff", "format", "--no-cache", "--check", str(models)], clone)


def test_an_unclosed_marker_is_refused_in_one_line_and_nothing_changes(clone: Path) -> None:
    readme = clone / "README.md"
    readme.write_text(readme.read_text() + "\n<!-- example -->\nunclosed\n")
    before = snapshot(clone)
    result = tasks(clone, "--project-name=Acme Search", "--include-example=false")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("FAILED: README.md: line ")
    assert line.endswith("<!-- example --> has no closing <!-- /example -->")
    assert snapshot(clone) == before
