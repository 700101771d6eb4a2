"""A rollback leaves the file systems mounted below a rolled-back subvolume alone
(``pcs_btrfs.nested_mounts`` excluded in ``pcs_btrfs.rsync_argv``): rsync's ``--one-file-system`` keeps
it from reading them in the snapshot, not from writing into their mount points on the live side."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.role_files import load_role_file


@pytest.fixture(scope="module")
def pcs_btrfs() -> ModuleType:
    return load_role_file("btrfs_snapshots/library/pcs_btrfs.py")


def test_mount_points_are_this_machines_decoded(pcs_btrfs: ModuleType) -> None:
    points = pcs_btrfs.nested_mounts()
    assert "/" not in points
    assert "/proc" in points
    # each as it is mounted: a path that exists (octal escapes such as \040 decoded)
    assert all(Path(point).is_absolute() for point in points)
    assert "\\040" not in " ".join(points)


def test_mounts_below_the_subvolume_are_excluded_others_not(pcs_btrfs: ModuleType) -> None:
    mounts = ["/", "/proc", "/home", "/srv/pcs apt", "/run/pcs-btrfs", "/homeless"]
    argv = pcs_btrfs.rsync_argv("/snap/x", "/home", "/home", mounts, True, False)
    assert not [a for a in argv if a.startswith("--exclude")]
    argv = pcs_btrfs.rsync_argv("/snap/rootfs", "/", "/", mounts, True, False)
    assert [a for a in argv if a.startswith("--exclude")] == [
        "--exclude=/proc",
        "--exclude=/home",
        "--exclude=/srv/pcs apt",
        "--exclude=/run/pcs-btrfs",
        "--exclude=/homeless",
    ]
    assert argv[-2:] == ["/snap/rootfs/", "/"]
