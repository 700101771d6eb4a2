"""A job's summary line: its declared template (meta/pcswitcher.yml) filled in the user's units."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pcswitcher.errors import JobDefinitionError
from pcswitcher.jobs.discovery import discover_jobs
from pcswitcher.jobs.summary import format_bytes, format_count, job_summary, plain, render, template_problem
from pcswitcher.run.events import delegated_to_source
from tests.unit.test_jobs import argspec, make_job

REPO = Path(__file__).resolve().parents[2]
FOLDER_SYNC = {"files_transferred": 18935, "bytes": 983050438, "deleted": 11, "dry_run": False}


def test_folder_sync_speaks_the_users_language() -> None:
    spec = discover_jobs(REPO)["folder_sync"]
    assert job_summary(FOLDER_SYNC, spec.summary, spec.summary_dry_run, dry_run=False) == (
        "18,935 files (937.5 MiB) sent, 11 deleted"
    )
    # set_stats values may come as strings (templated): still numbers
    as_text = {k: str(v) for k, v in FOLDER_SYNC.items()}
    assert job_summary(as_text, spec.summary, spec.summary_dry_run, dry_run=True) == (
        "would send 18,935 files (937.5 MiB), would delete 11"
    )


def test_dummy_success_summary() -> None:
    spec = discover_jobs(REPO)["dummy_success"]
    result = {"source_seconds": 8, "target_seconds": 125}
    assert job_summary(result, spec.summary, None, dry_run=False) == (
        "worked 8.0s on the source, 2m05s on the target"
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0 B"), (110, "110 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (983050438, "937.5 MiB"),
     (5 * 1024**3, "5.0 GiB"), (3 * 1024**5, "3.0 PiB"), (2 * 1024**6, "2,048.0 PiB")],
)  # fmt: skip
def test_format_bytes(value: int, text: str) -> None:
    assert format_bytes(value) == text


def test_format_count() -> None:
    assert [format_count(v) for v in (0, 7, 1000, 18935, 1234567.6)] == [
        "0",
        "7",
        "1,000",
        "18,935",
        "1,234,568",
    ]


@pytest.mark.parametrize(
    "result",
    [
        {"files_transferred": 1, "bytes": 2},  # a key missing
        {"files_transferred": "many", "bytes": 2, "deleted": 0},  # not a number
        {"files_transferred": True, "bytes": 2, "deleted": 0},  # a bool is no count
        {"files_transferred": [1], "bytes": 2, "deleted": 0},
    ],
)
def test_a_result_that_does_not_fit_falls_back_to_its_scalars(result: dict[str, Any]) -> None:
    template = "{files_transferred:count} files ({bytes:bytes}) sent, {deleted:count} deleted"
    assert render(template, result) is None
    assert job_summary(result, template, None, dry_run=False) == plain(result)


def test_plain_scalars_rounded_and_readable() -> None:
    assert plain({"ratio": 0.5007221989999948, "files_seen": 3, "dry_run": False, "nested": {"a": 1}}) == (
        "ratio 0.5, files seen 3"
    )
    assert job_summary(None, "{x}", None, dry_run=False) == ""


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("", "non-empty one-line"),
        ("two\nlines", "non-empty one-line"),
        (5, "non-empty one-line"),
        ("{files:megabytes}", "the unit must be one of count, bytes, seconds"),
        ("{files!r}", "the unit must be one of"),
        ("{Files}", "name a key"),
        ("{0}", "name a key"),
        ("{}", "name a key"),
        ("{a.b}", "name a key"),
        ("{a[0]}", "name a key"),
        ("{$(rm -rf ~)}", "name a key"),
        ("{unclosed", "not a valid template"),
        ("a } b", "not a valid template"),
    ],
)
def test_template_problems(template: object, problem: str) -> None:
    found = template_problem(template)
    assert found is not None
    assert problem in found


def test_a_bad_template_is_a_broken_job_definition(tmp_path: Path) -> None:
    root = make_job(
        tmp_path,
        "j",
        argspec("j_a: {type: int, description: d, default: 1}"),
        'description: d\nsummary: "{n:kilos} things"\n',
    )
    with pytest.raises(JobDefinitionError) as info:
        discover_jobs(root)
    assert info.value.path == root / "roles" / "j" / "meta" / "pcswitcher.yml"
    assert "'summary' placeholder {n:kilos}: the unit must be one of" in info.value.problem


def test_literal_braces_are_kept() -> None:
    assert template_problem("{{literal}} {n:count}") is None
    assert render("{{literal}} {n:count}", {"n": 1200}) == "{literal} 1,200"


@pytest.mark.parametrize(
    ("delegated", "source"),
    [
        # ansible-core 2.19 keeps only these four of the delegated vars (measured)
        ({"ansible_host": "localhost", "ansible_port": None, "ansible_user": None,
          "ansible_connection": "local"}, True),
        ({"ansible_delegated_host": "localhost"}, True),  # older ansible-core
        ({"ansible_host": "127.0.0.1", "ansible_connection": "ssh"}, True),
        ({"ansible_host": "127.0.0.7", "ansible_connection": "ssh"}, False),  # another machine
        ({}, False),
    ],
)  # fmt: skip
def test_a_task_delegated_to_localhost_ran_on_the_source(delegated: dict[str, Any], source: bool) -> None:
    assert delegated_to_source(delegated) is source
