"""The terminal UI in both modes: a terminal (rich Live) and plain lines (pipe, file, CI)."""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from pcswitcher.jobs.summary import format_duration
from pcswitcher.run.logs import setup_logging, shutdown_logging
from pcswitcher.run.ui import Ui

STAMP = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def make_ui(terminal: bool, width: int = 120) -> tuple[Ui, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    ui = Ui(
        Console(file=out, force_terminal=terminal, width=width),
        err_console=Console(file=err, force_terminal=terminal, width=width),
    )
    return ui, out, err


def plain_text(buffer: io.StringIO) -> str:
    return ANSI.sub("", buffer.getvalue())


def render_frame(ui: Ui) -> str:
    """The current frame of the live display, as text."""
    buffer = io.StringIO()
    Console(file=buffer, width=120, force_terminal=False).print(ui._render())
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    yield
    shutdown_logging()


def test_interactive_defaults_to_console_is_terminal() -> None:
    assert make_ui(True)[0].interactive is True
    assert make_ui(False)[0].interactive is False
    assert Ui(Console(file=io.StringIO(), force_terminal=True), interactive=False).interactive is False


def test_plain_log_lines_format(tmp_path: Path) -> None:
    ui, out, _ = make_ui(False)
    log = setup_logging(tmp_path / "run.jsonl", "DEBUG", ui.log_handler(), "INFO")
    log.debug("not shown")
    log.info("copied 3 files", extra={"job": "dummy_success", "host": "target1"})
    log.warning("driver says", extra={"job": None})
    log.error("job only", extra={"job": "folder_sync"})
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert re.fullmatch(rf"{STAMP} INFO  \[dummy_success@target1\] copied 3 files", lines[0])
    assert re.fullmatch(rf"{STAMP} WARNING driver says", lines[1])
    assert re.fullmatch(rf"{STAMP} ERROR \[folder_sync\] job only", lines[2])
    assert "\x1b[" not in out.getvalue()


def test_plain_log_lines_are_redacted(tmp_path: Path) -> None:
    ui, out, _ = make_ui(False)
    log = setup_logging(tmp_path / "run.jsonl", "DEBUG", ui.log_handler(), "DEBUG")
    log.info("connecting with password=%s", "hunter2")
    assert "hunter2" not in out.getvalue()
    assert "password=***" in out.getvalue()


def test_plain_start_step_and_messages() -> None:
    ui, out, _ = make_ui(False)
    ui.start("target1", "20261127T235000Z-3f9a", ["dummy_success", "folder_sync"], dry_run=True)
    ui.step(2, 3, "dummy_success", "sync")
    ui.message("waiting for the lock")
    ui.job_finished("dummy_success", "failed", 75.0, "task X failed")
    ui.stop()
    lines = out.getvalue().splitlines()
    assert re.fullmatch(rf"{STAMP} pc-switcher -> target1  run 20261127T235000Z-3f9a  DRY-RUN", lines[0])
    assert lines[1].endswith("plan: dummy_success, folder_sync")
    assert re.fullmatch(rf"{STAMP} Step 2/3 dummy_success \(sync\)", lines[2])
    assert re.fullmatch(rf"{STAMP} waiting for the lock", lines[3])
    assert re.fullmatch(rf"{STAMP} dummy_success: failed \(1m15s\) — task X failed", lines[4])


def test_plain_progress_is_throttled() -> None:
    ui, out, _ = make_ui(False)
    ui.step(1, 1, "job", "sync")
    before = len(out.getvalue().splitlines())
    for percent in range(0, 101):
        ui.progress("job", "target1", percent, None)
    lines = out.getvalue().splitlines()[before:]
    shown = [int(re.search(r"(\d+)%", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert shown == [0, 25, 50, 75, 100]
    assert all("[job@target1]" in line for line in lines)


def test_plain_progress_prints_item_changes_not_repeats() -> None:
    ui, out, _ = make_ui(False)
    ui.step(1, 1, "job", "sync")
    before = len(out.getvalue().splitlines())
    ui.progress("job", "source", 10, "copying a")
    ui.progress("job", "source", 11, "copying a")
    ui.progress("job", "source", 12, "copying a")
    ui.progress("job", "source", 13, "copying b")
    ui.progress("job", "target1", None, "checking")
    ui.progress("job", "target1", None, "checking")
    lines = out.getvalue().splitlines()[before:]
    assert len(lines) == 3
    assert lines[0].endswith("[job@source] 10% copying a")
    assert lines[1].endswith("[job@source] 13% copying b")
    assert lines[2].endswith("[job@target1] 13% checking")


def test_plain_progress_throttle_resets_with_each_step() -> None:
    ui, out, _ = make_ui(False)
    ui.step(1, 2, "job", "validate")
    ui.progress("job", None, 50, None)
    ui.step(2, 2, "job", "sync")
    ui.progress("job", None, 50, None)
    assert sum("50%" in line for line in out.getvalue().splitlines()) == 2


@pytest.mark.parametrize("terminal", [True, False])
def test_summary_table_content(terminal: bool) -> None:
    ui, out, _ = make_ui(terminal)
    ui.start("target1", "run1", ["a", "b", "c"], dry_run=False)
    ui.summary(
        [
            ("dummy_success", "succeeded", 3.21, ""),
            ("folder_sync", "failed", 125.0, "rsync exited 23"),
            ("user_config", "not run", 0.0, ""),
        ],
        "sync failed: folder_sync failed",
    )
    ui.stop()
    text = plain_text(out)
    for expected in [
        "dummy_success",
        "succeeded",
        "3.2s",
        "folder_sync",
        "failed",
        "2m05s",
        "rsync exited 23",
        "user_config",
        "not run",
        "sync failed: folder_sync failed",
    ]:
        assert expected in text
    if terminal:
        assert "Job" in text
        assert "Status" in text
        assert "Duration" in text
    else:
        row = next(line for line in text.splitlines() if "folder_sync" in line and "rsync" in line)
        assert re.fullmatch(r"\s+folder_sync\s+failed\s+2m05s\s+rsync exited 23", row)
        assert text.splitlines()[-1] == "sync failed: folder_sync failed"


@pytest.mark.parametrize("terminal", [True, False])
def test_error_line_format(terminal: bool) -> None:
    ui, out, err = make_ui(terminal)
    ui.error("target 'pc2' is not in the inventory", hint="add it to ~/.config/pc-switcher/inventory.yml")
    ui.error("another sync holds the lock")
    assert plain_text(err).splitlines() == [
        "error: target 'pc2' is not in the inventory — add it to ~/.config/pc-switcher/inventory.yml",
        "error: another sync holds the lock",
    ]
    assert out.getvalue() == ""


def test_error_goes_to_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    ui = Ui(Console(file=io.StringIO(), force_terminal=False))
    ui.error("boom")
    assert capsys.readouterr().err == "error: boom\n"


def test_confirm_semantics(monkeypatch: pytest.MonkeyPatch) -> None:
    plain, _, _ = make_ui(False)
    assert plain.confirm("Sync now?", assume_yes=True) is True
    assert plain.confirm("Sync now?", assume_yes=False) is False  # no terminal to ask on

    terminal, out, _ = make_ui(True)
    assert terminal.confirm("Sync now?", assume_yes=True) is True
    for answer, expected in [
        ("y\n", True),
        ("YES\n", True),
        ("n\n", False),
        ("\n", False),
        ("maybe\n", False),
    ]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(answer))
        assert terminal.confirm("Sync now?", assume_yes=False) is expected
    assert "Sync now? [y/N]" in plain_text(out)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # EOF: no
    assert terminal.confirm("Sync now?", assume_yes=False) is False


def test_interactive_live_display(tmp_path: Path) -> None:
    ui, out, _ = make_ui(True)
    log = setup_logging(tmp_path / "run.jsonl", "DEBUG", ui.log_handler(), "INFO")
    ui.start("target1", "20261127T235000Z-3f9a", ["dummy_success"], dry_run=True)
    ui.step(1, 1, "dummy_success", "sync")
    ui.progress("dummy_success", "target1", 40, "copying photos")
    log.info("an info line", extra={"job": "dummy_success", "host": "target1"})
    log.warning("a warning line")
    frame = render_frame(ui)
    ui.stop()
    text = plain_text(out)
    assert "pc-switcher → target1" in frame
    assert "20261127T235000Z-3f9a" in frame
    assert "DRY-RUN" in frame
    assert "Step 1/1 dummy_success (sync)" in frame
    assert "40%" in frame
    assert "target1: copying photos" in frame
    assert "an info line" in frame
    assert "a warning line" in text  # printed permanently above the live region


def test_interactive_without_live_prints_records(tmp_path: Path) -> None:
    ui, out, _ = make_ui(True)
    log = setup_logging(tmp_path / "run.jsonl", "DEBUG", ui.log_handler(), "INFO")
    log.info("before start")
    assert "before start" in plain_text(out)


@pytest.mark.parametrize("terminal", [True, False])
def test_thread_safety_smoke(tmp_path: Path, terminal: bool) -> None:
    ui, out, _ = make_ui(terminal)
    log = setup_logging(tmp_path / "run.jsonl", "DEBUG", ui.log_handler(), "DEBUG")
    ui.start("target1", "run1", ["job"], dry_run=False)
    ui.step(1, 1, "job", "sync")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(100):
                log.log(
                    [logging.DEBUG, logging.INFO, logging.WARNING][i % 3],
                    "thread %d line %d",
                    n,
                    i,
                    extra={"job": "job", "host": f"h{n}"},
                )
                ui.progress("job", f"h{n}", float(i), f"item {i // 10}")
                if i % 25 == 0:
                    ui.message(f"thread {n} at {i}")
        except BaseException as exc:  # pragma: no cover - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    ui.stop()
    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    assert len((tmp_path / "run.jsonl").read_text().splitlines()) == 16 * 100
    if not terminal:
        records = [line for line in out.getvalue().splitlines() if " line " in line]
        assert len(records) == 16 * 100
        assert all(re.match(rf"{STAMP} (DEBUG|INFO |WARNING) \[job@h\d+\] thread", r) for r in records)


def test_stop_twice_and_before_start() -> None:
    ui, _, _ = make_ui(True)
    ui.stop()
    ui.start("t", "r", [], dry_run=False)
    ui.stop()
    ui.stop()
    plain, _, _ = make_ui(False)
    plain.stop()
    plain.stop()


class BrokenStream(io.StringIO):
    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("terminal", [True, False])
def test_output_never_raises(tmp_path: Path, terminal: bool) -> None:
    closed = io.StringIO()
    closed.close()
    for stream in (BrokenStream(), closed):
        ui = Ui(
            Console(file=stream, force_terminal=terminal),
            err_console=Console(file=stream, force_terminal=terminal),
        )
        log = setup_logging(tmp_path / "run.jsonl", "DEBUG", ui.log_handler(), "DEBUG")
        ui.start("t", "r", ["a"], dry_run=False)
        ui.step(1, 1, "a", "sync")
        ui.progress("a", None, 50, "x")
        log.warning("w")
        ui.message("m")
        ui.job_finished("a", "succeeded", 1.0)
        ui.summary([("a", "succeeded", 1.0, "")], "ok")
        ui.error("e", "h")
        ui.stop()


def test_format_duration() -> None:
    assert format_duration(0.42) == "0.4s"
    assert format_duration(59.94) == "59.9s"
    assert format_duration(125) == "2m05s"
    assert format_duration(3723) == "1h02m03s"
    assert format_duration(-1) == "0.0s"


@pytest.mark.parametrize("terminal", [True, False])
def test_no_progress_line_after_the_jobs_summary_line(terminal: bool) -> None:
    """A progress line that arrives late (relayed after the job's playbook ended) is not shown after
    the job's line: the job's progress ends with it, until the job's next step."""
    ui, out, _ = make_ui(terminal)
    ui.step(1, 1, "job", "sync")
    ui.progress("job", "target1", 50, "copying a")
    ui.job_finished("job", "succeeded", 1.5, "3 files (1.2 KiB) sent, 0 deleted")
    ui.progress("job", "target1", 75, "copying late")
    ui.stop()
    text = plain_text(out)
    assert "copying late" not in text
    assert "copying late" not in render_frame(ui)
    lines = text.splitlines()
    finished = max(i for i, line in enumerate(lines) if "3 files (1.2 KiB) sent" in line)
    assert not [line for line in lines[finished + 1 :] if "copying" in line or "%" in line]
    ui.step(1, 1, "job", "sync")  # the job runs again: its progress shows again
    ui.progress("job", "target1", 10, "copying again")
    assert "copying again" in plain_text(out) + render_frame(ui)
