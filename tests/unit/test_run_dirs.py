"""``runs/`` keeps the run directories of the 20 newest runs (paths.prune_run_dirs): a sync, a
snapshot cleanup or a rollback prunes it when it starts; nothing else in the state dir is touched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pcswitcher import paths
from pcswitcher.run.cleanup import newest_run_id
from pcswitcher.run.logs import list_logs


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    return tmp_path / "pc-switcher"


def make_runs(state: Path, count: int) -> list[str]:
    names = [f"2026{1 + i // 28:02d}{1 + i % 28:02d}T120000Z-{i:04x}" for i in range(count)]
    for name in names:
        (state / "runs" / name / "01-job-sync").mkdir(parents=True)
        (state / "runs" / name / "jids").write_text("x\n")
    return names


def test_keeps_the_newest_and_the_current_run(state: Path) -> None:
    names = make_runs(state, 25)
    current = "20271231T235959Z-ffff"
    (state / "runs" / current).mkdir()
    removed = paths.prune_run_dirs(keep=20, spare=current)
    assert removed == names[:6]
    assert sorted(os.listdir(state / "runs")) == [*names[6:], current]


def test_the_current_run_is_kept_even_when_older(state: Path) -> None:
    names = make_runs(state, 5)
    assert paths.prune_run_dirs(keep=3, spare=names[0]) == names[1:3]
    assert sorted(os.listdir(state / "runs")) == [names[0], *names[3:]]


def test_only_run_directories_go(state: Path, tmp_path: Path) -> None:
    names = make_runs(state, 3)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me\n")
    runs = state / "runs"
    (runs / "20200101T000000Z-0000").symlink_to(victim)  # an old run's name, but a symlink
    (runs / "19990101T000000Z-aaaa.txt").write_text("a file\n")
    (runs / "mine").mkdir()  # not a run id
    (runs / "20200101T000000Z-ZZZZ").mkdir()  # not the id format (upper case)
    (state / "logs").mkdir()
    (state / "logs" / f"{names[0]}.jsonl").write_text("{}\n")
    assert paths.prune_run_dirs(keep=1) == names[:2]
    assert sorted(os.listdir(runs)) == sorted(
        ["20200101T000000Z-0000", "19990101T000000Z-aaaa.txt", "mine", "20200101T000000Z-ZZZZ", names[2]]
    )
    assert (victim / "precious").read_text() == "keep me\n"
    assert (state / "logs" / f"{names[0]}.jsonl").is_file()


def test_no_state_dir_creates_nothing(state: Path) -> None:
    assert paths.prune_run_dirs() == []
    assert not state.exists()


def test_runs_started_in_the_same_second_are_ordered_by_modification(state: Path) -> None:
    """The last part of a run id is random: two runs started in one second sort by their files'
    modification time, so the newest log, the newest run (``cleanup``'s default) and pruning agree."""
    runs, logs = state / "runs", state / "logs"
    older, newer = "20261203T184740Z-ffff", "20261203T184740Z-0000"  # newer sorts first by name
    for stamp_ns, name in ((1_000_000_000, older), (2_000_000_000, newer)):
        (runs / name).mkdir(parents=True)
        logs.mkdir(exist_ok=True)
        (logs / f"{name}.jsonl").write_text("{}\n")
        for path in (runs / name, logs / f"{name}.jsonl"):
            os.utime(path, ns=(stamp_ns, stamp_ns))
    assert [p.name for p in list_logs(logs)] == [f"{newer}.jsonl", f"{older}.jsonl"]
    assert newest_run_id() == newer
    assert paths.prune_run_dirs(keep=1) == [older]
    assert os.listdir(runs) == [newer]
