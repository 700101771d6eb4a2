#!/usr/bin/env python3
"""Run one rsync of the folder_sync job and turn its output into pc-switcher progress lines.

Usage (run on the source by roles/folder_sync/tasks/sync.yml)::

    folder_sync_rsync.py [--base B] [--span S] [--label L] [--report N] [--dry-run] -- rsync ARGS...

rsync must be given ``--info=progress2 --stats --out-format=%i %n%L`` (the task does). This wrapper:

* reads rsync's stdout: the ``progress2`` lines (overall bytes, percent, rate, ETA), the itemized
  lines (``>f+++++++++ path`` — the current file; ``*deleting   path`` — a deletion) and the
  ``--stats`` block at the end;
* appends JSON lines to ``$PCSWITCHER_PROGRESS`` (when set): ``percent`` (``B + S * rsync%``) and
  ``item`` (current file, bytes, rate, ETA) at most 4 times a second, a DEBUG message with the
  figures every 5 s, one DEBUG message per deletion, and, with ``--dry-run``, one DEBUG message per
  would-be change (the first ``--report`` of them);
* prints one JSON object on stdout when rsync ends: ``rc``, ``files_transferred``, ``bytes``
  (total transferred file size), ``deleted``, ``changes`` (itemized lines), ``sample`` (the first
  ``--report`` itemized transfers/changes), ``deletions`` (the first ``--report`` deleted paths) and
  exits with rsync's exit code.

It never daemonizes and keeps its environment (the run tag ``PCSWITCHER_RUN_ID``), so the abort
sweep finds it and rsync; rsync also gets SIGTERM if this wrapper dies (parent-death signal), and
SIGINT/SIGTERM/SIGHUP sent to the wrapper are passed on to rsync. Python 3.8+, standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

PROGRESS_INTERVAL = 0.25  # s between progress lines (percent + item)
MESSAGE_INTERVAL = 5.0  # s between DEBUG messages with bytes / rate / ETA
READ_BATCH = 1 << 16  # a read shorter than this waits READ_PAUSE before the next one
READ_PAUSE = 0.02  # s; rsync's output pipe holds it (1 MiB when the kernel allows, else 64 KiB)
PR_SET_PDEATHSIG = 1
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; in fcntl since Python 3.10
_LINE_END = re.compile(rb"[\r\n]")

# "   1,234,567  12%   10.00MB/s    0:00:12 (xfr#3, to-chk=10/100)"
_PROGRESS2 = re.compile(
    r"^\s*(?P<bytes>[\d,.]+)\s+(?P<pct>\d+)%\s+(?P<rate>\S+/s)\s+(?P<eta>\d+:\d\d:\d\d)(?:\s+\((?P<extra>[^)]*)\))?"
)
_STAT = re.compile(r"^(?P<key>[A-Za-z][A-Za-z ]+):\s+(?P<value>[\d,.]+)")


def _number(text: str) -> int:
    digits = re.sub(r"[^\d]", "", text)
    return int(digits) if digits else 0


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


class Progress:
    """Appends JSON lines to the progress file (nothing when ``$PCSWITCHER_PROGRESS`` is empty)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh: Any = None
        if path:
            with contextlib.suppress(OSError):
                self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open while rsync runs

    def write(self, **line: Any) -> None:
        if self._fh is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._fh.write(json.dumps(line) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()


def _pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Wrapper:
    def __init__(self, args: argparse.Namespace) -> None:
        self.base: float = args.base
        self.span: float = args.span
        self.label: str = args.label
        self.report: int = args.report
        self.dry_run: bool = args.dry_run
        self.progress = Progress(os.environ.get("PCSWITCHER_PROGRESS", ""))
        self.current = ""
        self.percent = 0.0
        self.bytes_done = 0
        self.rate = ""
        self.eta = ""
        self.changes = 0
        self.deleted_seen = 0
        self.sample: list[str] = []
        self.deletions: list[str] = []
        self.stats: dict[str, int] = {}
        self.in_stats = False
        self._last_progress = 0.0
        self._last_message = time.monotonic()
        self._progress_dirty = False

    # -- progress ------------------------------------------------------------------------------
    def _overall(self, pct: float) -> float:
        return round(self.base + self.span * max(0.0, min(100.0, pct)) / 100.0, 1)

    def _item(self) -> str:
        figures = f"{_human(self.bytes_done)}, {self.rate or '-'}, ETA {self.eta or '-'}"
        name = self.current or self.label
        return f"{name} ({figures})"

    def flush_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._progress_dirty and (force or now - self._last_progress >= PROGRESS_INTERVAL):
            self.progress.write(percent=self._overall(self.percent), item=self._item())
            self._last_progress = now
            self._progress_dirty = False
        if force or now - self._last_message >= MESSAGE_INTERVAL:
            if self.bytes_done or self.current:
                self.progress.write(
                    level="DEBUG",
                    message=(
                        f"{self.label}: {self.percent:.0f}% of this folder, {_human(self.bytes_done)} "
                        f"at {self.rate or '-'}, ETA {self.eta or '-'}"
                    ),
                )
            self._last_message = now

    # -- rsync output ----------------------------------------------------------------------------
    def line(self, raw: str) -> None:
        text = raw.rstrip("\n")
        if not text.strip():
            return
        match = _PROGRESS2.match(text)
        if match and not self.in_stats:
            self.bytes_done = _number(match.group("bytes"))
            self.percent = float(match.group("pct"))
            self.rate = match.group("rate")
            self.eta = match.group("eta")
            self._progress_dirty = True
            return
        if text.startswith("Number of files:"):
            self.in_stats = True
        if self.in_stats:
            stat = _STAT.match(text)
            if stat:
                self.stats[stat.group("key").strip()] = _number(stat.group("value"))
            return
        if len(text) > 12 and (text.startswith("*deleting") or text[11] == " "):
            self.itemized(text)

    def lines(self, parts: list[bytes]) -> None:
        """A batch of output lines. rsync writes a progress2 line after every file; they are
        right-aligned (start with a space), and only the last of a batch is parsed."""
        held = b""
        for part in parts:
            if part[:1] == b" " and not self.in_stats:
                held = part
                continue
            if held and part.startswith(b"Number of files:"):  # the --stats block starts
                self.line(held.decode("utf-8", errors="replace"))
                held = b""
            if part:
                self.line(part.decode("utf-8", errors="replace"))
        if held:
            self.line(held.decode("utf-8", errors="replace"))

    def itemized(self, text: str) -> None:
        code, name = text[:11].strip(), text[12:]
        self.changes += 1
        if code.startswith("*deleting"):
            self.deleted_seen += 1
            if len(self.deletions) < self.report:
                self.deletions.append(name)
            verb = "would delete" if self.dry_run else "deleted"
            self.progress.write(level="DEBUG", message=f"{self.label}: {verb} {name}")
            return
        self.current = name
        self._progress_dirty = True
        if len(self.sample) < self.report:
            self.sample.append(text)
        if self.dry_run and self.changes <= self.report:
            self.progress.write(level="DEBUG", message=f"{self.label}: would transfer {code} {name}")

    # -- main ------------------------------------------------------------------------------------
    def run(self, argv: list[str]) -> int:
        env = dict(os.environ)
        env["LC_ALL"] = "C"  # numbers without locale-specific separators
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, preexec_fn=_pdeathsig)  # noqa: PLW1509

        def forward(signum: int, frame: object) -> None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, forward)
        self.progress.write(percent=self._overall(0), item=f"{self.label}: starting rsync")
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)
        pending = b""
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            if not chunk:
                break
            pending += chunk
            parts = _LINE_END.split(pending)
            pending = parts.pop()
            self.lines(parts)
            self.flush_progress()
            if len(chunk) < READ_BATCH:
                time.sleep(READ_PAUSE)  # let output gather: fewer, larger reads
        if pending:
            self.line(pending.decode("utf-8", errors="replace"))
        rc = proc.wait()
        if rc in (0, 24):
            self.percent = 100.0
            self._progress_dirty = True
        if rc == 24:
            self.progress.write(
                level="WARNING", message=f"{self.label}: some files vanished on the source during the sync"
            )
        self.flush_progress(force=True)
        self.progress.close()
        result = {
            "rc": rc,
            "files_transferred": self.stats.get("Number of regular files transferred", 0),
            "bytes": self.stats.get("Total transferred file size", 0),
            "deleted": self.stats.get("Number of deleted files", self.deleted_seen),
            "changes": self.changes,
            "sample": self.sample,
            "deletions": self.deletions,
            "dry_run": self.dry_run,
        }
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        return rc if rc >= 0 else 128 - rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="folder_sync_rsync", description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=float, default=0.0, help="overall percent when this rsync starts")
    parser.add_argument("--span", type=float, default=100.0, help="share of the overall percent")
    parser.add_argument("--label", default="rsync", help="name of the folder in messages")
    parser.add_argument("--report", type=int, default=200, help="changes kept in the result / logged")
    parser.add_argument("--dry-run", action="store_true", help="the rsync is a dry run (wording only)")
    parser.add_argument("rsync", nargs=argparse.REMAINDER, help="-- rsync ARGS...")
    args = parser.parse_args(argv)
    command = args.rsync[1:] if args.rsync[:1] == ["--"] else args.rsync
    if not command:
        parser.error("give the rsync command after --")
    return Wrapper(args).run(command)


if __name__ == "__main__":
    sys.exit(main())
