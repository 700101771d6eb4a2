"""docs/configuration.md is the reference rendered from the schema: it cannot drift."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pcswitcher.config.reference import render
from pcswitcher.jobs.discovery import discover_jobs

REPO = Path(__file__).resolve().parents[2]
PC_SWITCHER = REPO / ".venv" / "bin" / "pc-switcher"


def test_configuration_doc_is_the_rendered_reference() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    rendered = render(discover_jobs(REPO))
    fix = "run `pc-switcher config reference > docs/configuration.md`"
    assert doc == rendered, f"docs/configuration.md is stale: {fix}"


def test_reference_names_every_job_and_global_setting() -> None:
    jobs = discover_jobs(REPO)
    text = render(jobs)
    for name in jobs:
        assert f"### `{name}`" in text
    for key in ("jobs", "log_level.file", "disk.runtime_minimum", "disk.paths.target", "link_timeout"):
        assert f"| `{key}` |" in text


def test_the_config_reference_command_prints_the_doc() -> None:
    """`pc-switcher config reference` (the installed entry point) prints docs/configuration.md."""
    result = subprocess.run(
        [str(PC_SWITCHER), "config", "reference"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == (REPO / "docs" / "configuration.md").read_text()
