"""What the next sync removes of a killed run's directory (agent.remove_stale_run_dirs): only what
it can vouch for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pcswitcher.remote import agent
from pcswitcher.remote.agent import TAG, remove_stale_run_dirs
from tests import needs

OLD = "20261127T235000Z-3f9a"
NOW = "20261128T000000Z-aaaa"


def _run_dir(parent: Path, run_id: str) -> Path:
    path = parent / f"pcswitcher-{run_id}"
    (path / "tmp").mkdir(parents=True)
    (path / "progress.jsonl").write_text("{}\n")
    return path


def test_a_dead_runs_directory_goes_the_current_one_stays(tmp_path: Path) -> None:
    old = _run_dir(tmp_path, OLD)
    now = _run_dir(tmp_path, NOW)
    assert remove_stale_run_dirs(NOW, str(tmp_path)) == [str(old)]
    assert not old.exists()
    assert now.is_dir()
    assert remove_stale_run_dirs(NOW, str(tmp_path)) == []


def test_a_run_with_a_live_process_is_left_alone(tmp_path: Path) -> None:
    live = _run_dir(tmp_path, OLD)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        env={**os.environ, TAG: OLD},
    )
    try:
        assert remove_stale_run_dirs(NOW, str(tmp_path)) == []
        assert live.is_dir()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
    assert remove_stale_run_dirs(NOW, str(tmp_path)) == [str(live)]


@pytest.mark.parametrize(
    "name",
    [
        "pcswitcher-manual",
        "pcswitcher-20261127T235000Z-3f9a\nx",
        "pcswitcher-20261127T235000Z-3F9A",
        "pcswitcher-20261127T235000Z-3f9a.bak",
        "-pcswitcher-20261127T235000Z-3f9a",
        "pcswitcher-2026112T235000Z-3f9a",
        "ansible-local-12345",
    ],
)
def test_only_names_of_run_ids_are_candidates(tmp_path: Path, name: str) -> None:
    (tmp_path / name).mkdir()
    assert remove_stale_run_dirs(NOW, str(tmp_path)) == []
    assert (tmp_path / name).is_dir()


def test_a_symlink_named_like_a_run_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data").write_text("keep")
    (tmp_path / f"pcswitcher-{OLD}").symlink_to(victim)
    (tmp_path / "pcswitcher-20261127T235000Z-0000").write_text("a file, not a run's directory")
    assert remove_stale_run_dirs(NOW, str(tmp_path)) == []
    assert (victim / "data").read_text() == "keep"
    assert (tmp_path / "pcswitcher-20261127T235000Z-0000").is_file()


def test_nothing_below_a_stale_directory_is_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data").write_text("keep")
    old = _run_dir(tmp_path, OLD)
    (old / "tmp" / "link").symlink_to(victim)
    assert remove_stale_run_dirs(NOW, str(tmp_path)) == [str(old)]
    assert (victim / "data").read_text() == "keep"


def test_another_users_run_directory_is_left_alone(tmp_path: Path) -> None:
    needs.root("to give a directory to another user")
    theirs = _run_dir(tmp_path, OLD)
    os.chown(theirs, 65534, 65534)
    assert remove_stale_run_dirs(NOW, str(tmp_path)) == []
    assert theirs.is_dir()


def test_a_missing_parent_is_nothing_to_do(tmp_path: Path) -> None:
    assert remove_stale_run_dirs(NOW, str(tmp_path / "nope")) == []


@pytest.mark.parametrize("text", ["20261203T000000Z-abcd\n", "a\nb", "", "-x", ".x", "a/b", "x" * 65])
def test_a_run_id_is_one_plain_word(text: str) -> None:
    """Run ids and async job ids name files and directories (run dir, async status files): a trailing
    newline, a path separator or a leading dash never passes (``$`` would accept ``id\\n``)."""
    assert agent.RUN_ID_RE.match(text) is None
    assert agent.RUN_ID_RE.match("20261203T000000Z-abcd") is not None
