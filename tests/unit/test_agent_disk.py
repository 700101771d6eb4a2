"""The agent's disk figures: a btrfs is recognised from ``statvfs().f_fsid`` (the kernel folds the
filesystem's UUID and the subvolume id into it), and its data written but not yet committed is taken
off the free figure. A fake ``/sys/fs/btrfs`` here; the real one is tested on a sandbox machine's
btrfs in tests/integration/test_disk_btrfs.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid as uuidlib
from pathlib import Path

import pytest

from pcswitcher.remote import agent

UUID = "161bb32c-666d-4f5c-9566-392a6cb9777c"
OTHER = "0f3e8a51-2b7c-4d9e-8f10-aa55aa55aa55"


def kernel_fsid(uuid: str, subvolume: int) -> int:
    """``statvfs().f_fsid`` of a path in subvolume ``subvolume`` of the btrfs ``uuid``, as Linux
    computes it (fs/btrfs/super.c) and glibc packs it (val[1] << 32 | val[0])."""
    raw = uuidlib.UUID(uuid).bytes
    w = [int.from_bytes(raw[i : i + 4], "big") for i in range(0, 16, 4)]
    val0 = w[0] ^ w[2] ^ (subvolume >> 32)
    val1 = (w[1] ^ w[3] ^ subvolume) & 0xFFFFFFFF
    return val1 << 32 | val0


def fake_sysfs(tmp_path: Path, figures: dict[str, dict[str, str]]) -> str:
    for uuid, files in figures.items():
        (tmp_path / uuid).mkdir(parents=True, exist_ok=True)
        for kind_name, value in files.items():
            kind, name = kind_name.split("/")
            directory = tmp_path / uuid / "allocation" / kind
            directory.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(value + "\n")
    (tmp_path / "features").mkdir()  # /sys/fs/btrfs/features: not a filesystem
    return str(tmp_path)


@pytest.mark.parametrize("subvolume", [5, 256, 257, 70000])
def test_a_btrfs_is_found_from_any_subvolume(tmp_path: Path, subvolume: int) -> None:
    sysfs = fake_sysfs(tmp_path, {UUID: {}, OTHER: {}})
    assert agent.btrfs_filesystem(kernel_fsid(UUID, subvolume), sysfs) == UUID
    assert agent.btrfs_filesystem(kernel_fsid(OTHER, subvolume), sysfs) == OTHER


def test_a_c_library_that_keeps_only_the_low_half(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path, {UUID: {}})
    assert agent.btrfs_filesystem(kernel_fsid(UUID, 256) & 0xFFFFFFFF, sysfs) == UUID


def test_not_btrfs(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path, {UUID: {}})
    fsid = kernel_fsid(UUID, 256)
    assert agent.btrfs_filesystem(fsid ^ 1 << 7, sysfs) == ""  # the low half differs
    assert agent.btrfs_filesystem(fsid ^ (256 ^ 7) << 32, sysfs) == ""  # subvolume id 7: none has it
    assert agent.btrfs_filesystem(fsid, str(tmp_path / "missing")) == ""  # no btrfs sysfs at all
    # the real statvfs of a filesystem that is no btrfs of the fake sysfs
    assert agent.btrfs_filesystem(os.statvfs("/proc").f_fsid, sysfs) == ""


def test_unwritten_data_counts_may_use_and_reserved(tmp_path: Path) -> None:
    sysfs = fake_sysfs(
        tmp_path,
        {
            UUID: {
                "data/bytes_may_use": "52428800",
                "data/bytes_reserved": "1048576",
                "metadata/bytes_may_use": "9",
            },
            OTHER: {"mixed/bytes_may_use": "7", "mixed/bytes_reserved": "3"},
        },
    )
    assert agent.btrfs_unwritten(UUID, sysfs) == 52428800 + 1048576  # metadata is not data
    assert agent.btrfs_unwritten(OTHER, sysfs) == 10  # mixed block groups
    assert agent.btrfs_unwritten("00000000-0000-0000-0000-000000000000", sysfs) == 0


def test_unreadable_figures_count_nothing(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path, {UUID: {"data/bytes_may_use": "garbage", "data/bytes_reserved": "1"}})
    assert agent.btrfs_unwritten(UUID, sysfs) == 0


def test_disk_figures_take_unwritten_data_off_free(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st = os.statvfs(tmp_path)
    real_statvfs = os.statvfs
    # the host's free space moves while other programs write: the figure is checked against the
    # same statvfs result the agent computed it from
    monkeypatch.setattr(os, "statvfs", lambda p: st if str(p).startswith(str(tmp_path)) else real_statvfs(p))
    monkeypatch.setattr(agent, "btrfs_filesystem", lambda fsid: UUID if fsid == st.f_fsid else "")
    monkeypatch.setattr(agent, "btrfs_unwritten", lambda uuid: 4096 if uuid == UUID else 0)
    figures = agent.disk_figures([str(tmp_path), str(tmp_path / "not" / "yet"), "/proc"])
    assert len(figures) == 1  # one filesystem, measured once; /proc is a pseudo filesystem
    (figure,) = figures
    assert figure["fs"] == UUID
    assert figure["unwritten"] == 4096
    assert int(str(figure["free"])) == st.f_bavail * st.f_frsize - 4096


def test_disk_command_prints_the_figures(tmp_path: Path) -> None:
    odd = tmp_path / "-odd name $(x)\tq'"
    odd.mkdir()
    res = subprocess.run(
        [sys.executable, agent.__file__, "disk", "--", str(odd), str(odd / "missing")],
        capture_output=True,
        text=True,
        check=True,
    )
    reply = json.loads(res.stdout)
    assert reply["t"] == "disk"
    first, second = reply["disk"]  # one per path, the same filesystem twice
    assert first["path"] == str(odd)
    assert second["path"] == str(odd / "missing")
    assert first["fs"] == second["fs"]
    assert str(first["fs"])
    assert int(first["free"]) <= int(first["total"])
