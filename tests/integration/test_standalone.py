"""The playbooks run by hand, without the driver (docs/job-contract.md: "Run by hand, … gives the same
result as the driver"), from the repository root inside the source machine, as a user would.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.integration.helpers import REPO, TAG, leftovers, run_dirs
from tests.sandbox import Machine, Sandbox

ANSIBLE_PLAYBOOK = str(REPO / ".venv" / "bin" / "ansible-playbook")


@pytest.fixture(autouse=True)
def clean_machines(sb: Sandbox) -> Iterator[None]:
    assert leftovers(sb) == {}
    yield
    close_ansible_masters(sb["source"])
    assert leftovers(sb, timeout=10) == {}


def close_ansible_masters(machine: Machine) -> None:
    """By hand, Ansible keeps its ssh master (ControlPersist) a while: that is Ansible's, not a job's."""
    for proc in machine.extra_processes():
        with contextlib.suppress(psutil.Error):
            if proc.cmdline()[:1] and proc.cmdline()[0].startswith("ssh: /root/.ansible/cp/"):
                proc.kill()


def playbook(sb: Sandbox, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook -i INVENTORY playbooks/<name>.yml -l target EXTRA`` in the repo root."""
    argv = [ANSIBLE_PLAYBOOK, "-i", str(sb.inventory_path), f"playbooks/{name}.yml", "-l", "target", *extra]
    return sb["source"].run(argv, cwd=str(REPO), timeout=180)


def test_dummy_success_by_hand_succeeds(sb: Sandbox) -> None:
    result = playbook(
        sb, "dummy_success", "-e", "dummy_success_source_duration=1", "-e", "dummy_success_target_duration=2"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "dummy_success worked 1 s on the source and 2 s on the target target" in result.stdout
    assert "failed=0" in result.stdout
    # all four phases ran: validation first, the work after it
    out = result.stdout
    assert out.index("Check that the durations are not negative") < out.index("Work on the source")
    assert out.index("Work on the source") < out.index("Work on the target")


def test_dummy_success_by_hand_uses_the_argspec_defaults_check(sb: Sandbox) -> None:
    """A bad value fails in validation, as with the driver; nothing of the work runs."""
    result = playbook(sb, "dummy_success", "-e", "dummy_success_source_duration=-1")
    assert result.returncode != 0
    assert "dummy_success_source_duration: must be 0 or more seconds, not -1" in result.stdout
    assert "Work on the source" not in result.stdout


def test_dummy_fail_by_hand_fails(sb: Sandbox) -> None:
    result = playbook(sb, "dummy_fail", "-e", "dummy_fail_fail_at=1", "-e", "dummy_fail_duration=2")
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-2000:]
    assert "dummy_fail failed at 1 s as configured" in result.stdout
    assert "failed=1" in result.stdout


def test_dummy_jobs_by_hand_in_check_mode_change_nothing(sb: Sandbox) -> None:
    result = playbook(sb, "dummy_fail", "--check", "-e", "dummy_fail_fail_at=1")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Would run an async loop on the target target that fails after 1 s" in result.stdout


def _tagged_sleep(machine: Machine, run_id: str) -> subprocess.Popen[str]:
    handle = machine.popen(["env", f"{TAG}={run_id}", "sleep", "300"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not any("sleep" in " ".join(p.cmdline()) for p in machine.extra_processes()):
        assert time.monotonic() < deadline, "the tagged sleep did not start"
        time.sleep(0.05)
    return handle


def test_cleanup_playbook_by_hand(sb: Sandbox) -> None:
    run_id = "20990101T000000Z-abcd"
    other = "20990101T000000Z-ffff"
    source, target = sb["source"], sb["target"]
    handles = {}
    for machine in (source, target):
        for rid in (run_id, other):
            (machine.path(f"/tmp/pcswitcher-{rid}")).mkdir()
            (machine.path(f"/tmp/pcswitcher-{rid}") / "progress.jsonl").write_text("{}\n")
        handles[machine.name] = _tagged_sleep(machine, run_id)
    bystander = _tagged_sleep(target, other)
    try:
        result = playbook(sb, "cleanup", "-e", f"cleanup_run_id={run_id}")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        for name, handle in handles.items():
            handle.wait(timeout=10)  # the run's process is gone on both machines
            assert run_dirs(sb[name]) == [f"pcswitcher-{other}"], "only the run's own directory is removed"
        assert bystander.poll() is None, "a process of another run was killed"
    finally:
        for handle in [*handles.values(), bystander]:
            handle.kill()
            handle.wait(timeout=10)
        for machine in (source, target):
            for rid in (run_id, other):
                subprocess.run(["rm", "-rf", str(machine.path(f"/tmp/pcswitcher-{rid}"))], check=False)


def test_cleanup_playbook_refuses_a_bad_run_id(sb: Sandbox) -> None:
    result = playbook(sb, "cleanup", "-e", "cleanup_run_id=../../etc")
    assert result.returncode != 0
    assert "is not a pc-switcher run id" in result.stdout
