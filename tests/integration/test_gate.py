"""The gate (pcswitcher/jobs/gate.py and its plugin pcswitcher/jobs/plugins/callback/pcswitcher_gate.py) on a
real ansible-playbook: a job's whole playbook, attached to an :class:`~pcswitcher.jobs.gate.EarlyStart`,
waits before its first task until begin(), runs its validate phase, then holds before its first
other task until release(); without a gate it runs straight through.

A local-connection play on this host, all of whose files live in the test's tmp dir.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from pcswitcher.jobs.gate import EarlyStart
from pcswitcher.jobs.runner import PlaybookRun
from tests.integration.local_play import finish, local_run

MAIN = """
- name: Validate
  ansible.builtin.import_tasks: validate.yml
  tags: [validate]
- name: Always
  ansible.builtin.import_tasks: always.yml
  tags: [always]
- name: Sync
  ansible.builtin.import_tasks: sync.yml
  tags: [sync]
"""
VALIDATE = """
- name: Check one
  ansible.builtin.command: "test {{ gate_check }} = ok"
  changed_when: false
- name: Note that the checks ran
  ansible.builtin.copy: {content: "checked\\n", dest: "{{ gate_dir }}/checked", mode: "0644"}
"""
ALWAYS = """
- name: An always task (read-only by contract) runs before the gate
  ansible.builtin.stat: {path: "{{ gate_dir }}"}
"""
SYNC = """
- name: The first change
  ansible.builtin.copy: {content: "changed\\n", dest: "{{ gate_dir }}/changed", mode: "0644"}
- name: Wait a little
  ansible.builtin.command: sleep {{ gate_sleep }}
  changed_when: false
"""
PLAYBOOK = """
- name: A job
  hosts: all
  gather_facts: false
  roles: [gatejob]
"""


def _project(tmp: Path) -> Path:
    role = tmp / "roles" / "gatejob" / "tasks"
    role.mkdir(parents=True)
    for name, text in {"main": MAIN, "validate": VALIDATE, "always": ALWAYS, "sync": SYNC}.items():
        (role / f"{name}.yml").write_text(text)
    (tmp / "job.yml").write_text(PLAYBOOK)
    return tmp


class Gated:
    """A started run and its hold (None: run without a gate)."""

    def __init__(self, run: PlaybookRun, early: EarlyStart | None) -> None:
        self.run, self.early = run, early

    def begin(self) -> None:
        assert self.early is not None
        self.early.begin()

    def held(self) -> bool:
        return self.early is not None and self.early.held()

    def release(self) -> None:
        assert self.early is not None
        self.early.release()


def _gated(run: PlaybookRun, gate: Path | None, begin: bool) -> Gated:
    early = EarlyStart(gate) if gate is not None else None
    if early is not None:
        early.attach(run)
    gated = Gated(run, early)
    run.start()
    if begin and early is not None:
        gated.begin()
    return gated


def _run(tmp: Path, gate: bool | Path, check: str = "ok", sleep: int = 0, begin: bool = True) -> Gated:
    project = _project(tmp) if not (tmp / "job.yml").exists() else tmp
    run = local_run(
        tmp,
        project / "job.yml",
        project_dir=project,
        ident="gatejob-sync",
        extravars={"gate_dir": str(tmp), "gate_check": check, "gate_sleep": sleep},
        roles_path=project / "roles",
        run_dir=tmp / "run",
    )
    return _gated(run, gate if isinstance(gate, Path) else tmp / "gate" if gate else None, begin)


def _wait_held(gated: Gated, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gated.held():
            return True
        if gated.run.join(0.05):
            return False
    raise AssertionError("the run neither held nor ended")


def _wait_first_task_announced(tmp: Path, timeout: float = 60) -> None:
    """Wait until ansible-playbook has announced its first task: the gate holds that task until
    begin() (runner's event files, written before the gate plugin's turn)."""
    deadline = time.monotonic() + timeout
    while not any("playbook_on_task_start" in p.read_text() for p in tmp.rglob("job_events/*.json")):
        assert time.monotonic() < deadline, f"ansible-playbook announced no task within {timeout} s"
        time.sleep(0.05)


def test_a_gated_run_holds_after_its_checks_until_released(tmp_path: Path) -> None:
    run = _run(tmp_path, gate=True)
    assert _wait_held(run)
    assert (tmp_path / "gate.held").read_text() == "gatejob : The first change"
    assert (tmp_path / "checked").exists(), "the validate phase ran before the gate"
    time.sleep(1.0)  # the behaviour: a held run stays held, no task runs in this window
    assert not (tmp_path / "changed").exists()
    assert run.run.is_alive()
    run.release()
    result = finish(run.run)
    assert result.ok, result.failures
    assert (tmp_path / "changed").exists()


def test_a_gated_run_runs_no_task_before_begin(tmp_path: Path) -> None:
    """The driver starts the play early; it touches no host before the run's agents are up."""
    run = _run(tmp_path, gate=True, begin=False)
    _wait_first_task_announced(tmp_path)
    assert run.run.is_alive()
    assert not (tmp_path / "checked").exists()
    assert not (tmp_path / "gate.held").exists()
    run.begin()
    assert _wait_held(run)
    assert (tmp_path / "checked").exists()
    run.release()
    assert finish(run.run).ok


