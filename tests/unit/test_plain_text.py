"""What pc-switcher writes for a person to read has no Ansible markup (``C(source)``): the config
``init`` writes, the reference (docs/configuration.md), the example inventory; every description of
every role's argument spec turns into plain text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pcswitcher import paths
from pcswitcher.config.init_text import default_config_text, example_inventory_text
from pcswitcher.config.reference import render
from pcswitcher.jobs.discovery import discover_jobs, plain_text

ROOT = paths.project_root()
#: Any of Ansible's markup: X(...) for its one- and two-letter kinds, or the horizontal line.
MARKUP = re.compile(r"(?<![\w])(RV|[A-Z])\([^()]*\)|HORIZONTALLINE")
ARGSPECS = sorted(ROOT.glob("roles/*/meta/argument_specs.yml"))


def descriptions(value: Any) -> Iterator[str]:
    """Every ``description`` (and ``short_description``) text in an argspec, at any depth."""
    if isinstance(value, dict):
        for key, sub in value.items():
            if key in {"description", "short_description"}:
                yield " ".join(sub) if isinstance(sub, list) else str(sub)
            else:
                yield from descriptions(sub)
    elif isinstance(value, list):
        for item in value:
            yield from descriptions(item)


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("The contents of C(source) on the source", "The contents of `source` on the source"),
        (
            "O(keep=3), V(true), RV(result), E(HOME), P(a.b.c#filter)",
            "`keep=3`, `true`, `result`, `HOME`, `a.b.c#filter`",
        ),
        ("I(italic) B(bold) M(ansible.builtin.copy)", "italic bold ansible.builtin.copy"),
        (
            "U(https://x.example/a) L(the guide, https://x.example/b)",
            "https://x.example/a the guide (https://x.example/b)",
        ),
        ("R(this part,anchor) HORIZONTALLINE and on", "this part and on"),
        ("(C(x)) and ABC(x) and EC(y) stay", "(`x`) and ABC(x) and EC(y) stay"),
        ("a\n  paragraph\tbroken", "a paragraph broken"),
    ],
)
def test_plain_text(text: str, plain: str) -> None:
    assert plain_text(text) == plain


def test_the_markup_pattern_finds_what_plain_text_removes() -> None:
    assert MARKUP.search("see C(source)")
    assert not MARKUP.search(plain_text("see C(source), I(x) and L(a,b)"))


@pytest.mark.parametrize("argspec", ARGSPECS, ids=lambda p: p.parent.parent.name)
def test_every_description_of_every_role_reads_as_plain_text(argspec: Path) -> None:
    texts = list(descriptions(yaml.safe_load(argspec.read_text())))
    assert texts, f"{argspec} has no description"
    for text in texts:
        assert not MARKUP.search(plain_text(text)), text


def test_there_is_markup_to_convert() -> None:
    """The test above is not empty: the roles' argspecs do use markup (for ansible-doc)."""
    assert any(MARKUP.search(t) for p in ARGSPECS for t in descriptions(yaml.safe_load(p.read_text())))


def test_what_init_writes_and_the_reference_have_no_markup() -> None:
    jobs = discover_jobs(ROOT)
    for name, text in (
        ("config", default_config_text(jobs)),
        ("inventory", example_inventory_text()),
        ("reference", render(jobs)),
        ("docs/configuration.md", (ROOT / "docs" / "configuration.md").read_text()),
    ):
        found = [line for line in text.splitlines() if MARKUP.search(line)]
        assert not found, (name, found)


def test_the_example_inventory_does_not_ask_to_copy_itself() -> None:
    text = example_inventory_text().lower()
    assert "copy this file" not in text
    assert "pc-switcher init` does" not in text
