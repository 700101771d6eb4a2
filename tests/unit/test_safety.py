"""pcswitcher.run.safety without machines: the history rules and policy, failure text, the config sections."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from pcswitcher.config.settings import HistoryConfig, SnapshotsConfig, load_config
from pcswitcher.config.units import parse_duration
from pcswitcher.errors import ConfigError, ExitCode
from pcswitcher.jobs.runner import PlaybookResult
from pcswitcher.remote.agent import RUN_DIR_NAME_RE, RUN_ID_FORMAT, new_run_id
from pcswitcher.run.safety import (
    FIRST_SYNC_FLAG,
    OUT_OF_ORDER_FLAG,
    HistoryRefused,
    HistoryWarning,
    MachineHistory,
    Safety,
    SafetyError,
    confirm_history,
    evaluate_history,
    failure_text,
)
from pcswitcher.run.ui import Ui


def hist(host: str, role: str | None = None, peer: str | None = None, problem: str = "") -> MachineHistory:
    last = None if role is None else {"role": role, "peer": peer, "session": "s1", "time": "t"}
    return MachineHistory(host=host, path="/h", last=last, problem=problem)


def kinds(warnings: list[HistoryWarning]) -> list[str]:
    return [w.kind for w in warnings]


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        (hist("a"), hist("b"), ["first_sync"]),
        (hist("a", "target", "b"), hist("b", "source", "a"), []),  # b pushed to a last: a pushes back
        (hist("a", "source", "b"), hist("b", "target", "a"), ["repeat_push"]),
        (hist("a"), hist("b", "target", "c"), ["other_peer"]),
        (hist("a", "source", "b"), hist("b", "source", "c"), ["other_peer", "repeat_push"]),
        (hist("a"), hist("b", problem="history file /h on b is unreadable"), ["unreadable"]),
        (hist("a", problem="bad"), hist("b", "source", "a"), []),
    ],
)
def test_evaluate_history(source: MachineHistory, target: MachineHistory, expected: list[str]) -> None:
    assert kinds(evaluate_history(source, target)) == expected


def test_warning_flags() -> None:
    first = evaluate_history(hist("a"), hist("b"))[0]
    assert first.flag == FIRST_SYNC_FLAG
    assert "b has never been synced" in first.message
    other = evaluate_history(hist("a"), hist("b", "target", "c"))[0]
    assert other.flag == OUT_OF_ORDER_FLAG
    assert "b last synced with c" in other.message


class FakeUi(Ui):
    def __init__(self, interactive: bool, answers: list[bool]) -> None:
        super().__init__(interactive=interactive)
        self.answers = answers
        self.questions: list[str] = []

    def confirm(self, question: str, assume_yes: bool) -> bool:
        self.questions.append(question)
        return self.answers.pop(0)


FIRST = HistoryWarning("first_sync", "b has never been synced", FIRST_SYNC_FLAG)
ORDER = HistoryWarning("repeat_push", "a already pushed to b", OUT_OF_ORDER_FLAG)


def policy(ui: Ui, **kw: Any) -> None:
    options = {"dry_run": False, "allow_first_sync": False, "allow_out_of_order": False, **kw}
    confirm_history([FIRST, ORDER], ui, **options)


def test_non_interactive_refuses_and_names_the_flag() -> None:
    with pytest.raises(HistoryRefused) as info:
        policy(FakeUi(False, []))
    assert info.value.exit_code == ExitCode.USAGE
    assert info.value.hint == "pass --allow-first-sync to sync anyway"
    with pytest.raises(HistoryRefused) as info:
        policy(FakeUi(False, []), allow_first_sync=True)
    assert info.value.hint == "pass --allow-out-of-order to sync anyway"
    policy(FakeUi(False, []), allow_first_sync=True, allow_out_of_order=True)


def test_dry_run_logs_and_continues(caplog: pytest.LogCaptureFixture) -> None:
    ui = FakeUi(False, [])
    policy(ui, dry_run=True)
    assert ui.questions == []
    assert "b has never been synced (dry-run: continuing)" in caplog.text


def test_interactive_asks_each_warning() -> None:
    ui = FakeUi(True, [True, True])
    policy(ui)
    assert len(ui.questions) == 2
    ui = FakeUi(True, [True, False])
    with pytest.raises(HistoryRefused, match="sync cancelled: a already pushed to b"):
        policy(ui)
    ui = FakeUi(True, [True])
    policy(ui, allow_out_of_order=True)
    assert len(ui.questions) == 1


def test_failure_text() -> None:
    result = PlaybookResult(
        "failed", 2, 1.0, failures=["Snapshot check on target: /x does not exist on target"]
    )
    assert failure_text(result, "check") == "/x does not exist on target"
    assert failure_text(None, "the check") == "the check was aborted"
    assert failure_text(PlaybookResult("failed", 4, 1.0), "x") == "x failed (failed, exit code 4)"


def test_new_run_id_format() -> None:
    """A session id is a run id: the run and state directories' names (paths, agent) match it."""
    run_id = new_run_id()
    assert len(run_id) == len("20261127T235000Z-3f9a")
    assert RUN_DIR_NAME_RE.match(f"pcswitcher-{run_id}")
    assert re.fullmatch(RUN_ID_FORMAT, run_id)


