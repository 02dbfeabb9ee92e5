"""Apply Copier's answers to the project: its name, and whether it keeps the example and pgai.

Copier runs this after ``copier copy`` and on every ``copier update`` (``_tasks`` in copier.yml);
it also works by hand, in a clone or in a generated project::

    python3 .copier/tasks.py --include-example=false

In a clone, it also deletes the template's own files, which Copier leaves out of a generated
project: the clone becomes the project that ``copier copy`` with the same answers would have made.

Each step turns the template's text into what an answer asks for, and finds nothing left to do the
second time, so replaying it on an update changes nothing more. Every file is checked before any is
written, so a refusal leaves the project as it was. Standard library only: it runs before the
project has a virtualenv.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ANSWERS_FILE = ".copier-answers.yml"

# The template's own names, which --project-name replaces.
TEMPLATE_TITLE = "# pgvector base"
TEMPLATE_DISTRIBUTION = 'name = "pgvector-base"'
TEMPLATE_COMPOSE_PROJECT = "name: pgvector-base"
TEMPLATE_DATABASE = "pgvector_db"
DATABASE_FILES = ("docker-compose.yaml", ".env.example", ".github/workflows/ci.yml")

# The template's own files: its Copier settings, the template of the answers file, and its tests
# of generation, which would fail in a project (they generate from its working tree). Copier's
# `_exclude` keeps them out of a generated project; a clone has them until this script runs.
TEMPLATE_ONLY_PATHS = ("copier.yml", "{{ _copier_conf.answers_file }}.jinja", "tests/template")

# What belongs to the example and to pgai: files and folders, [project.scripts] entries, the
# names only the example imports in models.py, and the README's option that installs pgai.
EXAMPLE_PATHS = (
    "src/app/cli.py",
    "tests/example",
    "docs/example.md",
    "migrations/versions/2026_11_22_0305-cd27221ccbf3_create_product_table.py",
)
EXAMPLE_SCRIPT = 'pgvector-app = "app.cli:main"'
EXAMPLE_DEFINITIONS = {"EMBEDDING_DIM", "Product"}
EXAMPLE_IMPORTS = {"VECTOR", "BigInteger", "Index", "String", "Text", "Mapped", "mapped_column"}
MODELS = "src/app/models.py"
PGAI_PATHS = (
    "docs/pgai.md",
    "tests/pgvector_base/test_pgai.py",
    "tests/pgvector_base/backfill/test_pgai_models.py",
    "src/pgvector_base/pgai_setup.py",
)
PGAI_SCRIPT = 'pgai-install = "pgvector_base.pgai_setup:main"'
PGAI_INSTALL_OPTION = " --with pgai"

# Opening and closing marker lines of a removable passage, by file type.
MARKERS = {".md": ("<!-- {} -->", "<!-- /{} -->"), ".py": ("# <{}>", "# </{}>")}


class TaskError(Exception):
    """A file this script cannot change safely; the message names it and says what to do."""


@dataclass
class Plan:
    """The changes to make, collected first so that nothing is written unless all are possible."""

    root: Path
    texts: dict[Path, str] = field(default_factory=dict)
    removals: set[Path] = field(default_factory=set)

    def edit(self, relpath: str, change: Callable[[str], str]) -> None:
        """Apply ``change`` to the planned text of ``relpath``, if that file exists."""
        path = self.root / relpath
        if path in self.removals or not path.is_file():
            return
        text = self.texts.get(path, path.read_text(encoding="utf-8"))
        try:
            self.texts[path] = change(text)
        except (TaskError, SyntaxError) as error:
            raise TaskError(f"{relpath}: {error}") from None

    def remove(self, relpath: str) -> None:
        """Delete ``relpath`` (a file or a folder), if it exists."""
        self.texts.pop(self.root / relpath, None)
        self.removals.add(self.root / relpath)

    def apply(self) -> None:
        """Write every changed file and delete every removed one."""
        for path, text in self.texts.items():
            if text != path.read_text(encoding="utf-8"):
                path.write_text(text, encoding="utf-8")
        for path in sorted(self.removals):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def strip_marked(text: str, name: str, suffix: str = ".md") -> str:
    """Delete each passage of ``text`` marked ``name``, marker lines included.

    Markers are lines of their own: ``<!-- name -->`` and ``<!-- /name -->`` in Markdown (``suffix``
    ``.md``), ``# <name>`` and ``# </name>`` in Python (``.py``), each optionally followed by a
    space and a remark. The blank lines around a passage shrink to the longer of the two runs.
    """
    lines = text.splitlines(keepends=True)
    for start, end in reversed(passages(lines, name, suffix)):
        cut(lines, start, end)
    return "".join(lines)


def strip_markers(text: str, name: str, suffix: str = ".md") -> str:
    """Delete the marker lines of each passage marked ``name``, keeping what they enclose."""
    lines = text.splitlines(keepends=True)
    for start, end in reversed(passages(lines, name, suffix)):
        cut(lines, end, end)
        cut(lines, start, start)
    return "".join(lines)


def passages(lines: list[str], name: str, suffix: str) -> list[tuple[int, int]]:
    """The indexes of the opening and closing marker lines of each passage marked ``name``."""
    opening, closing = (marker.format(name) for marker in MARKERS[suffix])
    found: list[tuple[int, int]] = []
    start: int | None = None
    for index, line in enumerate(lines):
        text = line.rstrip("\r\n")
        if text == opening or text.startswith(f"{opening} "):
            if start is not None:
                raise TaskError(f"line {start + 1}: {opening} has no closing {closing}")
            start = index
        elif text == closing or text.startswith(f"{closing} "):
            if start is None:
                raise TaskError(f"line {index + 1}: {closing} closes no {opening}")
            found.append((start, index))
            start = None
    if start is not None:
        raise TaskError(f"line {start + 1}: {opening} has no closing {closing}")
    return found


def cut(lines: list[str], start: int, end: int) -> None:
    """Delete ``lines[start:end + 1]``; the blank lines around shrink to the longer run, or to none
    at the end of the text."""
    before, after = start, end + 1
    while before > 0 and not lines[before - 1].strip():
        before -= 1
    while after < len(lines) and not lines[after].strip():
        after += 1
    blanks = 0 if after == len(lines) else max(start - before, after - end - 1)
    lines[before:after] = ["\n"] * blanks


def without_example_models(text: str) -> str:
    """Delete the example from models.py: its marked passage, then the imports only it used.

    Models the team wrote inside the passage stay: then only the marker lines go.
    """
    lines = text.splitlines(keepends=True)
    marked = passages(lines, "example", ".py")
    passage = "".join(line for start, end in marked for line in lines[start + 1 : end])
    if defined_names(ast.parse(passage)) <= EXAMPLE_DEFINITIONS:
        text = strip_marked(text, "example", ".py")
    else:
        text = strip_markers(text, "example", ".py")
    return without_unused_imports(text, EXAMPLE_IMPORTS)


def defined_names(module: ast.Module) -> set[str]:
    """The names the top-level statements of ``module`` bind (classes, functions, assignments)."""
    names: set[str] = set()
    for node in module.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def without_unused_imports(text: str, candidates: set[str]) -> str:
    """Drop the names in ``candidates`` that ``text`` imports on one line but no longer uses."""
    module = ast.parse(text)
    used = {node.id for node in ast.walk(module) if isinstance(node, ast.Name)}
    lines = text.splitlines(keepends=True)
    for node in reversed(module.body):
        if not isinstance(node, ast.ImportFrom) or node.lineno != node.end_lineno:
            continue
        names = [alias for alias in node.names if alias.asname is None]
        unused = {a.name for a in names if a.name in candidates and a.name not in used}
        if not unused:
            continue
        rest = [a.name for a in node.names if a.name not in unused]
        index = node.lineno - 1
        if rest:
            lines[index] = f"from {node.module} import {', '.join(rest)}\n"
        else:
            del lines[index]
    return "".join(lines)


def replace_line(old: str, new: str) -> Callable[[str], str]:
    """A change that replaces the whole line ``old``, wherever it occurs, with ``new``."""
    pattern = re.compile(rf"^{re.escape(old)}$", re.MULTILINE)
    return lambda text: pattern.sub(lambda _: new, text)


def without_line(line: str) -> Callable[[str], str]:
    """A change that deletes the whole line ``line``, wherever it occurs."""
    pattern = re.compile(rf"^{re.escape(line)}\n", re.MULTILINE)
    return lambda text: pattern.sub("", text)


def without_empty_table(table: str) -> Callable[[str], str]:
    """A change that deletes the TOML table header ``[table]`` when no key follows it."""
    pattern = re.compile(rf"^\[{re.escape(table)}\]\n(\n|(?=\[)|\Z)", re.MULTILINE)
    return lambda text: pattern.sub("", text)


def slug(name: str, separator: str) -> str:
    """``name`` in lowercase letters and digits, each other run of characters one ``separator``."""
    return re.sub(r"[^a-z0-9]+", separator, name.lower()).strip(separator)


def rename(plan: Plan, project_name: str) -> None:
    """Give the project its name: README title, Poetry project, compose project and database."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9 ._-]*", project_name):
        raise TaskError(
            f"project name {project_name!r}: use letters, digits, spaces, '.', '_' and '-', "
            "starting with a letter"
        )
    plan.edit("README.md", replace_line(TEMPLATE_TITLE, f"# {project_name}"))
    plan.edit(
        "pyproject.toml", replace_line(TEMPLATE_DISTRIBUTION, f'name = "{slug(project_name, "-")}"')
    )
    plan.edit(
        "docker-compose.yaml",
        replace_line(TEMPLATE_COMPOSE_PROJECT, f"name: {slug(project_name, '-')}"),
    )
    database = slug(project_name, "_")
    for relpath in (*DATABASE_FILES, *markdown_files(plan.root)):
        plan.edit(relpath, lambda text: re.sub(rf"\b{TEMPLATE_DATABASE}\b", database, text))


