"""The run's steps (pcswitcher/run/steps.py): docs/architecture.md lists them, in the same words and order."""

from __future__ import annotations

import re
from pathlib import Path

from pcswitcher.run.steps import STEPS, RunContext

REPO = Path(__file__).resolve().parents[2]


def _documented_steps() -> list[str]:
    text = (REPO / "docs" / "architecture.md").read_text()
    paragraph = text.split("**The steps**", 1)[1].split("\n\n", 1)[0]
    listed = paragraph.split("in order:", 1)[1].split(";", 1)[0]
    return re.findall(r"`([^`]+)`", listed)


def test_architecture_md_lists_the_steps_of_the_code_in_order() -> None:
    names = [step.name for step in STEPS]
    assert len(set(names)) == len(names), "each step has its own name"
    assert _documented_steps() == names


def test_the_numbered_run_names_each_step_in_bold_in_order() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    run = text.split("## A run", 1)[1].split("### The gate", 1)[0]
    positions = [run.find(f"**{step.name}**") for step in STEPS]
    assert -1 not in positions, [s.name for s, p in zip(STEPS, positions, strict=True) if p == -1]
    assert positions == sorted(positions)


def test_a_run_is_changing_from_the_validate_step_on() -> None:
    """Before validate only the held first job (no task run) is started: an error just stops it;
    from validate on an error takes the abort path (cleanup playbook included)."""
    ctx = object.__new__(RunContext)
    seen: dict[str, bool] = {}
    for step in ["opening", *(s.name for s in STEPS), "finish"]:
        ctx.step = step
        seen[step] = ctx.changing
    names = [s.name for s in STEPS]
    start = names.index("validate")
    assert [seen[n] for n in names] == [i >= start for i in range(len(names))]
    assert not seen["opening"]
    assert not seen["finish"]
