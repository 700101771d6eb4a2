"""The live display in a real terminal: ``make demo`` (a real sync between two sandbox machines, with
a small folder_sync and the dummy job) inside tmux, at 80 and at 160 columns, read back with
``tmux capture-pane``.

What a person sees must hold at both widths:

* pc-switcher never writes a line wider than the terminal (the terminal wraps nothing of it), and
  never folds a word or a path over two lines;
* while a job runs, one time estimate is shown (the bar's), not a second one in the file line;
* at the end the summary is on the screen: every job, its figures in the user's units, the outcome;
* a successful demo shows no ERROR line; the end of the session log it prints starts at a record.

The screens (during the run and at the end) are written as text files to ``$PCS_SCREENS_DIR``
when set (else to the test's temp dir), e.g. for a closing note.

The tmux server has its own socket (``tmux -L``) and is the only one this test ends.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import needs
from tests.integration.helpers import REPO

HEIGHT = 45
TIME_LEFT = re.compile(r"(?<![\d:])\d:\d\d:\d\d(?![\d:])|-:--:--")
RECORD_START = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} ")
# how the lines of the display begin: a log line's time, a job's mark, the step, the header
LINE_START = re.compile(r"^(\d\d:\d\d:\d\d |\d{4}-\d\d-\d\d |[✔✘–·•] |Step \d|pc-switcher |Summary|== )")
WORD = re.compile(r"[\w/.~@-]")
PYTHON = str(REPO / ".venv" / "bin" / "python")


@dataclass
class Pane:
    socket: str
    width: int

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30, check=False
        )

    def screen(self, *, joined: bool = False, history: bool = False) -> str:
        """The pane as shown (``joined``: lines the terminal wrapped joined again; ``history``: with
        the scrollback)."""
        args = ["capture-pane", "-p", "-t", "demo"]
        if joined:
            args.append("-J")
        if history:
            args += ["-S", "-"]
        result = self.tmux(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def dead(self) -> bool:
        result = self.tmux("display-message", "-p", "-t", "demo", "#{pane_dead}")
        return result.returncode != 0 or result.stdout.strip() == "1"

    def wait(self, what: str, check: object, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if callable(check) and check(text):
                return text
            assert not self.dead(), f"the demo ended before {what}:\n{self.screen(history=True)[-4000:]}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{text}"
            time.sleep(0.1)


@pytest.fixture(params=[80, 160], ids=lambda width: f"{width}cols")
def pane(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pane]:
    needs.root("the demo runs sandbox machines")
    needs.tool("tmux")
    width = int(request.param)
    socket = f"pcs-display-{os.getpid()}-{width}"
    conf = tmp_path / "tmux.conf"
    conf.write_text("set -g remain-on-exit on\nset -g history-limit 20000\nset -g status off\n")
    env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "LINES", "TMUX", "NO_COLOR"}}
    env["TERM"] = "xterm-256color"
    command = f"cd {REPO} && {PYTHON} -m tests.sandbox demo --source-duration 4 --target-duration 9"
    started = subprocess.run(
        ["tmux", "-L", socket, "-f", str(conf), "new-session", "-d", "-s", "demo",
         "-x", str(width), "-y", str(HEIGHT), command],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    made = Pane(socket, width)
    try:
        yield made
    finally:
        if not made.dead():  # a failed test: Ctrl+C lets the demo abort the sync and tear down
            made.tmux("send-keys", "-t", "demo", "C-c")
            deadline = time.monotonic() + 120
            while not made.dead() and time.monotonic() < deadline:
                time.sleep(0.2)
        made.tmux("kill-server")  # our own server (its own socket), nothing else


def _save(name: str, text: str, tmp_path: Path) -> None:
    directory = Path(os.environ.get("PCS_SCREENS_DIR") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)


def _sync_part(text: str) -> list[str]:
    """The lines pc-switcher wrote: between the demo's "== pc-switcher sync" and its exit line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("== pc-switcher sync "))
    end = next(i for i, line in enumerate(lines) if line.startswith("== pc-switcher exited with"))
    return lines[start + 1 : end]


def _assert_fits(lines: list[str], width: int, when: str) -> None:
    wide = [line for line in lines if len(line.rstrip()) > width]
    assert not wide, f"{when}: lines wider than {width} columns (wrapped by the terminal): {wide}"
    # a word or path folded by the display: a line filled to the last column whose last word
    # goes on at the start of the next line
    for this, after in itertools.pairwise(lines):
        folded = (
            len(this) == width
            and WORD.match(this[-1:]) is not None
            and WORD.match(after[:1]) is not None
            and LINE_START.match(after) is None
        )
        assert not folded, f"{when}: a word folded over two lines:\n{this}\n{after}"


def test_live_display_in_tmux(pane: Pane, tmp_path: Path) -> None:
    width = pane.width

    def running(text: str) -> bool:  # the second job's work on the target, its bar moving
        return "dummy_success (sync)" in text and "target work" in text and "%" in text

    during = pane.wait("the dummy job's work on the target", running, timeout=240)
    _save(f"live-{width}-during.txt", during, tmp_path)
    estimates = TIME_LEFT.findall(during)
    assert len(estimates) == 1, f"one time estimate while a job runs, found {estimates}:\n{during}"
    assert "ETA" not in during, during
    _assert_fits(pane.screen(joined=True).splitlines(), width, "during the run")

    pane.wait("the demo's end", lambda text: "done: no machine" in text, timeout=240)
    end = pane.screen(history=True)
    _save(f"live-{width}-end.txt", end, tmp_path)
    joined = pane.screen(joined=True, history=True)
    assert "== pc-switcher exited with 0" in joined, joined[-4000:]
    sync = _sync_part(joined)
    _assert_fits(sync, width, "the sync's output")
    shown = "\n".join(sync)
    words = " ".join(shown.split())  # the text as read, whatever the display wrapped between words
    # the summary, in the user's units, with the outcome
    assert "Summary" in shown
    for job in ("folder_sync", "dummy_success"):
        assert re.search(rf"{job}\s.*succeeded", shown), shown
    assert re.search(r"\d+ files \(\d+(\.\d)? [KMG]?i?B\) sent", words), shown
    assert "sync to workstation2 completed" in shown
    assert "changed" not in shown.split("Summary")[-1], "Ansible's changed-task count is for the log"
    # the simulated error is a warning that says so; a successful run shows no ERROR
    assert "WARNING [dummy_success@workstation2] simulated error at 8 s on the target" in words, shown
    assert "ERROR" not in joined, [line for line in joined.splitlines() if "ERROR" in line]
    # the end of the session log starts at a record
    lines = joined.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("== the end of the session log"))
    assert RECORD_START.match(lines[head + 1]), lines[head + 1]
    assert any("finished: sync to workstation2 completed, exit code 0" in line for line in lines[head:])
