"""A process is known by its pid and its start tick, never by a wall-clock start time.

psutil's ``create_time()`` is boot time + ticks, and the boot time it reads (``btime`` in
``/proc/stat``) moves by whole seconds when NTP steps or slews the clock. A CI run once lost every
sandbox machine's baseline that way, and the driver's registry would have stopped recognising its own
playbooks on abort. These tests move psutil's boot time and check that nothing notices.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from pcswitcher.jobs.registry import Registry, Tracked
from pcswitcher.remote.agent import start_ticks
from tests.sandbox.machine import live_process


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def clock_stepped(monkeypatch: pytest.MonkeyPatch) -> None:
    """psutil now believes the machine booted 7 s later than it did (as after an NTP step)."""
    from psutil import _pslinux

    booted = _pslinux.boot_time()
    monkeypatch.setattr(_pslinux, "boot_time", lambda: booted + 7.0)
    monkeypatch.setattr(psutil, "boot_time", lambda: booted + 7.0)


def test_start_ticks_is_the_kernels_start_time(child: subprocess.Popen[bytes]) -> None:
    ticks = start_ticks(child.pid)
    since_boot = psutil.Process(child.pid).create_time() - psutil.boot_time()
    assert ticks > 0
    assert abs(ticks / os.sysconf("SC_CLK_TCK") - since_boot) < 0.02
    assert start_ticks(child.pid) == ticks  # stable


def test_start_ticks_of_a_gone_process_is_zero(child: subprocess.Popen[bytes]) -> None:
    child.kill()
    child.wait()
    assert start_ticks(child.pid) == 0


def test_registry_knows_its_process_after_the_clock_moved(
    child: subprocess.Popen[bytes], request: pytest.FixtureRequest
) -> None:
    registry = Registry("test-run")
    tracked = registry.add_process(psutil.Process(child.pid), "playbook:x")
    request.getfixturevalue("clock_stepped")
    proc = tracked.process()
    assert proc is not None
    assert proc.pid == child.pid
    assert [p.pid for p in registry.live_trees()] == [child.pid]


def test_registry_refuses_a_recycled_pid(child: subprocess.Popen[bytes]) -> None:
    """Same pid, other start tick: not ours, never signalled."""
    assert Tracked(child.pid, start_ticks(child.pid) + 1, "playbook:x").process() is None
    assert Tracked(child.pid, 0, "playbook:x").process() is None


@pytest.mark.usefixtures("clock_stepped")
def test_sandbox_live_process_ignores_the_clock(child: subprocess.Popen[bytes]) -> None:
    ticks = start_ticks(child.pid)
    assert live_process(child.pid, ticks) is not None
    assert live_process(child.pid, ticks - 1) is None
    assert live_process(child.pid, None) is None