def test_a_failed_check_ends_the_run_before_the_gate(tmp_path: Path) -> None:
    run = _run(tmp_path, gate=True, check="broken")
    assert not _wait_held(run)
    result = finish(run.run)
    assert not result.ok
    assert not (tmp_path / "gate.held").exists()
    assert not (tmp_path / "changed").exists()


def test_a_held_run_stops_on_sigterm_and_changes_nothing(tmp_path: Path) -> None:
    run = _run(tmp_path, gate=True)
    assert _wait_held(run)
    proc = run.run.process
    assert proc is not None
    tree = [proc, *proc.children(recursive=True)]
    run.run.terminate()
    result = finish(run.run)
    assert not result.ok
    _gone, alive = psutil.wait_procs(tree, timeout=5)
    assert not alive, alive
    assert not (tmp_path / "changed").exists()


def test_a_gate_that_cannot_hold_stops_the_play_before_any_change(tmp_path: Path) -> None:
    """Ansible turns a callback's exception into a warning: the gate must fail closed instead."""
    run = _run(tmp_path, gate=tmp_path / "no-such-dir" / "gate", begin=False)
    result = finish(run.run)
    assert not result.ok
    assert result.rc == 97
    assert "pc-switcher gate: the gate's directory" in result.reason(""), "it says why"
    assert not (tmp_path / "checked").exists(), "it stopped before its first task"
    assert not (tmp_path / "changed").exists()


def test_without_a_gate_the_playbook_runs_straight_through(tmp_path: Path) -> None:
    run = _run(tmp_path, gate=False)
    result = finish(run.run)
    assert result.ok, result.failures
    assert (tmp_path / "changed").exists()
    assert not list(tmp_path.glob("gate*"))


def test_a_gate_on_a_validate_only_run_never_holds(tmp_path: Path) -> None:
    """``--tags validate`` runs no task outside the validate phase: nothing to hold at."""
    _project(tmp_path)
    first = _run(tmp_path, gate=False)
    finish(first.run)
    (tmp_path / "changed").unlink()
    run = local_run(
        tmp_path,
        tmp_path / "job.yml",
        project_dir=tmp_path,
        ident="gatejob-validate",
        extravars={"gate_dir": str(tmp_path), "gate_check": "ok", "gate_sleep": 0},
        roles_path=tmp_path / "roles",
        run_dir=tmp_path / "run",
        tags=["validate"],
    )
    result = finish(_gated(run, tmp_path / "gate", begin=True).run)
    assert result.ok, result.failures
    assert not (tmp_path / "gate.held").exists()
    assert not (tmp_path / "changed").exists()
