"""All terminal output of pc-switcher goes through :class:`Ui`.

On a terminal it shows a rich ``Live`` display (header, current step, progress bar with ETA, current
item, the last log lines); records at WARNING and above, finished jobs and driver messages are printed
permanently above it. Anywhere else (a pipe, a file, CI) it writes plain timestamped lines, and
progress only when it moves by 25 points or the item changes.

Every method is thread-safe and none raises because of output: a closed or broken stdout/stderr
silently drops what is written to it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.text import Text

from pcswitcher.jobs.summary import format_duration
from pcswitcher.run.logs import LEVEL_STYLES, context_label, record_context

if TYPE_CHECKING:
    # Imported where used: the live display (rich.live, rich.progress) only exists on a terminal,
    # the table only at the end; together they cost ~40 ms at start-up.
    from rich.live import Live
    from rich.progress import Progress, TaskID

LOG_LINES = 8  # log lines kept in the live display
PLAIN_PERCENT_STEP = 25.0  # plain mode: print progress when the percent moved this much

STATUS_STYLES: dict[str, str] = {
    "succeeded": "green",
    "failed": "bold red",
    "aborted": "bold magenta",
    "skipped": "yellow",
    "not run": "dim",
}
STATUS_MARKS: dict[str, str] = {
    "succeeded": "✔",
    "failed": "✘",
    "aborted": "✘",
    "skipped": "–",
    "not run": "·",
}
_BAD_STATUSES = frozenset({"failed", "aborted"})


def _plain_time(created: float | None = None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() if created is None else created))


class _SafeStream:
    """A text stream that never raises: a broken pipe, a closed file or a failed write drops the text
    (and all later text once the stream is known to be broken). Unencodable characters are replaced."""

    def __init__(self, resolve: Callable[[], IO[str] | None]) -> None:
        self._resolve = resolve
        self.broken = False

    def _target(self) -> IO[str] | None:
        return None if self.broken else self._resolve()

    def write(self, text: str) -> int:
        target = self._target()
        if target is None:
            return len(text)
        try:
            target.write(text)
        except UnicodeEncodeError:
            encoding = getattr(target, "encoding", None) or "ascii"
            try:
                target.write(text.encode(encoding, "replace").decode(encoding, "replace"))
            except (OSError, ValueError):
                self.broken = True
        except (OSError, ValueError):  # BrokenPipeError, closed file
            self.broken = True
        return len(text)

    def flush(self) -> None:
        target = self._target()
        if target is None:
            return
        try:
            target.flush()
        except (OSError, ValueError):
            self.broken = True

    def isatty(self) -> bool:
        target = self._target()
        try:
            return bool(target is not None and target.isatty())
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        target = self._target()
        if target is None:
            raise OSError("stream is closed")
        return target.fileno()

    @property
    def encoding(self) -> str:
        target = self._target()
        return str(getattr(target, "encoding", None) or "utf-8")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resolve(), name)


def _std_stream(stderr: bool) -> Callable[[], IO[str] | None]:
    def resolve() -> IO[str] | None:
        stream: Any = sys.stderr if stderr else sys.stdout
        real: IO[str] | None = getattr(stream, "rich_proxied_file", stream)  # the stream under rich's proxy
        return real

    return resolve


def _make_safe(console: Console) -> None:
    """Route the console's writes through a :class:`_SafeStream` (once)."""
    current = console._file  # None: the console follows sys.stdout / sys.stderr
    if isinstance(current, _SafeStream):
        return
    if current is None:
        console.file = _SafeStream(_std_stream(console.stderr))  # type: ignore[assignment]
    else:
        fixed: IO[str] = current
        console.file = _SafeStream(lambda: fixed)  # type: ignore[assignment]


class _UiLogHandler(logging.Handler):
    """Shows log records in the UI (the terminal handler given to ``setup_logging``)."""

    def __init__(self, ui: Ui) -> None:
        super().__init__()
        self._ui = ui

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # showing a record must never break the caller
            self._ui._on_record(record)


