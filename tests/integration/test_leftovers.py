"""A run leaves none of its files on either machine, whatever the cause of its end (issue 12).

Each test lists every file under ``/tmp``, ``/var/tmp`` and the login user's home (``/root``,
``~/.ansible`` included) on BOTH sandbox machines before and after a run, and compares the lists:
nothing may be new but the documented state (docs/architecture.md, "Files") — on the source
``~/.local/state/pc-switcher/`` with its ``logs/``, ``runs/``, ``history.json`` and ``key-scan/``,
on the target ``history.json``; a dry-run not even that. The machines get a private ``/var/tmp``
(the sandbox's state dir therefore lives elsewhere: ``$PCS_LEFTOVERS_SANDBOX_DIR``, default
``/var/lib/pcswitcher-leftovers-sandbox``).

A new way for a run to end is one line in :data:`ENDS`: a name and a function that runs it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import needs
from tests.integration.helpers import (
    ObservedSync,
    assert_one_error_line,
    dummy_config,
    inventory_with,
    leftovers,
    run_dirs,
    run_sync,
    write_config,
)
from tests.sandbox import Machine, Sandbox

BASE_DIR = Path(os.environ.get("PCS_LEFTOVERS_SANDBOX_DIR", "/var/lib/pcswitcher-leftovers-sandbox"))
PORT = 2223  # not the default sandboxes' port: their addresses are recorded under another base dir
LISTED = ("/tmp", "/var/tmp", "/root")
STATE = r"root/\.local/state/pc-switcher"
#: What a run may add (regular expressions of paths relative to the machine's ``/``).
DOCUMENTED = {
    "source": [
        r"root/\.local",
        r"root/\.local/state",
        STATE,
        rf"{STATE}/logs(/[^/]+\.jsonl)?",
        rf"{STATE}/runs(/.*)?",
        rf"{STATE}/history\.json",
        # folder_sync's walk cache and the record of its syncs, one of each per folder
        rf"{STATE}/key-scan(/[0-9a-f]{{8}}\.(cache|synced))?",
    ],
    "target": [r"root/\.local", r"root/\.local/state", STATE, rf"{STATE}/history\.json"],
}
CONFIG_DIR = "root/.config"  # the test's config (written before the listing anyway)


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    """Source and target with a private /var/tmp each (torn down after the module)."""
    needs.root("sandbox machines use namespaces, loop devices and mounts")
    with Sandbox(base_dir=BASE_DIR, port=PORT) as sandbox:
        sandbox.add("source", extra_dirs=["/var/tmp"])
        sandbox.add("target", extra_dirs=["/var/tmp"])
        yield sandbox
    with contextlib.suppress(OSError):  # the base dir goes too, unless another sandbox is in it
        (BASE_DIR / ".lock").unlink()
        BASE_DIR.rmdir()


# --------------------------------------------------------------------------------------------------
# listing


def files(machine: Machine) -> set[str]:
    """Every path under :data:`LISTED` on the machine (relative to its ``/``; symlinks not followed)."""
    root = machine.path("/")
    found: set[str] = set()
    for top in LISTED:
        for dirpath, dirnames, filenames in os.walk(machine.path(top)):
            for name in dirnames + filenames:
                found.add(str(Path(dirpath, name).relative_to(root)))
    return found


def snapshot(sb: Sandbox) -> dict[str, set[str]]:
    assert not leftovers(sb), f"the machines are not clean before the run: {leftovers(sb)}"
    return {name: files(machine) for name, machine in sb.machines.items()}


def new_files(sb: Sandbox, before: dict[str, set[str]], dry_run: bool) -> dict[str, list[str]]:
    """What is new since ``before`` beyond the documented state, once the run's processes are gone."""
    assert not leftovers(sb, timeout=10), f"processes or run dirs left: {leftovers(sb)}"
    found: dict[str, list[str]] = {}
    for name, machine in sb.machines.items():
        allowed = [] if dry_run else [re.compile(p) for p in DOCUMENTED[name]]
        new = sorted(
            path
            for path in files(machine) - before[name]
            if not any(p.fullmatch(path) for p in allowed) and not path.startswith(CONFIG_DIR)
        )
        if new:
            found[name] = new
    return found


# --------------------------------------------------------------------------------------------------
# the ends of a run


