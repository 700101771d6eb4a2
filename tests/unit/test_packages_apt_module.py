"""The packages_apt module's own gate (``library/packages_apt_target.py``), run the way Ansible runs
it (``ansible localhost -m``): which step it is asked for is an allowlist of two, and ``do: apply``
changes nothing in check mode whatever it is given. Every case here is refused or ends before the
module reads or writes anything, so it is safe on this host; the checks of paths, names and versions
the module repeats before an argv are tested in test_packages_apt_plan.py, the steps themselves on
root machines (tests/integration/test_packages_apt.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

ROLE = Path(__file__).resolve().parents[2] / "roles" / "packages_apt"


def _module(args: Mapping[str, object]) -> tuple[str, dict[str, object]]:
    """Run the module on localhost in check mode (so that whatever a regression let through, it
    changes nothing on this host): Ansible's status word (``FAILED!``, ``SUCCESS``) and the result."""
    ansible = str(Path(sys.executable).parent / "ansible")
    done = subprocess.run(
        [ansible, "localhost", "-m", "packages_apt_target", "-a", json.dumps(args), "--check"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "ANSIBLE_LIBRARY": str(ROLE / "library"),
            "ANSIBLE_MODULE_UTILS": str(ROLE / "module_utils"),
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            "ANSIBLE_NOCOLOR": "1",
        },
    )
    head, _sep, result = done.stdout.partition(" => ")
    assert result, done.stdout + done.stderr
    return head.rpartition("| ")[2], json.loads(result)


@pytest.mark.parametrize(
    "value", ["plan; touch /tmp/pcs-pwned", "PLAN", "apply,plan", "apply\nplan", " plan", "-plan", ""]
)
def test_the_step_is_one_of_two(value: str) -> None:
    status, result = _module({"do": value, "source": {}})
    assert status == "FAILED!", result
    assert "value of do must be one of: plan, apply" in str(result["msg"])
    assert not Path("/tmp/pcs-pwned").exists()


def test_no_step_and_no_source_are_refused() -> None:
    assert _module({"source": {}}) == (
        "FAILED!",
        {"changed": False, "msg": "missing required arguments: do"},
    )
    status, result = _module({"do": "plan"})
    assert (status, result["msg"]) == ("FAILED!", "do is plan but all of the following are missing: source")


def test_apply_in_check_mode_changes_nothing_whatever_it_is_given() -> None:
    hostile = {
        "do": "apply",
        "files": {"/etc/passwd": None, "/etc/apt/sources.list.d/x\n.list": "eA=="},
        "install": ["-oDir=/tmp", "pkg;rm"],
        "remove": ["openssh-server"],
        "archs_add": ["../x"],
        "hold": ["x\ny"],
    }
    status, result = _module(hostile)
    assert status == "SUCCESS", result
    assert result["changed"] is False
    assert result["msg"] == "check mode: nothing applied"
