"""The docs describe today's system, inside the repository: no release-by-release history outside
the benchmarks' results files (bench/*_results.md), no reference to a file outside the repository,
and every relative link leads to a file of the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HISTORY = re.compile(r"\b(previous|this|last|next) release\b|\bbefore this (change|release)\b", re.IGNORECASE)
OUTSIDE = re.compile(r"/work/|\.\./shared\b|\bshared/notes\b|helper-notes")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _docs() -> list[Path]:
    files = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    files += sorted((REPO / "roles").glob("*/README.md")) + sorted((REPO / "bench").glob("*.md"))
    return files


def _texts() -> list[Path]:
    """The docs, and the docstrings' and comments' homes: the code of pcswitcher/ and bench/."""
    return _docs() + sorted((REPO / "pcswitcher").rglob("*.py")) + sorted((REPO / "bench").glob("*.py"))


def _hits(pattern: re.Pattern[str], files: list[Path]) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]


def test_there_are_docs_to_check() -> None:
    names = {str(p.relative_to(REPO)) for p in _docs()}
    assert {"README.md", "docs/architecture.md", "roles/folder_sync/README.md"} <= names
    assert "bench/abort_latency_results.md" in names


def test_no_release_history_outside_the_results_files() -> None:
    files = [p for p in _texts() if not p.name.endswith("_results.md")]
    assert _hits(HISTORY, files) == [], "move measured history to bench/<benchmark>_results.md"


def test_no_reference_to_a_file_outside_the_repository() -> None:
    assert _hits(OUTSIDE, _texts()) == []


def test_every_relative_link_leads_to_a_file_of_the_repository() -> None:
    broken = []
    for path in _docs():
        for target in LINK.findall(path.read_text()):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            resolved = (path.parent / target).resolve()
            if not resolved.exists() or REPO not in resolved.parents:
                broken.append(f"{path.relative_to(REPO)}: {target}")
    assert broken == []
