"""Every relative link and ``#anchor`` in README.md and docs/*.md resolves, as GitHub renders it.

The same holds in a project generated without the example or without pgai: there, Copier's task
script (``.copier/tasks.py``) has deleted the passages marked ``<!-- example -->`` or
``<!-- pgai -->`` and the files that belong to each part.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
CODE_SPAN = re.compile(r"`+[^`]*`+")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_LINK_TEXT = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, line)`` for every line outside fenced code blocks."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lowercased, punctuation but ``-`` and ``_`` dropped,
    each space a hyphen."""
    text = INLINE_LINK_TEXT.sub(r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of ``text``; repeats get ``-1``, ``-2``, ..."""
    seen: Counter[str] = Counter()
    found = set()
    for _, line in prose_lines(text):
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(1))
            found.add(f"{base}-{seen[base]}" if seen[base] else base)
            seen[base] += 1
    return found


def anchors_of(path: Path) -> set[str]:
    """The anchors of a Markdown file; other files have none."""
    return anchors(path.read_text()) if path.suffix == ".md" else set()


def links(text: str) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, target)`` of each inline link outside code."""
    for number, line in prose_lines(text):
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            yield number, match.group(1)


def broken_links(root: Path, removed: tuple[str, ...] = ()) -> list[str]:
    """Every relative link of README.md and docs/*.md under ``root`` that does not resolve.

    Targets outside README.md and docs/ are looked up in the repository itself, except those
    under ``removed``.
    """
    documents = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    broken = []
    for document in documents:
        for number, target in links(document.read_text()):
            if SCHEME.match(target):
                continue
            path, _, fragment = target.partition("#")
            where = f"{document.relative_to(root)}:{number}: {target}"
            resolved = (document.parent / path).resolve() if path else document
            if not resolved.is_relative_to(root.resolve()):
                broken.append(f"{where} (outside the repository)")
                continue
            relative = resolved.relative_to(root.resolve()).as_posix()
            in_docs = relative == "README.md" or relative.startswith("docs/")
            actual = resolved if in_docs else ROOT / relative
            gone = any(relative == part or relative.startswith(f"{part}/") for part in removed)
            if gone or not actual.exists():
                broken.append(f"{where} (no such file)")
            elif fragment and fragment not in anchors_of(actual):
                broken.append(f"{where} (no such anchor)")
    return broken


@pytest.fixture
def tasks(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The task script that applies Copier's answers, imported from its file."""
    spec = importlib.util.spec_from_file_location("copier_tasks", ROOT / ".copier" / "tasks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up by name.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_links_and_anchors_resolve() -> None:
    assert broken_links(ROOT) == []


@pytest.mark.parametrize(
    ("example", "pgai"), [(False, True), (True, False), (False, False)], ids=str
)
def test_links_and_anchors_resolve_without_the_example_or_pgai(
    tmp_path: Path, tasks: ModuleType, example: bool, pgai: bool
) -> None:
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    answers = [f"--include-example={example}", f"--include-pgai={pgai}"]
    assert tasks.main(answers, root=tmp_path) == 0
    removed = (*([] if example else tasks.EXAMPLE_PATHS), *([] if pgai else tasks.PGAI_PATHS))
    assert not [path for path in removed if (tmp_path / path).exists()]
    assert broken_links(tmp_path, removed) == []


def test_the_checker_finds_what_is_broken(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text(
        "# A guide\n\n## Why `env.py`? (short)\n\n## Why `env.py`? (short)\n\n"
        "```sh\n# not a heading\n[not](a-link.md)\n```\n"
    )
    (tmp_path / "README.md").write_text(
        "# Title\n\n"
        "[ok](docs/guide.md#why-envpy-short) [ok](docs/guide.md#why-envpy-short-1) [ok](#title)\n"
        "[bad](docs/guide.md#not-a-heading) [bad](docs/missing.md) [bad](#nowhere)\n"
        "[bad](../outside.md) `[code](not-checked.md)` [external](https://example.com/x#y)\n"
    )
    assert [line.rsplit(": ", 1)[1] for line in broken_links(tmp_path)] == [
        "docs/guide.md#not-a-heading (no such anchor)",
        "docs/missing.md (no such file)",
        "#nowhere (no such anchor)",
        "../outside.md (outside the repository)",
    ]