def fake_safety(result: PlaybookResult | None, calls: list[tuple[str, dict[str, Any], bool]]) -> Safety:
    def play(playbook: Path, ident: str, extravars: dict[str, Any], check: bool) -> PlaybookResult | None:
        calls.append((playbook.name, extravars, check))
        return result

    return Safety(Path("/p"), SnapshotsConfig(), HistoryConfig(), "S1", play, dry_run=True)


def test_safety_dry_run_snapshot_runs_in_check_mode_and_never_records() -> None:
    calls: list[tuple[str, dict[str, Any], bool]] = []
    ok = PlaybookResult("successful", 0, 1.0, set_stats={"btrfs_snapshots_result": {"target": {}}})
    safety = fake_safety(ok, calls)
    safety.snapshot("pre")
    safety.record_history()
    assert len(calls) == 1
    name, extravars, check = calls[0]
    assert name == "snapshots.yml"
    assert check is True
    assert extravars["btrfs_snapshots_action"] == "pre"
    assert extravars["btrfs_snapshots_session"] == "S1"
    assert extravars["btrfs_snapshots_location"] == "/.snapshots/pc-switcher"


def test_safety_snapshot_phase_logs_its_time(caplog: pytest.LogCaptureFixture) -> None:
    ok = PlaybookResult("successful", 0, 1.0, set_stats={"btrfs_snapshots_result": {"target": {}}})
    with caplog.at_level(logging.INFO):
        fake_safety(ok, []).snapshot("post")
    timed = [r for r in caplog.records if "snapshot_phase_seconds" in getattr(r, "fields", {})]
    assert len(timed) == 1
    assert timed[0].fields["phase"] == "post"  # type: ignore[attr-defined]
    assert timed[0].fields["snapshot_phase_seconds"] >= 0  # type: ignore[attr-defined]


def test_safety_failure_is_one_line() -> None:
    failed = PlaybookResult("failed", 2, 1.0, failures=["Snapshot check on t: a; b"])
    with pytest.raises(SafetyError, match=r"^snapshot check failed: a; b$"):
        fake_safety(failed, []).validate()


# -- the config sections ------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "jobs: {}\n"), {})
    assert config.snapshots == SnapshotsConfig()
    assert config.snapshots.target_subvolumes == ("/home",)
    assert config.snapshots.prune is True
    assert config.history.path == "/root/.local/state/pc-switcher/history.json"


def test_sections(tmp_path: Path) -> None:
    text = (
        "jobs: {}\nsnapshots:\n  subvolumes:\n    target: [/, /home]\n  location:\n    source: /s\n"
        "  keep: 3\n  older_than: 2w\n  prune: false\nhistory:\n  path: /var/lib/pcs/h.json\n"
    )
    config = load_config(write(tmp_path, text), {})
    assert config.snapshots.target_subvolumes == ("/", "/home")
    assert config.snapshots.source_subvolumes == ("/home",)
    assert config.snapshots.source_location == "/s"
    assert config.snapshots.keep == 3
    assert config.snapshots.older_than == 14 * 86400
    assert config.snapshots.prune is False
    assert config.history.path == "/var/lib/pcs/h.json"
    empty = load_config(write(tmp_path, "jobs: {}\nsnapshots:\nhistory:\n"), {})
    assert empty.snapshots == SnapshotsConfig()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("snapshots:\n  older_than: 7 days\n", "4:15: snapshots.older_than: '7 days' is not a duration"),
        ("snapshots:\n  keep: 0\n", "4:9: snapshots.keep"),
        ("snapshots:\n  prune: yes please\n", "4:10: snapshots.prune"),
        ("snapshots:\n  location:\n    target: rel\n", "5:13: snapshots.location.target"),
        ("snapshots:\n  subvolumes:\n    source: []\n", "5:13: snapshots.subvolumes.source"),
        ("history:\n  path: ~/h.json\n", "4:9: history.path"),
    ],
)
def test_section_errors(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "jobs: {}\n\n" + text), {})
    assert problem in info.value.message


def test_parse_duration() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration(" 12h") == 12 * 3600
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("7")
