"""A rollback leaves the file systems mounted below a rolled-back subvolume alone
(``pcs_btrfs.nested_mounts`` excluded in ``pcs_btrfs.rsync_argv``): rsync's ``--one-file-system`` keeps
it from reading them in the snapshot, not from writing into their mount points on the live side."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests import needs
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


# --- the rollback's refusals and failures, each one line that names what to do ------------------


def _session(sid: str, *phases: str) -> dict[str, object]:
    return {"id": sid, "snapshots": [{"phase": phase} for phase in phases]}


def test_the_session_rolled_back_to(pcs_btrfs: ModuleType) -> None:
    sessions = [_session("s1", "pre", "post"), _session("s2", "rollback-replaced"), _session("s3", "post")]
    assert pcs_btrfs._chosen_session(sessions, "", "/snaps")["id"] == "s1"  # the newest with pre
    assert pcs_btrfs._chosen_session(sessions, "s2", "/snaps")["id"] == "s2"
    with pytest.raises(
        pcs_btrfs.SnapshotProblem, match=r"^no session s9 in /snaps \(newest: s1, s2, s3\); see"
    ):
        pcs_btrfs._chosen_session(sessions, "s9", "/snaps")
    with pytest.raises(
        pcs_btrfs.SnapshotProblem, match=r"^no pre-sync snapshot in /snaps on .*: nothing to roll"
    ):
        pcs_btrfs._chosen_session(sessions[1:], "", "/snaps")


def _item(tmp_path: Path) -> dict[str, str]:
    live = tmp_path / "live"
    live.mkdir()
    (live / "file").write_text("now\n")
    return {"subvolume": "live", "mount": str(live), "snapshot": str(tmp_path / "gone"), "replaced": ""}


def test_a_copy_back_that_fails_says_how_far_it_got_and_how_to_undo(
    pcs_btrfs: ModuleType, tmp_path: Path
) -> None:
    """Real rsync from a snapshot that is not there: the preview and the copy fail, each one line."""
    items = [_item(tmp_path)]
    with pytest.raises(
        pcs_btrfs.SnapshotProblem, match=r"^rsync preview of .*/live failed: rsync error: .*\(code 23\)"
    ):
        pcs_btrfs._copy_back(items, [], True, "new1", dry=True)
    with pytest.raises(pcs_btrfs.SnapshotProblem) as failed:
        pcs_btrfs._copy_back(items, [], True, "new1", dry=False)
    assert str(failed.value).endswith("after 0 of 1 subvolume(s); undo with --session new1")
    assert "\n" not in str(failed.value)
    assert (tmp_path / "live" / "file").read_text() == "now\n"  # nothing was copied


def test_the_live_state_not_kept_means_nothing_rolled_back(pcs_btrfs: ModuleType, tmp_path: Path) -> None:
    """Real `btrfs subvolume snapshot` of a directory that is no subvolume (this ext4 tmp dir)."""
    needs.tool("btrfs", "btrfs-progs")
    item = _item(tmp_path)
    item["replaced"] = str(tmp_path / "snaps" / "new1" / "live@new1-rollback-replaced")
    with pytest.raises(pcs_btrfs.SnapshotProblem) as failed:
        pcs_btrfs._keep_current([item], str(tmp_path / "snaps"), "new1", "s1")
    assert str(failed.value).startswith(f"cannot keep the current state of {item['mount']}: ")
    assert str(failed.value).endswith("; nothing was rolled back")
    meta = json.loads((tmp_path / "snaps" / "new1" / "pc-switcher-session.json").read_text())
    assert (meta["kind"], meta["rolled_back_to"], meta["subvolumes"]) == (
        "rollback",
        "s1",
        {"live": item["mount"]},
    )