def _interrupt(sb: Sandbox, task: str, sig: int, rc: int, wait: float = 0) -> None:
    """Start a sync, send ``sig`` to the driver when ``task`` starts (+ ``wait`` s); expect ``rc``."""
    run = ObservedSync.start(sb)
    run.wait_task(task)
    if wait:
        time.sleep(wait)  # the behaviour under test: the signal at this moment of the task
    run.signal(sig)
    assert run.wait() == rc, run.output()


def _success(sb: Sandbox) -> None:
    assert run_sync(sb).returncode == 0


def _failed_job(sb: Sandbox) -> None:
    config = dummy_config(0, 1, jobs={"dummy_success": True, "dummy_fail": True})
    config["dummy_fail"] = {"fail_at": 1, "duration": 3}
    write_config(sb.machines["source"], config)
    result = run_sync(sb)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "dummy_fail" in result.stdout + result.stderr


def _ctrl_c_in_validate(sb: Sandbox) -> None:
    _interrupt(sb, "Look for bash and sleep on the target", signal.SIGINT, 130)


def _ctrl_c_in_a_job(sb: Sandbox) -> None:
    _interrupt(sb, "Work on the target", signal.SIGINT, 130, wait=1.0)


def _sigterm(sb: Sandbox) -> None:
    _interrupt(sb, "Work on the source", signal.SIGTERM, 143, wait=0.5)


def _kill_9_then_the_next_sync(sb: Sandbox) -> None:
    _interrupt(sb, "Work on the target", signal.SIGKILL, -signal.SIGKILL, wait=1.0)
    # the agents (EOF and the parent-death signal at once) remove the run's directory themselves
    assert not leftovers(sb, timeout=30), leftovers(sb)  # a hang guard, not a latency
    # the next sync clears the stale lock file; a run whose agents were killed too is
    # test_the_next_sync_removes_a_killed_runs_directories_and_nothing_else
    assert run_sync(sb).returncode == 0


def _dry_run(sb: Sandbox) -> None:
    assert run_sync(sb, "--dry-run").returncode == 0


ENDS: list[tuple[str, Callable[[Sandbox], None], bool]] = [
    # name, how the run ends, dry-run (then nothing at all may be new)
    ("success", _success, False),
    ("failed job", _failed_job, False),
    ("ctrl-c in validate", _ctrl_c_in_validate, False),
    ("ctrl-c in a job", _ctrl_c_in_a_job, False),
    ("sigterm", _sigterm, False),
    ("kill -9, then the next sync", _kill_9_then_the_next_sync, False),
    ("dry-run", _dry_run, True),
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("end", "dry_run"), [(f, d) for _, f, d in ENDS], ids=[n for n, _, _ in ENDS])
def test_a_run_leaves_no_file_on_either_machine(
    sb: Sandbox, end: Callable[[Sandbox], None], dry_run: bool
) -> None:
    write_config(sb.machines["source"], dummy_config(1, 4))
    before = snapshot(sb)
    end(sb)
    assert not new_files(sb, before, dry_run)


# --------------------------------------------------------------------------------------------------
# Ansible's module payloads (AnsiballZ's ansible_*_payload_* dirs) of a task killed by an abort


def _payloads(machine: Machine, top: str) -> list[str]:
    return sorted(p.name for p in machine.path(top).glob("ansible_*_payload_*"))


def test_a_running_modules_payload_is_in_the_run_directory(sb: Sandbox) -> None:
    """The mechanism: a module's temp files are made in the run's directory on both machines."""
    source, target = sb.machines["source"], sb.machines["target"]
    write_config(source, dummy_config(3, 3))
    run = ObservedSync.start(sb)
    seen: dict[str, list[str]] = {}
    for task, machine in (("Work on the source", source), ("Work on the target", target)):
        run.wait_task(task)
        deadline = time.monotonic() + 10
        while not seen.get(machine.name) and time.monotonic() < deadline:
            seen[machine.name] = [d for r in run_dirs(machine) for d in _payloads(machine, f"/tmp/{r}")]
            assert not _payloads(machine, "/tmp"), f"a payload in /tmp on {machine.name}"
            time.sleep(0.02)
    assert run.wait() == 0, run.output()
    assert seen["source"], "no payload in the source's run directory while its task ran"
    assert seen["target"], "no payload in the target's run directory while its task ran"


