"""A test that cannot run here fails with one line naming the fix (tests/needs.py), and no test of
the suite skips itself: a green run means every test ran."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests import needs

TESTS = Path(__file__).resolve().parents[1]


def _reason(call: object, *args: object) -> str:
    with pytest.raises(pytest.fail.Exception) as failed:
        call(*args)  # type: ignore[operator]
    assert failed.value.pytrace is False, "the reason is one line, no traceback"
    message = str(failed.value)
    assert "\n" not in message, message
    return message


def test_not_root_fails_and_says_how_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reason = _reason(needs.root, "to mount things")
    assert reason.startswith("needs root (to mount things)"), reason
    assert "sudo make test" in reason


def test_root_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    needs.root("anything")


def test_a_missing_tool_fails_and_names_its_package_and_make_bootstrap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    reason = _reason(needs.tool, "rsync")
    assert "`rsync` (rsync)" in reason, reason
    assert "make bootstrap" in reason, reason
    reason = _reason(needs.tools, {"tmux": "tmux", "ssh": "openssh-client"})
    assert "`ssh` (openssh-client), `tmux` (tmux)" in reason, reason
    assert "make bootstrap" in reason, reason


def test_a_present_tool_gives_its_path() -> None:
    assert needs.tool("sh").endswith("/sh")


def test_the_sandbox_tools_are_the_makefiles_packages() -> None:
    """Every package needs.py names for a sandbox tool is one `make bootstrap` installs."""
    makefile = (TESTS.parent / "Makefile").read_text()
    match = re.search(r"^APT_PACKAGES := (.*)$", makefile, re.MULTILINE)
    assert match, "no APT_PACKAGES in the Makefile"
    packages = set(match.group(1).split())
    assert set(needs.SANDBOX_TOOLS.values()) <= packages
    assert set(needs.ROOT_MACHINE_TOOLS.values()) <= packages


def test_no_test_skips_itself() -> None:
    """Skips hide a test that did not run: a missing requirement is a failure (tests/needs.py)."""
    pattern = re.compile(r"pytest\.skip\(|\.skipif\(|mark\.skip\b|importorskip\(|\.xfail\b")
    hits = [
        f"{path.relative_to(TESTS)}:{number}"
        for path in sorted(TESTS.rglob("*.py"))
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert hits == []
