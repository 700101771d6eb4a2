"""The sweep removes the temporary file a killed rsync receiver was writing (rsync's signal handler
sleeps 0.4 s before it cleans up, longer than the sweep's grace, so without this an interrupted
sync left a ``.NAME.XXXXXX`` of any size on the target: for good when ``delete`` is off). Only such
a file: open for writing by an rsync of the run, still the same inode in the same directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pcswitcher.remote import agent
from tests.waiting import wait_for

RUN_ID = "20200101T000000Z-7e01"  # this test's own: the sweep kills by it


def test_the_sweep_removes_what_the_killed_receiver_was_writing_and_nothing_else(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    # the source's file is named like a temporary file: the sender reads it (read-only), never removed
    (src / ".data.AbC123").write_bytes(os.urandom(20 << 20))
    (dst / ".kept.QwErTy").write_text("not rsync's: nobody has it open\n")
    env = {**os.environ, agent.TAG: RUN_ID}
    proc = subprocess.Popen(
        ["rsync", "-a", "--bwlimit=1m", f"{src}/", f"{dst}/"], env=env, start_new_session=True
    )
    try:

        def receiving() -> list[Path]:
            # rsync adds no second dot to a name that starts with one: ".data.AbC123.XXXXXX"
            return [p for p in dst.iterdir() if p.name.startswith(".data.AbC123.") and p.stat().st_size > 0]

        assert wait_for(lambda: bool(receiving()), 20), "rsync wrote no temporary file"
        (temp,) = receiving()
        report = agent.sweep(RUN_ID)
        assert report["remaining"] == []
        assert sorted(p.name for p in dst.iterdir()) == [".kept.QwErTy"]
        assert report["temps_removed"] == [str(temp)]
        assert (src / ".data.AbC123").stat().st_size == 20 << 20
        assert proc.wait(timeout=10) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_rsync_that_writes_into_the_real_files_is_left_alone(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / ".zshrc.backup").write_bytes(os.urandom(20 << 20))  # a real file named like a temporary one
    env = {**os.environ, agent.TAG: RUN_ID}
    proc = subprocess.Popen(
        ["rsync", "-a", "--inplace", "--bwlimit=1m", f"{src}/", f"{dst}/"], env=env, start_new_session=True
    )
    try:
        written = dst / ".zshrc.backup"
        assert wait_for(lambda: written.exists() and written.stat().st_size > 0, 20)
        report = agent.sweep(RUN_ID)
        assert report["remaining"] == []
        assert report["temps_removed"] == []
        assert (dst / ".zshrc.backup").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _temp(path: Path) -> agent.Temp:
    st, parent = path.stat(), path.parent.stat()
    return ((st.st_dev, st.st_ino), str(path), (parent.st_dev, parent.st_ino))


def test_a_name_that_is_no_longer_that_file_in_that_directory_is_left(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    names = ["plain", "recreated", "linked", "dir_moved", "dir_swapped_for_a_link"]
    temps = {}
    for name in names:
        sub = d / name
        sub.mkdir()
        (sub / ".f.AbC123").write_text("x")
        temps[name] = _temp(sub / ".f.AbC123")
    # another file under the same name (made while the first exists: another inode)
    (d / "recreated" / "new").write_text("y")
    os.replace(d / "recreated" / "new", d / "recreated" / ".f.AbC123")
    # a second link to the file (rsync's temporary file has one)
    os.link(d / "linked" / ".f.AbC123", d / "linked" / "other")
    # the directory moved away and another made in its place, holding the same file
    (d / "dir_moved").rename(d / "moved")
    (d / "dir_moved").mkdir()
    os.link(d / "moved" / ".f.AbC123", d / "dir_moved" / ".f.AbC123")
    (d / "moved" / ".f.AbC123").unlink()  # one link again, in another directory than the one recorded
    # the directory replaced by a symlink to the directory that holds the file
    (d / "dir_swapped_for_a_link").rename(d / "real")
    (d / "dir_swapped_for_a_link").symlink_to(d / "real")

    removed = agent.remove_temps(list(temps.values()))
    assert removed == [str(d / "plain" / ".f.AbC123")]
    assert not (d / "plain" / ".f.AbC123").exists()
    for left in ("recreated", "linked", "dir_moved", "real"):
        assert (d / left / ".f.AbC123").exists(), left
