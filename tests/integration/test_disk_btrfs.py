"""The disk guard holds on btrfs (issue 12, "Disk space on btrfs"), on sandbox machines with a
small btrfs for /home and /root.

- The agents' free figure falls as soon as data is written, while statvfs waits for the next
  transaction commit (the filesystem is remounted with ``commit=300`` so that none comes by chance).
- folder_sync refuses in validate, before anything changed, a sync whose writes would take the
  target below ``disk.runtime_minimum``: the issue's scenario (about 116 MiB free, runtime_minimum
  80MB, a 100 MB folder), twice; a sync that fits still runs.
- During a run, data written by another writer on the target and not yet committed aborts the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.folder_sync_helpers import folder_config, manifest, sh
from tests.integration.helpers import (
    REPO,
    ObservedSync,
    dummy_config,
    leftovers,
    log_records,
    run_sync,
    write_config,
)
from tests.sandbox import Machine, Sandbox

MiB = 1 << 20
AGENT = str(REPO / "pcswitcher" / "remote" / "agent.py")
PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def small() -> Iterator[Sandbox]:
    """Machines with a 512 MiB btrfs (the module's tests share them; each cleans up after itself)."""
    with Sandbox(size="512M") as sandbox:
        sandbox.add("source")
        sandbox.add("target")
        for machine in sandbox.machines.values():
            # no transaction commit by chance during a test: statvfs moves only when a test syncs
            sh(machine, "mount -o remount,commit=300 /home")
        yield sandbox


def agent_free(machine: Machine, path: str = "/home") -> dict[str, Any]:
    res = machine.run([PYTHON, AGENT, "disk", "--", path])
    assert res.returncode == 0, res.stderr
    figure: dict[str, Any] = json.loads(res.stdout)["disk"][0]
    return figure


def statvfs_free(machine: Machine, path: str = "/home") -> int:
    res = machine.run(
        [PYTHON, "-c", "import os,sys; s=os.statvfs(sys.argv[1]); print(s.f_bavail*s.f_frsize)", path]
    )
    assert res.returncode == 0, res.stderr
    return int(res.stdout)


def commit(machine: Machine) -> None:
    sh(machine, "sync -f /home")


def fill_to(machine: Machine, free: int) -> None:
    """Allocate /root/pcs-fill (same btrfs as /home) so that about ``free`` bytes stay free."""
    sh(machine, "rm -f /root/pcs-fill && sync -f /root")
    size = int(agent_free(machine)["free"]) - free
    assert size > 0, agent_free(machine)
    sh(machine, 'fallocate -l "$1" /root/pcs-fill && sync -f /root', str(size))


def unfill(machine: Machine) -> None:
    sh(machine, "rm -f /root/pcs-fill /home/pcs-unsynced && sync -f /root")


def test_unwritten_data_is_not_free(small: Sandbox) -> None:
    target = small["target"]
    commit(target)
    before, st_before = agent_free(target), statvfs_free(target)
    assert int(before["unwritten"]) < 5 * MiB, before
    sh(target, "head -c $((50*1024*1024)) /dev/urandom > /home/pcs-unsynced")  # no sync
    after, st_after = agent_free(target), statvfs_free(target)
    try:
        assert before["fs"] == after["fs"]
        assert len(str(after["fs"])) == 36, after  # the btrfs's UUID
        dropped = int(before["free"]) - int(after["free"])
        assert 48 * MiB <= dropped <= 60 * MiB, (before, after)
        assert int(after["unwritten"]) >= 48 * MiB, after
        assert abs(st_before - st_after) < 4 * MiB, (st_before, st_after)  # statvfs has not seen it
        commit(target)
        committed = agent_free(target)
        assert statvfs_free(target) <= st_before - 48 * MiB  # now statvfs has
        assert abs(int(committed["free"]) - int(after["free"])) < 8 * MiB, (after, committed)
    finally:
        unfill(target)


# --------------------------------------------------------------------------------------------------
# the preflight estimate


def space_config() -> dict[str, Any]:
    config = folder_config([{"source": "/home/data"}])
    config["disk"] = {
        "preflight_minimum": "50MB",
        "warning_threshold": "90MB",
        "runtime_minimum": "80MB",
        "interval": 0.5,
        "paths": {"source": ["/home"], "target": ["/home"]},
    }
    return config


def make_source(source: Machine, mib: int) -> None:
    sh(
        source,
        'rm -rf /home/data && mkdir -p /home/data && for i in $(seq 1 "$1"); do '
        "head -c $((1024*1024)) /dev/urandom > /home/data/f$i; done && sync -f /home",
        str(mib),
    )


def make_target(target: Machine) -> dict[str, Any]:
    sh(
        target,
        "rm -rf /home/data && mkdir -p /home/data/keep && head -c 3000000 /dev/urandom > /home/data/keep/old "
        "&& echo precious > /home/data/keep/note && sync -f /home",
    )
    return manifest(target, "/home/data")


@pytest.mark.parametrize("attempt", [1, 2])
def test_a_sync_that_would_cross_runtime_minimum_is_refused(small: Sandbox, attempt: int) -> None:
    source, target = small["source"], small["target"]
    make_source(source, 100)
    before = make_target(target)
    fill_to(target, 116 * MiB)
    try:
        write_config(source, space_config())
        free = int(agent_free(target)["free"])
        res = run_sync(small)
        output = res.stdout + res.stderr
        assert res.returncode == 1, output
        assert "not enough space on target" in output, output
        assert "/home/data/" in output, output
        assert "80MB" in output, output
        assert "disk.runtime_minimum" in output, output
        assert "Traceback" not in output
        assert manifest(target, "/home/data") == before  # nothing changed
        assert int(agent_free(target)["free"]) >= free - 2 * MiB
        assert not leftovers(small)
    finally:
        unfill(target)


def test_a_sync_that_fits_runs(small: Sandbox) -> None:
    source, target = small["source"], small["target"]
    make_source(source, 20)
    make_target(target)
    fill_to(target, 116 * MiB)
    try:
        write_config(source, space_config())
        res = run_sync(small)
        assert res.returncode == 0, res.stdout + res.stderr
        assert manifest(target, "/home/data") == manifest(source, "/home/data")
    finally:
        unfill(target)


def test_the_estimate_needs_no_dry_run_when_the_source_filesystem_fits(small: Sandbox) -> None:
    """The no-op path: the used space of the source's filesystem fits on the target, so no rsync
    --dry-run runs (the log has the DEBUG line of the cheap bound, not the INFO of the measure)."""
    source, target = small["source"], small["target"]
    make_source(source, 5)
    make_target(target)
    write_config(source, space_config())
    res = run_sync(small)
    assert res.returncode == 0, res.stdout + res.stderr
    log = "\n".join(json.dumps(r) for r in log_records(source))
    assert "room enough" in log
    assert "measuring what the sync would write" not in log


# --------------------------------------------------------------------------------------------------
# the run-time guard


def test_unwritten_data_of_another_writer_aborts_the_run(small: Sandbox) -> None:
    source, target = small["source"], small["target"]
    config = dummy_config(1, 90)
    config["disk"] = {
        "preflight_minimum": "100MB",
        "warning_threshold": "90MB",
        "runtime_minimum": "80MB",
        "interval": 0.5,
        "paths": {"source": ["/home"], "target": ["/home"]},
    }
    write_config(source, config)
    fill_to(target, 150 * MiB)
    try:
        st_before = statvfs_free(target)
        run = ObservedSync.start(small)
        run.wait_task("Work on the target")
        # 100 MiB, not synced: statvfs does not move before the next commit (commit=300)
        before = agent_free(target)
        sh(target, "head -c $((100*1024*1024)) /dev/urandom > /home/pcs-unsynced")
        after = agent_free(target)
        assert int(after["free"]) < 80_000_000, (before, after)
        # the guard aborts within a ping or two; the rest is the abort path, slow on a loaded
        # machine. Without the abort the job would end by itself after 90 s, with exit 0.
        rc = run.wait(timeout=150)
        assert rc == 1, f"{before} {after} {agent_free(target)} {statvfs_free(target)}\n{run.output()}"
        critical = [m for m in run.messages("CRITICAL") if "runtime_minimum" in m]
        assert critical, run.output()
        assert "80MB" in critical[0], critical
        assert abs(statvfs_free(target) - st_before) < 8 * MiB  # statvfs alone would not have seen it
        assert run.job_status().get("dummy_success") != "ok", run.job_status()
        assert not leftovers(small)
    finally:
        unfill(target)
