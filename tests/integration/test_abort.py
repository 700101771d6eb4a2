"""The abort path against real sandbox machines and the real CLI (issue 3).

Every test here starts ``pc-switcher sync`` inside the sandbox machine ``source`` towards ``target``
and stops it: Ctrl+C at random moments, a second Ctrl+C, SIGTERM, low disk on either machine, a
frozen link, a SIGKILL of the driver. After each one, *nothing of the run* may be left:

* on the target: no process beyond the machine's baseline (init and the sshd listener), no
  ``/tmp/pcswitcher-*`` directory;
* on the source (the driver has exited): no process beyond the baseline either — so no descendant
  of the driver, no process tagged ``PCSWITCHER_RUN_ID``, no ssh master (``ssh: ... [mux]``) — and
  no ``/tmp/pcswitcher-*`` directory (which holds the run's ControlPath socket);
* the sync locks on both machines can be taken.

All tests share ONE sandbox (module fixture); each leaves it clean or fails.
The random trials print their seed (``PCS_ABORT_SEED`` replays a set, ``PCS_ABORT_TRIALS`` sizes it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import subprocess
import time
from collections.abc import Collection
from typing import Any

import psutil
import pytest

from tests.integration.helpers import (
    PC_SWITCHER,
    REPO,
    STATE,
    TAG,
    ObservedSync,
    describe,
    dummy_config,
    run_sync,
    write_config,
)
from tests.integration.outcome import assert_log_ends
from tests.sandbox import Machine, Sandbox

# run alone, after the others (Makefile `integration`):
# a Ctrl+C at a random moment must land before a task ends at a fixed time
pytestmark = pytest.mark.serial

ANSIBLE_PLAYBOOK = str(REPO / ".venv" / "bin" / "ansible-playbook")
LOCK = f"{STATE}/sync.lock"
MiB = 1 << 20
# how long to wait for killed processes to be reaped: a deadline for a hang, not a latency (how fast
# the abort is, is measured by bench/abort_latency.py)
REAP = 20.0


# --------------------------------------------------------------------------------------------------
# fixtures


def _write(source: Machine, config: dict[str, Any]) -> None:
    """Write the config, with the sections a sandbox cannot serve turned off when the schema has them
    (btrfs snapshots: a sandbox machine's ``/`` is the host's)."""
    from pcswitcher.config.schema import config_schema
    from pcswitcher.jobs.discovery import discover_jobs

    if "snapshots" in config_schema(discover_jobs(REPO))["properties"]:
        config.setdefault("snapshots", {"enabled": False})
    write_config(source, config)


@pytest.fixture
def source(sb: Sandbox) -> Machine:
    return sb.machines["source"]


@pytest.fixture
def target(sb: Sandbox) -> Machine:
    return sb.machines["target"]


# --------------------------------------------------------------------------------------------------
# what a run may leave behind


def _lock_free(machine: Machine) -> bool:
    path = machine.path(LOCK)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _run_dirs(machine: Machine) -> list[str]:
    return sorted(str(p) for p in machine.path("/tmp").glob("pcswitcher-*"))


def _tagged(machine: Machine) -> list[str]:
    out = []
    for proc in machine.processes():
        with contextlib.suppress(psutil.Error):
            if TAG in proc.environ():
                out.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
    return out


def leftovers(sb: Sandbox, ignore: Collection[int] = (), files: bool = True) -> dict[str, list[str]]:
    """What the finished run left, per kind (empty dict = clean). ``ignore``: host pids we own."""
    found: dict[str, list[str]] = {}
    for name in ("source", "target"):
        machine = sb.machines[name]
        procs = [p for p in machine.extra_processes() if p.pid not in ignore]
        if procs:
            found[f"{name} processes"] = describe(procs)
        mux = [d for d in describe(procs) if "[mux]" in d or "ControlPath" in d]
        if mux:
            found[f"{name} ssh masters"] = mux
        tagged = [t for t in _tagged(machine) if int(t.split()[0]) not in ignore]
        if tagged:
            found[f"{name} tagged"] = tagged
        if files and _run_dirs(machine):
            found[f"{name} run dirs"] = _run_dirs(machine)
        if not _lock_free(machine):
            found[f"{name} lock"] = [str(machine.path(LOCK))]
    return found


def _of_run(machine: Machine, run_id: str) -> bool:
    for proc in machine.processes():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(TAG) == run_id:
                return True
    return False


def _wait_working(run: ObservedSync, machine: Machine, timeout: float = 30) -> None:
    """Wait until a process of ``run`` works on ``machine`` (a job's task: it carries the run's tag)."""
    deadline = time.monotonic() + timeout
    while not _of_run(machine, run.run_id):
        assert not run.exited(), f"the run ended before it worked on {machine.name}:\n{run.output()}"
        assert time.monotonic() < deadline, f"no process of the run on {machine.name} within {timeout} s"
        time.sleep(0.02)


def _wait_connecting(run: ObservedSync, timeout: float = 30) -> None:
    """Wait until the driver runs ssh towards the target (the agents' connection is under way)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(psutil.Error):
            if any(proc.name() == "ssh" for proc in run.driver.children(recursive=True)):
                return
        assert not run.exited(), f"the run ended before it connected:\n{run.output()}"
        assert time.monotonic() < deadline, f"no ssh of the driver within {timeout} s"
        time.sleep(0.01)


def wait_clean(
    sb: Sandbox, timeout: float = REAP, ignore: Collection[int] = (), files: bool = True
) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(sb, ignore, files)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def assert_clean(sb: Sandbox, context: str, timeout: float = REAP, **kw: Any) -> None:
    left = wait_clean(sb, timeout, **kw)
    assert not left, f"{context}: the run left {left}"


# --------------------------------------------------------------------------------------------------
# random Ctrl+C trials

PHASES = ("startup", "pre_sync", "source_loop", "remote_async", "between_jobs", "second_job")


def _trial_config(phase: str, with_fail: bool) -> dict[str, Any]:
    config = dummy_config(2, 4)
    if with_fail or phase in {"between_jobs", "second_job"}:
        config["jobs"] = {"dummy_success": True, "dummy_fail": True}
        config["dummy_fail"] = {"fail_at": 4, "duration": 6}
    return config


def _reach_phase(run: ObservedSync, phase: str, rng: random.Random) -> str:
    """Wait for the phase, sleep a random part of it; returns what happened (for messages).

    The sleep IS the behaviour under test: Ctrl+C at a random moment of the phase."""
    if phase == "startup":  # agent start, preflight and validation: the first ~3 s of the run
        run.wait_record(lambda r: str(r.get("message", "")).startswith("pc-switcher run"), 30, "run start")
        delay = rng.uniform(0, 3.0)
    elif phase == "pre_sync":
        run.wait_task("Prepare the target")
        delay = rng.uniform(0, 1.0)
    elif phase == "source_loop":
        run.wait_task("Work on the source")
        delay = rng.uniform(0, 2.0)
    elif phase == "remote_async":
        run.wait_task("Work on the target")
        delay = rng.uniform(0, 3.5)
    elif phase == "between_jobs":
        run.wait_line("dummy_success: succeeded")
        delay = 0.0
    else:  # second_job: during dummy_fail's async loop, before it fails at 4 s
        run.wait_task("Work on the target until the configured failure", job="dummy_fail")
        delay = rng.uniform(0, 2.5)
    time.sleep(delay)
    return f"{phase}+{delay:.2f}s"


def _interrupted_cleanly(sb: Sandbox, run: ObservedSync, rc: int, context: str) -> None:
    assert rc == 130, f"{context}: exit code {rc}, expected 130:\n{run.output()}"
    warnings = run.messages("WARNING")
    assert "Sync interrupted by user" in warnings, (
        f"{context}: no WARNING 'Sync interrupted by user': {warnings}"
    )
    assert_log_ends(run.records(), 130, "Sync interrupted by user")
    assert_clean(sb, context)


@pytest.mark.timeout(900)
def test_random_ctrl_c_trials(sb: Sandbox, source: Machine, target: Machine) -> None:
    trials = int(os.environ.get("PCS_ABORT_TRIALS", "20"))
    seed = int(os.environ.get("PCS_ABORT_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"\nabort trials: PCS_ABORT_SEED={seed} PCS_ABORT_TRIALS={trials}")
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    # every phase at least twice when there are enough trials, the rest at random
    phases = [PHASES[i % len(PHASES)] for i in range(trials)]
    rng.shuffle(phases)
    follow_ups = 0
    ran = 0  # the trials that ran to their end: the set's size is a promise of this test
    every = max(1, trials // 3)  # a following sync at least 3 times across the set
    for index, phase in enumerate(phases, start=1):
        with_fail = rng.random() < 0.3
        _write(source, _trial_config(phase, with_fail))
        run = ObservedSync.start(sb)
        what = _reach_phase(run, phase, rng)
        run.signal(signal.SIGINT)
        rc = run.wait()
        context = f"seed {seed}, trial {index}/{trials} ({what}, dummy_fail {'on' if with_fail else 'off'})"
        print(f"{context}: run {run.run_id} rc {rc}")
        _interrupted_cleanly(sb, run, rc, context)
        if phase == "between_jobs":
            status = run.job_status()
            assert status.get("dummy_success") == "succeeded", f"{context}: {status}"
            assert status.get("dummy_fail") in {"not run", "aborted"}, f"{context}: {status}"
        if index % every == 0 or index == trials:
            _write(source, dummy_config(1, 1))
            result = run_sync(sb)
            assert result.returncode == 0, f"{context}: the following sync failed:\n{result.stdout[-3000:]}"
            follow_ups += 1
            assert_clean(sb, f"{context}: after the following sync")
        ran += 1
    assert ran == trials, f"{ran} of {trials} trials ran"
    assert follow_ups >= min(3, trials)


# --------------------------------------------------------------------------------------------------
# second Ctrl+C, SIGTERM, Ctrl+C between jobs


def test_second_ctrl_c_exits_without_waiting_for_the_cleanup_playbook(sb: Sandbox, source: Machine) -> None:
    """The second Ctrl+C ends the driver at once: the abort path the first one began is cut short, so
    the cleanup playbook never reports (done or failed) and the log ends with the forced exit."""
    rng = random.Random()  # noqa: S311
    _write(source, dummy_config(1, 20))
    run = ObservedSync.start(sb)
    run.wait_task("Work on the target")
    _wait_working(run, sb.machines["target"])
    run.signal(signal.SIGINT)
    time.sleep(rng.uniform(0.1, 0.3))  # the behaviour: the second Ctrl+C at a random moment of the abort
    run.signal(signal.SIGINT)
    rc = run.wait()
    assert rc == 130, run.output()
    messages = run.messages()
    forced = messages.index("Second Ctrl+C: forcing the abort")
    assert any(m.startswith("forced exit; run `pc-switcher cleanup") for m in messages[forced:]), messages
    cleanup = [m for m in messages if m.startswith(("cleanup playbook done", "cleanup playbook failed"))]
    assert not cleanup, f"the forced exit waited for the cleanup playbook: {cleanup}"
    assert_log_ends(run.records(), 130, "Sync interrupted by user", "Second Ctrl+C: forcing the abort")
    # the dead-man switch and the best-effort sweep end the rest; the run dir may stay (forced exit)
    assert_clean(sb, "second Ctrl+C", files=False)
    _cleanup_run_files(sb, run.run_id)


def test_ctrl_c_while_the_agents_connect_does_not_wait_for_them(
    sb: Sandbox, source: Machine, target: Machine
) -> None:
    """Ctrl+C before the target's agent has said hello (its sshd is frozen: the ssh handshake
    hangs) takes the abort path at once: the run is stopped while the target still does not
    answer (the driver does not wait for the agents' hello, up to 20 s), the first job's held
    playbook ran no task, and once the target answers again nothing of the run is left."""
    _write(source, dummy_config(1, 20))
    baseline = {p.pid for p in target.processes()} - {p.pid for p in target.extra_processes()}
    listener = [p for p in map(psutil.Process, baseline) if p.name() == "sshd"]
    assert len(listener) == 1, listener
    listener[0].send_signal(signal.SIGSTOP)
    try:
        run = ObservedSync.start(sb)
        run.wait_record(
            lambda r: str(r.get("message", "")).startswith("pc-switcher run "), 30, "the first record"
        )
        _wait_connecting(run)
        run.signal(signal.SIGINT)
        run.wait_record(
            lambda r: str(r.get("message", "")).startswith("run stopped in "),
            10,
            "the run stopped while the target's sshd is still frozen",
        )
    finally:
        listener[0].send_signal(signal.SIGCONT)
    rc = run.wait()
    assert rc == 130, run.output()
    messages = run.messages()
    assert not any(m.startswith("agents up") for m in messages), messages
    # the held playbook may have reached its first task, never started it: no task in the log
    ran = [m for m in messages if m.startswith(("task: ", "ok: ", "changed: ", "failed: ", "skipped: "))]
    assert not ran, ran
    assert_clean(sb, "Ctrl+C while the agents connect")


def test_sigterm_exits_143_and_cleans(sb: Sandbox, source: Machine) -> None:
    _write(source, dummy_config(1, 20))
    run = ObservedSync.start(sb)
    run.wait_task("Work on the target")
    _wait_working(run, sb.machines["target"])
    run.signal(signal.SIGTERM)
    rc = run.wait()
    assert rc == 143, run.output()
    assert "Sync terminated by SIGTERM" in run.messages("WARNING")
    assert_log_ends(run.records(), 143, "Sync terminated by SIGTERM")
    assert_clean(sb, "SIGTERM")


def test_ctrl_c_between_jobs_runs_no_further_job(sb: Sandbox, source: Machine) -> None:
    config = dummy_config(1, 1)
    config["jobs"] = {"dummy_success": True, "dummy_fail": True}
    config["dummy_fail"] = {"fail_at": 10, "duration": 10}
    _write(source, config)
    run = ObservedSync.start(sb)
    # the UI prints "<job>: succeeded" when the job's playbook has ended, before the next one starts
    run.wait_line("dummy_success: succeeded")
    run.signal(signal.SIGINT)
    rc = run.wait()
    _interrupted_cleanly(sb, run, rc, "Ctrl+C between jobs")
    status = run.job_status()
    assert status.get("dummy_success") == "succeeded", status
    assert status.get("dummy_fail") in {"not run", "aborted"}, status
    # the second job never got to its work: its sync-phase tasks never started
    started = [
        r["message"]
        for r in run.records()
        if r.get("job") == "dummy_fail" and "configured failure" in str(r.get("message"))
    ]
    assert not started, f"dummy_fail started its work: {started}"


# --------------------------------------------------------------------------------------------------
# disk


def _free(machine: Machine, path: str) -> int:
    st = os.statvfs(machine.path(path))
    return st.f_bavail * st.f_frsize


def _fill(machine: Machine, path: str, leave: int) -> str:
    """Allocate a file so that about ``leave`` bytes stay free on ``path``; returns its in-machine path."""
    name = f"{path.rstrip('/')}/pcs-test-fill"
    size = _free(machine, path) - leave
    assert size > 0, f"{machine.name}:{path} has only {_free(machine, path)} bytes free"
    res = machine.run(["fallocate", "-l", str(size), name])
    assert res.returncode == 0, res.stderr
    machine.run(["sync", "-f", name])
    return name


def _unfill(machine: Machine, name: str) -> None:
    machine.run(["rm", "-f", name])
    machine.run(["sync", "-f", os.path.dirname(name)])


def _disk_config(**jobs: Any) -> dict[str, Any]:
    config = dummy_config(1, 30)
    config["disk"] = {
        "preflight_minimum": "600MiB",
        "warning_threshold": "500MiB",
        "runtime_minimum": "400MiB",
        "interval": 0.5,
        "paths": {"source": ["/home"], "target": ["/home"]},
    }
    return config


@pytest.mark.parametrize("side", ["target", "source"])
def test_low_disk_during_sync_aborts(sb: Sandbox, source: Machine, side: str) -> None:
    machine = sb.machines[side]
    _write(source, _disk_config())
    assert _free(machine, "/home") > 700 * MiB
    run = ObservedSync.start(sb)
    run.wait_task("Work on the target")
    fill = _fill(machine, "/home", 200 * MiB)
    try:
        rc = run.wait()
    finally:
        _unfill(machine, fill)
    assert rc == 1, run.output()
    critical = [m for m in run.messages("CRITICAL") if "runtime_minimum" in m]
    assert critical, f"no CRITICAL about the runtime minimum: {run.messages('CRITICAL')}"
    text = critical[0]
    assert side in text, text
    assert "400MiB" in text, text  # the threshold
    assert "MiB" in text.split("below")[0], text  # the free space
    assert_log_ends(run.records(), 1, "runtime_minimum")
    assert_clean(sb, f"low disk on the {side}")


@pytest.mark.parametrize("side", ["target", "source"])
def test_low_disk_below_the_warning_threshold_warns_once_and_goes_on(
    sb: Sandbox, source: Machine, side: str
) -> None:
    """Free space between runtime_minimum (400MiB) and warning_threshold (500MiB): one WARNING per
    path naming the side, the free space and the threshold; the sync goes on and succeeds."""
    machine = sb.machines[side]
    config = _disk_config()
    config["dummy_success"] = {"source_duration": 1, "target_duration": 8}
    _write(source, config)
    assert _free(machine, "/home") > 700 * MiB
    run = ObservedSync.start(sb)
    run.wait_task("Work on the target")
    fill = _fill(machine, "/home", 450 * MiB)
    try:
        run.wait_record(
            lambda r: r.get("level") == "WARNING" and "warning_threshold" in str(r.get("message")),
            timeout=60,
            what="the WARNING about the warning_threshold",
        )
        rc = run.wait()
    finally:
        _unfill(machine, fill)
    assert rc == 0, run.output()
    warned = [m for m in run.messages("WARNING") if "warning_threshold" in m]
    assert len(warned) == 1, f"one WARNING per path, not per look: {warned}"
    text = warned[0]
    assert text.startswith(f"free space on {side} /home is "), text
    assert text.endswith("below warning_threshold 500MiB"), text
    assert not [m for m in run.messages("CRITICAL") if "runtime_minimum" in m]
    assert_log_ends(run.records(), 0)
    assert_clean(sb, f"a warning on the {side}")


def test_low_disk_before_start_refuses(sb: Sandbox, source: Machine, target: Machine) -> None:
    _write(source, _disk_config())
    fill = _fill(target, "/home", 450 * MiB)
    try:
        run = ObservedSync.start(sb)
        rc = run.wait()
    finally:
        _unfill(target, fill)
    assert rc == 1, run.output()
    assert "not enough free space on target" in run.output(), run.output()
    assert "600MiB" in run.output(), run.output()
    tasks = [m for m in run.messages() if m.startswith("task:")]
    assert not tasks, f"a playbook ran although the preflight failed: {tasks}"
    assert_log_ends(run.records(), 1, "not enough free space on target")
    assert_clean(sb, "preflight")


# --------------------------------------------------------------------------------------------------
# link loss


def _sshd_sessions(machine: Machine) -> list[psutil.Process]:
    listener = {p.pid for p in machine.processes()} - {p.pid for p in machine.extra_processes()}
    out = []
    for proc in machine.extra_processes():
        with contextlib.suppress(psutil.Error):
            if proc.pid not in listener and " ".join(proc.cmdline()).startswith("sshd:"):
                out.append(proc)
    return out


def test_frozen_link_aborts_and_target_cleans_itself(sb: Sandbox, source: Machine, target: Machine) -> None:
    config = dummy_config(1, 30)
    config["link_timeout"] = 3
    _write(source, config)
    run = ObservedSync.start(sb)
    run.wait_task("Work on the target")
    _wait_working(run, target)
    frozen = _sshd_sessions(target)
    assert frozen, "no sshd session on the target to freeze"
    for proc in frozen:
        proc.send_signal(signal.SIGSTOP)
    try:
        record = run.wait_record(
            lambda r: r.get("level") == "CRITICAL" and "lost connection to target" in str(r.get("message")),
            timeout=60,  # a deadline for a hang, not a latency: bench/abort_latency.py measures that
            what="CRITICAL 'lost connection to target'",
        )
        rc = run.wait(90)
    finally:
        for proc in frozen:  # thaw: only the processes we stopped
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGCONT)
    assert rc == 1, run.output()
    assert record.get("abort_cause") == "link", record
    assert_log_ends(run.records(), 1, "lost connection to target")
    # after the thaw, the agent's dead-man switch sweeps what the run left on the target
    left = wait_clean(sb, timeout=15, files=False)
    assert not left, f"after the thaw the run left {left}"
    _cleanup_run_files(sb, run.run_id)


def test_a_dead_ssh_master_mid_job_is_a_lost_link_not_a_failed_job(sb: Sandbox, source: Machine) -> None:
    """The run's ssh master ends (here: SIGKILL): Ansible's running task fails as unreachable at once,
    through that master, often before the monitor's next look. The cause to report is the lost link.
    The monitor looks only every 15 s here, so it is the driver's own check that must say so."""
    config = dummy_config(1, 30)
    config["link_timeout"] = 30
    config["disk"] = {"interval": 30}
    _write(source, config)
    run = ObservedSync.start(sb)
    run.wait_task("Work on the target")
    _wait_working(run, sb.machines["target"])
    masters = [
        proc
        for proc in run.driver.children(recursive=True)
        if proc.name() == "ssh" and "ControlMaster=yes" in proc.cmdline()
    ]
    assert len(masters) == 1, masters
    masters[0].kill()  # a process of this test's run, by its host pid
    record = run.wait_record(
        lambda r: r.get("level") in {"ERROR", "CRITICAL"} and r.get("abort_cause") is not None,
        timeout=10,
        what="the abort's cause",
    )
    assert record["abort_cause"] == "link", record
    assert "lost connection to target" in str(record["message"])
    assert run.wait(90) == 1, run.output()
    assert_log_ends(run.records(), 1, "lost connection to target")
    # the target's agent lost its driver with the connection: it sweeps what the run left there
    assert_clean(sb, "after the ssh master died", timeout=20, files=False)
    _cleanup_run_files(sb, run.run_id)


def test_a_disk_interval_longer_than_link_timeout_is_no_lost_link(sb: Sandbox, source: Machine) -> None:
    """The disk check's ping is also the heartbeat: it must come at least twice per link_timeout, or
    a long disk.interval reads as a silent target (here the target is quiet: the job works on the
    source and reports its progress there)."""
    config = dummy_config(8, 1)
    config["link_timeout"] = 2
    config["disk"] = {"interval": 5}
    _write(source, config)
    run = ObservedSync.start(sb)
    rc = run.wait(120)
    assert rc == 0, run.output()
    assert "lost connection" not in run.output()
    assert_clean(sb, "after a successful sync")


# --------------------------------------------------------------------------------------------------
# driver killed


def test_driver_sigkill_leaves_no_process(sb: Sandbox, source: Machine) -> None:
    """The agents' dead-man switch ends the run's processes on both machines when the driver is
    killed (how soon: bench/abort_latency.py; the deadline here only ends a hang)."""
    _write(source, dummy_config(1, 30))
    run = ObservedSync.start(sb)
    run.wait_task("Work on the target")
    _wait_working(run, sb.machines["target"])
    run.signal(signal.SIGKILL)
    run.wait()
    left = wait_clean(sb, timeout=30.0, files=False)
    assert not left, f"after the driver's SIGKILL the run left {left}"
    # its files are for `pc-switcher cleanup`
    _cleanup_run_files(sb, run.run_id)


def _cleanup_run_files(sb: Sandbox, run_id: str) -> None:
    res = sb.machines["source"].run(
        [PC_SWITCHER, "cleanup", "target", "--run", run_id, "-i", str(sb.inventory_path)], timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert_clean(sb, f"after pc-switcher cleanup --run {run_id}")


# --------------------------------------------------------------------------------------------------
# the cleanup playbook on its own


def _spawn(machine: Machine, script: str, env: dict[str, str] | None = None) -> None:
    """Start ``bash -c script`` detached inside the machine (own session, stdio closed)."""
    argv = ["setsid", "-f", "bash", "-c", script]
    if env:
        argv = ["env", *(f"{k}={v}" for k, v in env.items()), *argv]
    res = machine.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert res.returncode == 0, f"{script!r} did not start on {machine.name}"


def _find(machine: Machine, needle: str) -> list[psutil.Process]:
    out = []
    for proc in machine.extra_processes():
        with contextlib.suppress(psutil.Error):
            if needle in " ".join(proc.cmdline()):
                out.append(proc)
    return out


def _wait_found(machine: Machine, needle: str, count: int = 1) -> list[psutil.Process]:
    deadline = time.monotonic() + 5
    while len(found := _find(machine, needle)) < count:
        assert time.monotonic() < deadline, f"{needle!r} did not start on {machine.name}"
        time.sleep(0.02)
    return found


def _plant_dead_run(sb: Sandbox, run_id: str, jid: str) -> None:
    """What a run whose driver died (and whose dead-man switch did not fire) leaves behind."""
    target, source = sb.machines["target"], sb.machines["source"]
    env = {TAG: run_id}
    # a tagged module process with a child that cleared its environment
    _spawn(target, "env -i sleep 301 & exec sleep 302", env)
    # an async job: wrapper-like process named by its job id, untagged, with a child
    _spawn(target, f"exec -a 'async_wrapper.py {jid} 300' bash -c 'sleep 303; true'")
    # the run's directory and an async status file
    target.run(["mkdir", "-p", f"/tmp/pcswitcher-{run_id}/async"])
    target.run(["mkdir", "-p", "/root/.ansible_async"])
    target.path(f"/root/.ansible_async/{jid}").write_text("{}")
    # on the source, a tagged leftover too
    _spawn(source, "exec sleep 304", env)
    source.run(["mkdir", "-p", f"/tmp/pcswitcher-{run_id}"])
    _wait_found(target, "sleep 301")
    _wait_found(target, "sleep 302")
    _wait_found(target, "sleep 303")
    _wait_found(source, "sleep 304")


def _close_ansible_masters(source: Machine) -> None:
    """End the persistent ssh master (ControlPersist) that a plain ansible-playbook run leaves.

    It is the hand-run playbook's own connection, not a process of the run it cleaned.
    """
    for proc in _find(source, "/.ansible/cp/"):
        with contextlib.suppress(psutil.Error):
            path = proc.cmdline()[0].split()[1]
            source.run(["ssh", "-o", f"ControlPath={path}", "-O", "exit", "target"], timeout=10)


@pytest.mark.parametrize("how", ["ansible-playbook", "pc-switcher cleanup"])
def test_cleanup_alone_cleans_a_dead_run(sb: Sandbox, source: Machine, target: Machine, how: str) -> None:
    run_id = f"20200101T000000Z-{random.randrange(1 << 16):04x}"  # noqa: S311
    jid = f"j{random.randrange(10**11, 10**12)}.{random.randrange(1000, 9999)}"  # noqa: S311
    bystander_env = {TAG: "20200101T000000Z-other"}
    _spawn(target, "exec sleep 1001", bystander_env)
    bystander = _wait_found(target, "sleep 1001")
    try:
        _plant_dead_run(sb, run_id, jid)
        if how == "ansible-playbook":
            argv = [
                ANSIBLE_PLAYBOOK,
                "-i",
                str(sb.inventory_path),
                "playbooks/cleanup.yml",
                "-l",
                "target",
                "-e",
                f"cleanup_run_id={run_id}",
                "-e",
                f'{{"cleanup_async_jids": ["{jid}"]}}',
            ]
        else:
            state = source.path(f"{STATE}/runs/{run_id}")
            state.mkdir(parents=True, exist_ok=True)
            (state / "async_jids.json").write_text(f'{{"target": ["{jid}"]}}')
            argv = [PC_SWITCHER, "cleanup", "target", "--run", run_id, "-i", str(sb.inventory_path)]
        res = source.run(argv, cwd=str(REPO), timeout=120)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        if how == "ansible-playbook":
            _close_ansible_masters(source)
        ignore = {p.pid for p in bystander}
        assert_clean(sb, f"{how} --run {run_id}", ignore=ignore)
        assert not target.path(f"/root/.ansible_async/{jid}").exists()
        assert all(p.is_running() for p in bystander), "cleanup killed a process of another run"
    finally:
        for proc in bystander:
            with contextlib.suppress(psutil.Error):
                proc.kill()


# --------------------------------------------------------------------------------------------------
# never a process that is not of the run


def test_abort_spares_processes_not_of_the_run(sb: Sandbox, source: Machine, target: Machine) -> None:
    _spawn(target, "exec sleep 1000")
    _spawn(target, "sleep 300; echo dummy_success")
    _spawn(target, "exec sleep 1002", {TAG: "20200101T000000Z-beef"})
    mine = _wait_found(target, "sleep 1000") + _wait_found(target, "echo dummy_success")
    mine += _wait_found(target, "sleep 1002")
    mine += [c for p in mine for c in p.children(recursive=True)]
    try:
        _write(source, dummy_config(1, 20))
        run = ObservedSync.start(sb)
        run.wait_task("Work on the target")
        _wait_working(run, target)
        run.signal(signal.SIGINT)
        rc = run.wait()
        ignore = {p.pid for p in mine}
        _ = rc
        assert rc == 130, run.output()
        assert_clean(sb, "abort with bystanders", ignore=ignore)
        dead = [f"{p.pid}" for p in mine if not p.is_running() or p.status() == psutil.STATUS_ZOMBIE]
        assert not dead, f"the abort killed processes not of its run: {dead}"
    finally:
        for proc in mine:
            with contextlib.suppress(psutil.Error):
                proc.kill()
    assert_clean(sb, "after killing the bystanders")


def _signal_while_opening(sb: Sandbox, source: Machine) -> tuple[int, bool, ObservedSync]:
    """SIGTERM as soon as the run's working dir exists on the source (its first playbook is being
    started: the run is opening); whether it landed before the log's first record."""
    run = ObservedSync.start(sb)
    tmp = source.path("/tmp")
    deadline = time.monotonic() + 30
    while not any(p.name.startswith("pcswitcher-") for p in tmp.iterdir()):
        assert not run.exited(), run.output()
        assert time.monotonic() < deadline, "the run's working dir did not appear"
        time.sleep(0.002)
    run.signal(signal.SIGTERM)
    opening = not run.records()
    return run.wait(), opening, run


def test_sigterm_while_the_run_opens_takes_the_abort_path(sb: Sandbox, source: Machine) -> None:
    """A SIGTERM before the run's first record (the first playbook started and held, the inventory
    read, the lock taken) is an abort like any later one: exit 143, nothing left on either machine
    (Python's default ended the driver by the signal there, leaving its files and held playbook)."""
    _write(source, dummy_config(1, 1))
    opened = 0
    for attempt in range(6):
        rc, opening, run = _signal_while_opening(sb, source)
        assert rc == 143, f"attempt {attempt}: exit {rc}\n{run.output()}"
        assert_clean(sb, f"SIGTERM while the run opens, attempt {attempt}")
        opened += opening
        if opened:
            break
    assert opened, "no SIGTERM of 6 landed before the run's first record"