MOMENTS = [
    ("Look for bash and sleep on the target", 0.0),
    ("Look for bash and sleep on the source", 0.0),
    ("Prepare the target", 0.0),
    ("Prepare the target", 0.3),
    ("Work on the source", 0.0),
    ("Work on the source", 0.2),
    ("Work on the target", 0.0),
    ("Work on the target", 0.5),
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("task", "wait"), MOMENTS, ids=[f"{t}+{w}s" for t, w in MOMENTS])
def test_ctrl_c_right_after_a_module_starts_leaves_no_temp_file(sb: Sandbox, task: str, wait: float) -> None:
    write_config(sb.machines["source"], dummy_config(2, 4))
    before = snapshot(sb)
    _interrupt(sb, task, signal.SIGINT, 130, wait=wait)
    assert not new_files(sb, before, dry_run=False)


# --------------------------------------------------------------------------------------------------
# the next sync removes what a killed run left (its agent killed too, so that nothing removed it)


def _plant_dead_run(machine: Machine, run_id: str) -> Path:
    path = machine.path(f"/tmp/pcswitcher-{run_id}")
    (path / "tmp" / "ansible_ansible.legacy.command_payload_x").mkdir(parents=True)
    (path / "progress.jsonl").write_text("{}\n")
    return path


def test_the_next_sync_removes_a_killed_runs_directories_and_nothing_else(sb: Sandbox) -> None:
    source, target = sb.machines["source"], sb.machines["target"]
    write_config(source, dummy_config(0, 0))
    dead = {name: _plant_dead_run(m, "20261127T235000Z-dead") for name, m in sb.machines.items()}
    # what must survive: a name that is no run id, a symlink named like a run, another user's run
    (source.path("/root/victim")).mkdir()
    (source.path("/root/victim/data")).write_text("keep")
    source.path("/tmp/pcswitcher-20261127T235000Z-0001").symlink_to("/root/victim")
    source.path("/tmp/pcswitcher-manual").mkdir()
    theirs = target.path("/tmp/pcswitcher-20261127T235000Z-0002")
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    try:
        run = ObservedSync.start(sb)
        assert run.wait() == 0, run.output()
        for name, path in dead.items():
            assert not path.exists(), f"{path} left on {name}"
        messages = run.messages("INFO")
        for name in ("source", "target"):
            removed = f"removed /tmp/pcswitcher-20261127T235000Z-dead on {name}"
            assert f"{removed}, left by a run that was killed" in messages, messages
        assert source.path("/root/victim/data").read_text() == "keep"
        assert source.path("/tmp/pcswitcher-20261127T235000Z-0001").is_symlink()
        assert source.path("/tmp/pcswitcher-manual").is_dir()
        assert theirs.is_dir()
    finally:
        source.path("/tmp/pcswitcher-20261127T235000Z-0001").unlink()
        source.path("/tmp/pcswitcher-manual").rmdir()
        theirs.rmdir()
        (source.path("/root/victim/data")).unlink()
        (source.path("/root/victim")).rmdir()


# --------------------------------------------------------------------------------------------------
# a history path that is a directory: refused before any change, no temp file beside it


@pytest.mark.parametrize("side", ["source", "target"])
def test_a_history_path_that_is_a_directory_is_one_error_and_leaves_nothing(sb: Sandbox, side: str) -> None:
    write_config(sb.machines["source"], {**dummy_config(0, 0), "history": {"path": "/root/history"}})
    machine = sb.machines[side]
    machine.path("/root/history").mkdir()
    inventory = None
    if side == "target":  # the target's host var wins over the config's path
        machine.path("/root/history").rename(machine.path("/root/target-history"))
        inventory = inventory_with(sb, "history-dir", pcswitcher_history_path="/root/target-history")
    try:
        before = snapshot(sb)
        result = run_sync(sb, inventory=inventory)
        line = assert_one_error_line(result, 2)
        path = "/root/history" if side == "source" else "/root/target-history"
        assert f"history path {path} on {side} is a directory" in line
        assert "set history.path" in line
        assert "pcswitcher_history_path" in line
        # nothing recorded on either machine, no history.json.tmp-<pid> beside the path
        assert not new_files(sb, before, dry_run=False)
    finally:
        for name in ("history", "target-history"):
            if machine.path(f"/root/{name}").is_dir():
                machine.path(f"/root/{name}").rmdir()
