"""The packages_apt job's option checks (roles/packages_apt/filter_plugins/packages_apt_options.py)."""

from __future__ import annotations

from typing import Any

import pytest

from pcswitcher.jobs.discovery import discover_jobs
from tests.unit.role_files import ROLES, load_role_file

options = load_role_file("packages_apt/filter_plugins/packages_apt_options.py")
SPEC = discover_jobs(ROLES.parent)["packages_apt"]


def problems(**settings: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = options.option_problems(SPEC.with_defaults(settings))
    return found


def test_the_defaults_pass() -> None:
    assert problems() == []


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("5m", 300), ("1h", 3600), (" 2m ", 120), ("0s", 0)]
)
def test_lock_timeout_durations(text: str, seconds: int) -> None:
    assert options.seconds(text) == seconds
    assert problems(lock_timeout=text) == []


@pytest.mark.parametrize("text", ["5", "5 minutes", "-5m", "5x", "", "1.5m"])
def test_bad_lock_timeouts_name_the_forms(text: str) -> None:
    (found,) = problems(lock_timeout=text)
    assert found["path"] == ["lock_timeout"]
    assert "'90s', '5m' or '1h'" in found["problem"]


def test_max_removals_is_zero_or_more() -> None:
    assert problems(max_removals=0) == []
    (found,) = problems(max_removals=-1)
    assert found["path"] == ["max_removals"]


@pytest.mark.parametrize("pattern", ["Linux-*", "a b", "x;y", "", "pkg\n"])
def test_bad_package_patterns(pattern: str) -> None:
    (found,) = problems(protected=["sudo", pattern])
    assert found["path"] == ["protected", 1]


@pytest.mark.parametrize("pattern", ["relative/*.list", "/etc/apt/x y", "/etc/apt/$(x)"])
def test_bad_source_patterns(pattern: str) -> None:
    (found,) = problems(protected_sources=[pattern])
    assert found["path"] == ["protected_sources", 0]


def test_the_filter_names_the_variable() -> None:
    lines = options.FilterModule().filters()["packages_apt_option_problems"](
        SPEC.with_defaults({"protected": ["ok", "B A D"], "lock_timeout": "soon"})
    )
    assert [line.split(":")[0] for line in lines] == [
        "packages_apt_lock_timeout",
        "packages_apt_protected[1]",
    ]
