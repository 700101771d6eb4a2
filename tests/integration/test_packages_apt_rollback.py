"""``pc-switcher rollback`` after a packages sync gives the target back its previous package set
(issue 15, "Abort and rollback"), on root machines (their ``/`` is the btrfs subvolume ``rootfs``).

The target's ``/`` is in ``snapshots.subvolumes.target``: the sync takes a read-only pre-sync snapshot
of it before the job changes anything. The rollback (docs/safety.md#rollback) first keeps the
current ``/`` as a ``rollback-replaced`` snapshot, then copies the pre-sync snapshot back into the
live ``/`` with ``rsync -aHAX --delete --one-file-system`` — in place, on the running machine: no
remount and no restart is needed for dpkg's database and ``/etc/apt`` to be read back as they were
(other mounts below ``/``, such as ``/proc``, ``/run``, ``/home``, ``/root`` and the read-only
``/srv/pcs-apt``, are left alone). A real workstation should still be rebooted after a rollback of
``/`` (running programs keep the replaced files open); the root machine has nothing that needs it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import needs
from tests.apt_repos import DEP_CHAIN, REMOVABLE, TestRepos, build_test_repos, installed_version
from tests.integration.helpers import PC_SWITCHER, run_sync, write_config
from tests.integration.test_packages_apt import JOB, apt, give_repos, ok, run
from tests.sandbox import Machine, Sandbox

LOCATION = "/run/pcs-btrfs/snapshots"  # the top level of each machine's btrfs: outside its subvolumes


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    """Root machines without Debian's sources (offline apt), both with the test repositories; the
    source has pcs-a (pcs-b, pcs-c as dependencies), the target pcs-removable."""
    needs.tools(needs.ROOT_MACHINE_TOOLS)
    repos: TestRepos = build_test_repos()
    with Sandbox() as sandbox:
        for name in ("source", "target"):
            machine = sandbox.add(name, root=True, ro_binds={"/srv/pcs-apt": repos.dir})
            run(machine, "rm", "-f", "/etc/apt/sources.list")
            run(machine, "find", "/etc/apt/sources.list.d", "-mindepth", "1", "-delete")
            give_repos(machine, repos.files)
        apt(sandbox["source"], "install", DEP_CHAIN[0])
        apt(sandbox["target"], "install", REMOVABLE)
        yield sandbox


def config() -> dict[str, Any]:
    return {
        "jobs": {JOB: True},
        "snapshots": {
            "enabled": True,
            "subvolumes": {"source": ["/home"], "target": ["/"]},
            "location": {"source": LOCATION, "target": LOCATION},
        },
    }


def package_state(machine: Machine) -> dict[str, str]:
    """``dpkg -l``, apt's auto marks and every file under /etc/apt (by content; a symlink by its
    target), as the test compares them before and after."""
    found = {
        "dpkg -l": run(machine, "dpkg", "-l"),
        "apt-mark showmanual": run(machine, "apt-mark", "showmanual"),
    }
    base = machine.path("/etc/apt")
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            host = Path(dirpath, name)
            inside = "/etc/apt" + str(host)[len(str(base)) :]
            found[inside] = (
                "-> " + os.readlink(host)
                if host.is_symlink()
                else hashlib.sha256(host.read_bytes()).hexdigest()
            )
    return found


def test_rollback_gives_back_the_previous_package_set(sb: Sandbox) -> None:
    source, target = sb["source"], sb["target"]
    write_config(source, config())
    before = package_state(target)
    assert installed_version(target.path("/"), REMOVABLE) == "1.0"
    ok(run_sync(sb, "--only", JOB, timeout=600))
    # the sync installed and removed
    assert installed_version(target.path("/"), DEP_CHAIN[0]) == "1.0"
    assert installed_version(target.path("/"), REMOVABLE) is None
    after_sync = package_state(target)
    assert after_sync["dpkg -l"] != before["dpkg -l"]
    res = source.run([PC_SWITCHER, "rollback", "target", "-i", str(sb.inventory_path), "--yes"], timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert package_state(target) == before
    assert installed_version(target.path("/"), DEP_CHAIN[0]) is None
    assert installed_version(target.path("/"), REMOVABLE) == "1.0"
    # the rolled-back machine works: apt and dpkg agree with the files, a sync converges it again
    assert run(target, "dpkg", "--audit") == ""
    apt(target, "check")
    ok(run_sync(sb, "--only", JOB, timeout=600))
    assert package_state(target) == after_sync
