"""Each role's molecule ``default`` scenario: ``molecule test`` in the role's dir must succeed.

The scenarios (``roles/<role>/molecule/default/``) use molecule's ``default`` (delegated) driver: their
create.yml / destroy.yml bring a sandbox machine up and down (tests/integration/molecule_sandbox.py),
and the sequence is create -> prepare -> converge -> idempotence -> verify -> destroy (destroy runs
also after a failure). molecule runs offline: no prerun, no dependency step, and, to make sure of it,
in a network namespace of its own that has only the loopback device (the sandbox machines' sshd and
every ssh connection live in it too).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import needs
from tests.apt_repos import build_test_repos

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
# the roles that must have a scenario; any other role's scenario found is run too
REQUIRED = (
    "btrfs_snapshots", "carry", "cleanup", "dummy_fail",
    "dummy_success", "folder_sync", "packages_apt", "sync_history",
)  # fmt: skip
SCENARIOS = sorted(
    {p.parents[2].name for p in REPO.glob("roles/*/molecule/default/molecule.yml")} | set(REQUIRED)
)
TIMEOUT = 240


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{BIN}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            "NO_COLOR": "1",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "PY_COLORS": "0",
        }
    )
    env.pop("ANSIBLE_CONFIG", None)
    # the local apt repositories packages_apt's scenario binds into its root machines
    env["PCS_APT_REPOS"] = str(build_test_repos().dir)
    return env


@pytest.mark.timeout(TIMEOUT + 30)
@pytest.mark.parametrize("role", SCENARIOS)
def test_molecule_default_scenario(role: str) -> None:
    scenario = REPO / "roles" / role / "molecule" / "default"
    assert (scenario / "molecule.yml").is_file(), f"role {role} has no molecule default scenario"
    needs.tools({"unshare": "util-linux", "ip": "iproute2"})
    argv = [
        "unshare",
        "--net",
        "--",
        "sh",
        "-c",
        'ip link set lo up && exec "$0" test -s default',
        str(BIN / "molecule"),
    ]
    started = time.monotonic()
    with subprocess.Popen(
        argv,
        cwd=scenario.parents[1],
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            output, _ = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            # molecule had no chance to run destroy: do it, so no sandbox machine is left running
            down = subprocess.run(
                [str(BIN / "molecule"), "destroy", "-s", "default"],
                cwd=scenario.parents[1],
                env=_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            pytest.fail(
                f"molecule test of {role} took over {TIMEOUT} s:\n{output}\n"
                f"molecule destroy (rc {down.returncode}):\n{down.stdout}{down.stderr}"
            )
    took = time.monotonic() - started
    print(f"molecule test of {role}: rc {proc.returncode} in {took:.1f} s")
    assert proc.returncode == 0, f"molecule test of {role} failed (rc {proc.returncode}):\n{output}"
