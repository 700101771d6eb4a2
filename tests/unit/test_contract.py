"""The job contract (docs/job-contract.md), checked for every job the driver discovers.

A job is Ansible only: a thin playbook, a role with the four phases, its argspec as the single
source of its options (the defaults file agrees with it), a declaration, a README and a doc page.
And the driver never names a job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from pcswitcher.jobs.discovery import JobSpec, discover_jobs, option_checks_file

REPO = Path(__file__).resolve().parents[2]
JOBS: dict[str, JobSpec] = discover_jobs(REPO)
NAMES = sorted(JOBS)
# the jobs with an option-check hook (roles/<job>/filter_plugins/<job>_options.py): the hook is optional
WITH_OPTION_CHECKS = [name for name in NAMES if option_checks_file(JOBS[name].role_dir).is_file()]
PHASES = ("validate", "pre_sync", "sync", "post_sync")


def _yaml(path: Path) -> Any:
    assert path.is_file(), f"{path} is missing"
    return yaml.safe_load(path.read_text())


def _argspec_options(name: str) -> Mapping[str, Any]:
    data = _yaml(REPO / "roles" / name / "meta" / "argument_specs.yml")
    options = data["argument_specs"]["main"].get("options") or {}
    assert isinstance(options, Mapping)
    return options


def test_there_are_jobs() -> None:
    assert {"dummy_success", "dummy_fail"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_playbook_is_thin(name: str) -> None:
    plays = _yaml(REPO / "playbooks" / f"{name}.yml")
    assert isinstance(plays, list)
    assert len(plays) == 1, "exactly one play"
    play = plays[0]
    assert play.get("hosts") == "all"
    assert play.get("gather_facts") is False
    assert play.get("environment") == "{{ pcswitcher_environment }}"
    roles = play.get("roles")
    assert isinstance(roles, list)
    assert len(roles) == 1, "exactly the job's role"
    role = roles[0]
    assert (role.get("role") if isinstance(role, Mapping) else role) == name
    # a thin playbook: the work is in the role
    for key in ("tasks", "pre_tasks", "post_tasks", "handlers"):
        assert not play.get(key), f"the playbook has {key}: move them into roles/{name}"


@pytest.mark.parametrize("name", NAMES)
def test_defaults_equal_the_argspec_defaults(name: str) -> None:
    options = _argspec_options(name)
    assert all(key.startswith(f"{name}_") for key in options)
    defaults = _yaml(REPO / "roles" / name / "defaults" / "main.yml") or {}
    assert set(defaults) == {key for key, spec in options.items() if "default" in spec}
    # the same values, once the sub-options' defaults are applied on both sides (a defaults file
    # may spell them out, the argspec may leave them to its sub-option specs)
    spec = JOBS[name]
    from_file = spec.with_defaults({key.removeprefix(f"{name}_"): value for key, value in defaults.items()})
    assert from_file == spec.defaults()


@pytest.mark.parametrize("name", NAMES)
def test_tasks_dispatch_the_four_phases(name: str) -> None:
    tasks_dir = REPO / "roles" / name / "tasks"
    main = _yaml(tasks_dir / "main.yml")
    assert isinstance(main, list)
    assert len(main) == len(PHASES)
    for phase, task in zip(PHASES, main, strict=True):
        target = task.get("ansible.builtin.import_tasks") or task.get("import_tasks")
        assert target == f"{phase}.yml", f"tasks/main.yml must import {phase}.yml (in phase order)"
        tags = task.get("tags")
        tags = [tags] if isinstance(tags, str) else tags
        assert phase in (tags or []), f"the import of {phase}.yml must be tagged {phase}"
        content = _yaml(tasks_dir / f"{phase}.yml")
        assert isinstance(content, list), f"{phase}.yml must be a list of tasks ([] when empty)"


@pytest.mark.parametrize("name", NAMES)
def test_declaration_readme_and_doc(name: str) -> None:
    declaration = _yaml(REPO / "roles" / name / "meta" / "pcswitcher.yml")
    description = declaration.get("description")
    assert isinstance(description, str)
    assert description.strip()
    assert "\n" not in description.strip()
    assert (REPO / "roles" / name / "README.md").is_file()
    doc = REPO / "docs" / "jobs" / f"{name}.md"
    assert doc.is_file(), f"{doc} is missing"
    assert doc.read_text().strip()


def test_the_readme_lists_every_job() -> None:
    """README.md's documentation section names each job beside the link to docs/jobs/."""
    lines = [ln for ln in (REPO / "README.md").read_text().splitlines() if ln.startswith("- [docs/jobs/]")]
    assert len(lines) == 1, "README.md has no (or more than one) `- [docs/jobs/](docs/jobs/)` line"
    listed = set(re.findall(r"\w+", lines[0].split("—", 1)[-1]))
    assert [name for name in NAMES if name not in listed] == [], lines[0]


def _undocumented(options: Mapping[str, Any], where: str = "") -> list[str]:
    missing: list[str] = []
    for key, spec in options.items():
        label = f"{where}.{key}" if where else str(key)
        text = spec.get("description") if isinstance(spec, Mapping) else None
        if isinstance(text, list):
            text = " ".join(str(p) for p in text)
        if not isinstance(text, str) or not text.strip():
            missing.append(label)
        sub = spec.get("options") if isinstance(spec, Mapping) else None
        if isinstance(sub, Mapping):
            missing += _undocumented(sub, label)
    return missing


@pytest.mark.parametrize("name", NAMES)
def test_every_option_has_a_description(name: str) -> None:
    assert _undocumented(_argspec_options(name)) == []
    for short, spec in JOBS[name].options.items():
        assert spec.get("type"), f"{name}_{short} has no type"


@pytest.mark.parametrize("name", NAMES)
def test_the_driver_never_names_a_job(name: str) -> None:
    pattern = re.compile(rf"\b{re.escape(name)}\b")
    hits = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sorted((REPO / "pcswitcher").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert hits == []


def test_some_job_has_option_checks() -> None:
    """The hook below is checked on a real job (folder_sync has one)."""
    assert "folder_sync" in WITH_OPTION_CHECKS


@pytest.mark.parametrize("name", WITH_OPTION_CHECKS)
def test_option_checks_hook(name: str) -> None:
    """A job's option-check hook: the argspec defaults pass it, and the role runs the same checks as
    an Ansible filter."""
    spec = JOBS[name]
    file = option_checks_file(spec.role_dir)
    assert spec.option_problems(spec.defaults()) == []
    text = file.read_text()
    assert "def option_problems(" in text
    assert f'"{name}_option_problems"' in text, "the FilterModule must offer <job>_option_problems"
    tasks = "".join(p.read_text() for p in (spec.role_dir / "tasks").glob("*.yml"))
    tasks += "".join(p.read_text() for p in (spec.role_dir / "templates").glob("*.j2"))
    assert f"| {name}_option_problems" in tasks, "the role must use its option checks"