def _one_line(text: str) -> str:
    """``text`` with every non-printable character escaped as Python writes it (``\\n``, ``\\x1b``)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Ui:
    """The one owner of terminal output."""

    def __init__(
        self,
        console: Console | None = None,
        interactive: bool | None = None,
        *,
        err_console: Console | None = None,
    ) -> None:
        self.console = console if console is not None else Console()
        self.err_console = err_console if err_console is not None else Console(stderr=True)
        _make_safe(self.console)
        _make_safe(self.err_console)
        self.interactive = self.console.is_terminal if interactive is None else interactive

        self._lock = threading.RLock()  # state; never held while calling into rich
        self._life = threading.Lock()  # start/stop of the Live display
        self._live: Live | None = None
        self._handler: _UiLogHandler | None = None
        self._final = False

        self._target = ""
        self._run_id = ""
        self._dry_run = False
        self._steps: list[str] = []
        self._step_text = ""
        self._job: str | None = None
        self._item: str | None = None
        self._percent: dict[str, float] = {}
        self._log_lines: deque[Text] = deque(maxlen=LOG_LINES)
        # plain mode throttling: last printed percent per job, last printed item per (job, host)
        self._printed_percent: dict[str, float] = {}
        self._printed_item: dict[tuple[str, str | None], str] = {}
        self._ended: set[str] = set()  # jobs whose summary line is out: no progress line after it

        # The progress bar of the live display: made at first use on a terminal, never in plain mode.
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def _bar(self) -> tuple[Progress, TaskID] | None:
        """The progress bar and its task on a terminal (made at first use), None in plain mode."""
        if not self.interactive:
            return None
        if self._progress is None or self._task is None:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeRemainingColumn(),
                console=self.console,
                auto_refresh=False,
            )
            self._task = self._progress.add_task("", total=None)
        return self._progress, self._task

    # ---------------------------------------------------------------------------------------------
    # output primitives (never raise, never called with self._lock held)

    def _print(self, renderable: RenderableType, *, err: bool = False) -> None:
        console = self.err_console if err else self.console
        with contextlib.suppress(Exception):  # output must never break the driver
            console.print(
                renderable, markup=False, highlight=False, emoji=False, soft_wrap=not self.interactive
            )

    def _plain(self, text: str, *, err: bool = False) -> None:
        self._print(Text(text), err=err)

    # ---------------------------------------------------------------------------------------------
    # the live display

    def _render(self) -> RenderableType:
        with self._lock:
            header = Text()
            header.append("pc-switcher", style="bold")
            header.append(" → ")
            header.append(self._target or "?", style="bold cyan")
            if self._run_id:
                header.append(f"   run {self._run_id}", style="dim")
            if self._dry_run:
                header.append("  ")
                header.append(" DRY-RUN ", style="bold black on yellow")
            step = Text(self._step_text or "Starting…", style="bold")
            parts: list[RenderableType] = [header, step]
            bar = self._bar()
            if bar is not None:
                parts.append(bar[0])
            if not self._final:
                item = Text(self._item or "", style="cyan", no_wrap=True, overflow="ellipsis")
                parts.append(item)
                parts.extend(line.copy() for line in self._log_lines)
        return Group(*parts)

    def start(self, target: str, run_id: str, steps: list[str], dry_run: bool) -> None:
        """Begin a run: the header (target, run id, DRY-RUN) and, on a terminal, the live display."""
        with self._lock:
            self._target, self._run_id, self._dry_run, self._steps = target, run_id, dry_run, list(steps)
            self._final = False
        if not self.interactive:
            badge = "  DRY-RUN" if dry_run else ""
            self._plain(f"{_plain_time()} pc-switcher -> {target}  run {run_id}{badge}")
            if steps:
                self._plain(f"{_plain_time()} plan: {', '.join(steps)}")
            return
        from rich.live import Live

        with self._life:
            if self._live is not None:
                self._stop_live()
            live = Live(
                console=self.console,
                get_renderable=self._render,
                refresh_per_second=4,
                transient=False,
            )
            try:
                live.start()
            except Exception:
                return
            self._live = live

    def _stop_live(self) -> None:
        live, self._live = self._live, None
        if live is None:
            return
        with self._lock:
            self._final = True
        with contextlib.suppress(Exception):
            live.stop()

    def stop(self) -> None:
        """End the live display (its last frame stays). Safe to call before start and more than once."""
        with self._life:
            self._stop_live()

    # ---------------------------------------------------------------------------------------------
    # steps and progress

    def step(self, index: int, total: int, job: str, phase: str) -> None:
        """A new step began: ``Step 2/3 <job> (sync)``."""
        text = f"Step {index}/{total} {job} ({phase})"
        with self._lock:
            self._step_text = text
            self._job = job
            self._item = None
            self._ended.discard(job)
            self._percent.pop(job, None)
            self._printed_percent.pop(job, None)
            for key in [k for k in self._printed_item if k[0] == job]:
                del self._printed_item[key]
            bar = self._bar()
            if bar is not None:
                progress, task = bar
                with contextlib.suppress(KeyError):
                    progress.remove_task(task)
                self._task = progress.add_task(f"{job} ({phase})", total=None)
        if not self.interactive:
            self._plain(f"{_plain_time()} {text}")

    def progress(self, job: str, host: str | None, percent: float | None, item: str | None) -> None:
        """Progress of a job, from the source or the target; the job's latest percent is shown."""
        if percent is not None:
            percent = max(0.0, min(100.0, float(percent)))
        label = f"{host}: {item}" if host and item else item
        line: str | None = None
        with self._lock:
            if job in self._ended:
                return
            if self._job is None:
                self._job = job
            if percent is not None:
                self._percent[job] = percent
            if job == self._job:
                if item:
                    self._item = label
                bar = self._bar() if percent is not None else None
                if bar is not None:
                    bar[0].update(bar[1], total=100, completed=percent)
            if not self.interactive:
                line = self._plain_progress_line(job, host, percent, item)
        if line is not None:
            self._plain(line)

    def _plain_progress_line(
        self, job: str, host: str | None, percent: float | None, item: str | None
    ) -> str | None:
        """The progress line to print in plain mode, or None when it would be noise (lock held)."""
        show = False
        if percent is not None:
            last = self._printed_percent.get(job)
            if last is None or abs(percent - last) >= PLAIN_PERCENT_STEP or (percent >= 100.0 > last):
                show = True
        if item and self._printed_item.get((job, host)) != item:
            show = True
        if not show:
            return None
        if percent is not None:
            self._printed_percent[job] = percent
        if item:
            self._printed_item[(job, host)] = item
        shown = self._percent.get(job)
        parts = [_plain_time(), context_label(job, host)]
        if shown is not None:
            parts.append(f"{shown:.0f}%")
        if item:
            parts.append(item)
        return " ".join(parts)

    def job_finished(self, job: str, status: str, duration: float, detail: str | None = None) -> None:
        """A job ended: succeeded, failed, skipped, not run or aborted."""
        with self._lock:
            self._ended.add(job)
            bar = self._bar() if job == self._job and status == "succeeded" else None
            if bar is not None:
                bar[0].update(bar[1], total=100, completed=100)
        if not self.interactive:
            tail = f" — {detail}" if detail else ""
            self._plain(f"{_plain_time()} {job}: {status} ({format_duration(duration)}){tail}")
            return
        style = STATUS_STYLES.get(status, "")
        line = Text()
        line.append(f"{STATUS_MARKS.get(status, '•')} ", style=style)
        line.append(job, style="bold")
        line.append(f" {status}", style=style)
        line.append(f" ({format_duration(duration)})", style="dim")
        if detail:
            line.append(f" — {detail}")
        self._print(line)

    # ---------------------------------------------------------------------------------------------
    # summary, messages, errors, questions

    def summary(self, rows: list[tuple[str, str, float, str]], outcome: str) -> None:
        """The end of a run: one row per job (job, status, duration in s, detail) and the outcome."""
        bad = any(status in _BAD_STATUSES for _, status, _, _ in rows)
        if not self.interactive:
            self._plain("Summary:")
            width = max([len("job"), *(len(job) for job, _, _, _ in rows)])
            for job, status, duration, detail in rows:
                text = f"  {job:<{width}}  {status:<9}  {format_duration(duration):>9}"
                self._plain(f"{text}  {detail}".rstrip())
            self._plain(outcome)
            return
        from rich.table import Table

        self.stop()
        table = Table(title="Summary", title_justify="left", show_lines=False)
        table.add_column("Job", style="bold")
        table.add_column("Status")
        table.add_column("Duration", justify="right")
        table.add_column("Detail")
        for job, status, duration, detail in rows:
            table.add_row(
                job,
                Text(status, style=STATUS_STYLES.get(status, "")),
                format_duration(duration),
                detail or "",
            )
        self._print(table)
        self._print(Text(outcome, style="bold red" if bad else "bold green"))

    def message(self, text: str, style: str | None = None) -> None:
        """A line of the driver itself."""
        if not self.interactive:
            self._plain(f"{_plain_time()} {text}")
            return
        self._print(Text(text, style=style or ""))

    def error(self, message: str, hint: str | None = None) -> None:
        """One line on stderr: ``error: <message> — <hint>``. Ends the live display first. A control
        character (a newline in a file name given by the user) is shown escaped (``\\n``): one line."""
        self.stop()
        line = Text()
        line.append("error:", style="bold red")
        line.append(f" {_one_line(message)}")
        if hint:
            line.append(f" — {_one_line(hint)}", style="bold")
        self._print(line, err=True)

    def confirm(self, question: str, assume_yes: bool) -> bool:
        """Ask a yes/no question (default no). ``assume_yes`` answers yes without asking; without a
        terminal to ask on, the answer is no."""
        if assume_yes:
            return True
        if not self.interactive:
            return False
        with self._life:
            live = self._live
            if live is not None:  # the question must not be drawn over by the live display
                with contextlib.suppress(Exception):
                    live.stop()
            try:
                answer = self.console.input(f"{question} [y/N] ", markup=False)
            except (EOFError, OSError, ValueError):
                answer = ""
            finally:
                if live is not None:
                    with contextlib.suppress(Exception):
                        live.start()
        return answer.strip().lower() in {"y", "yes"}

    # ---------------------------------------------------------------------------------------------
    # log records

    def log_handler(self) -> logging.Handler:
        """The handler that shows log records in this UI (one per Ui)."""
        with self._lock:
            if self._handler is None:
                self._handler = _UiLogHandler(self)
            return self._handler

    def _on_record(self, record: logging.LogRecord) -> None:
        job, host = record_context(record)
        message = record.getMessage()
        level = record.levelname
        context = context_label(job, host)
        if not self.interactive:
            prefix = f"{_plain_time(record.created)} {level:<5} "
            self._plain(f"{prefix}{context} {message}" if context else f"{prefix}{message}")
            return
        line = Text()
        line.append(time.strftime("%H:%M:%S", time.localtime(record.created)), style="dim")
        line.append(" ")
        line.append(f"{level:<8}", style=LEVEL_STYLES.get(level, ""))
        if context:
            line.append(f"{context} ", style="cyan")
        line.append(message, style=LEVEL_STYLES.get(level, "") if record.levelno >= logging.ERROR else "")
        first = line.copy()
        first.no_wrap = True
        first.overflow = "ellipsis"
        if "\n" in message:
            first = first.split("\n")[0]
            first.no_wrap = True
            first.overflow = "ellipsis"
        with self._lock:
            self._log_lines.append(first)
        if self._live is None or record.levelno >= logging.WARNING:
            self._print(line)
