"""Every relative link and ``#anchor`` in README.md and docs/*.md resolves, as GitHub renders it.

The same holds in a project generated without the example or without pgai: there, the passages
between ``<!-- example -->`` and ``<!-- /example -->`` (or ``<!-- pgai -->`` and ``<!-- /pgai -->``)
are gone, and so are the files that belong to the example or to pgai.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What a project generated without each part lacks, as paths from the repository root.
REMOVED_WITH = {
    "example": ("docs/example.md", "src/app/cli.py", "tests/example"),
    "pgai": ("docs/pgai.md", "src/pgvector_base/pgai_setup.py", "tests/pgvector_base/test_pgai.py"),
}

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
CODE_SPAN = re.compile(r"`+[^`]*`+")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_LINK_TEXT = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
MARKER = re.compile(r"^<!-- (/?)(example|pgai) -->$", re.MULTILINE)


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


def without(text: str, part: str) -> str:
    """``text`` without its lines from ``<!-- part -->`` through ``<!-- /part -->``."""
    return re.sub(rf"(?ms)^<!-- {part} -->$.*?^<!-- /{part} -->$\n?", "", text)


def test_links_and_anchors_resolve() -> None:
    assert broken_links(ROOT) == []


@pytest.mark.parametrize("parts", [("example",), ("pgai",), ("example", "pgai")])
def test_links_and_anchors_resolve_without_the_removable_parts(
    tmp_path: Path, parts: tuple[str, ...]
) -> None:
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    removed = tuple(path for part in parts for path in REMOVED_WITH[part])
    for path in removed:
        (tmp_path / path).unlink(missing_ok=True)
    for document in [tmp_path / "README.md", *(tmp_path / "docs").glob("*.md")]:
        text = document.read_text()
        for part in parts:
            text = without(text, part)
        document.write_text(text)
    assert broken_links(tmp_path, removed) == []


def test_removable_passages_are_closed_and_never_nested() -> None:
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        markers = MARKER.findall(document.read_text())
        assert len(markers) % 2 == 0, f"{document.name}: {markers[-1]} is never closed"
        for opening, closing in zip(markers[::2], markers[1::2], strict=True):
            assert (opening[0], closing[0]) == ("", "/"), f"{document.name}: {opening}, {closing}"
            assert opening[1] == closing[1], f"{document.name}: {opening[1]} closed by {closing[1]}"


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