def remove_part(plan: Plan, name: str, paths: Sequence[str], script: str) -> None:
    """Remove the example or pgai: its files, its command, its passages in the docs."""
    for relpath in paths:
        plan.remove(relpath)
    plan.edit("pyproject.toml", without_line(script))
    plan.edit("pyproject.toml", without_empty_table("project.scripts"))
    for relpath in markdown_files(plan.root):
        plan.edit(relpath, lambda text: strip_marked(text, name))


def markdown_files(root: Path) -> list[str]:
    """README.md and the guides in docs/, as paths from ``root``."""
    return ["README.md", *(f"docs/{path.name}" for path in sorted(root.glob("docs/*.md")))]


def record_removal(plan: Plan, question: str) -> None:
    """Record a removal made by hand in Copier's answers file, so ``copier update`` keeps it."""
    plan.edit(ANSWERS_FILE, replace_line(f"{question}: true", f"{question}: false"))


def boolean(value: str) -> bool:
    """``true`` or ``false``, in any case (Copier renders Python's ``True`` and ``False``)."""
    if value.lower() not in {"true", "false"}:
        raise argparse.ArgumentTypeError(f"expected true or false, not {value!r}")
    return value.lower() == "true"


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; an option left out leaves that part of the project as it is."""
    parser = argparse.ArgumentParser(
        description=(
            "Apply Copier's answers: name the project, remove the example or pgai; "
            "in a clone, also remove the template's own files."
        )
    )
    parser.add_argument(
        "--project-name",
        help="the README title; the Poetry and compose project and database names derive from it",
    )
    parser.add_argument(
        "--include-example", type=boolean, metavar="true|false", help="false removes the example"
    )
    parser.add_argument(
        "--include-pgai", type=boolean, metavar="true|false", help="false removes pgai's parts"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, root: Path = ROOT) -> int:
    """Apply the answers given on the command line to the project at ``root``, and make it a
    project: without the template's own files."""
    arguments = parse_arguments(argv)
    plan = Plan(root)
    for relpath in TEMPLATE_ONLY_PATHS:
        plan.remove(relpath)
    try:
        if arguments.project_name is not None:
            rename(plan, arguments.project_name)
        if arguments.include_example is False:
            plan.edit(MODELS, without_example_models)
            remove_part(plan, "example", EXAMPLE_PATHS, EXAMPLE_SCRIPT)
            record_removal(plan, "include_example")
        if arguments.include_pgai is False:
            remove_part(plan, "pgai", PGAI_PATHS, PGAI_SCRIPT)
            plan.edit("README.md", lambda text: text.replace(PGAI_INSTALL_OPTION, ""))
            record_removal(plan, "include_pgai")
    except TaskError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    plan.apply()
    return 0


if __name__ == "__main__":
    sys.exit(main())
