"""What a run ends with: each job's outcome, the log's end record, the machine-readable result."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcswitcher.errors import ExitCode, PcsError
from pcswitcher.jobs.discovery import JobSpec
from pcswitcher.jobs.summary import job_summary

log = logging.getLogger("pcswitcher")


@dataclass
class JobOutcome:
    name: str
    status: str = "not run"  # succeeded | failed | skipped | not run | aborted
    duration: float = 0.0
    detail: str = ""
    changed: int = 0
    result: dict[str, Any] = field(default_factory=dict)  # the job's set_stats data

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "duration": round(self.duration, 3),
            "changed": self.changed,
            "detail": self.detail,
            "result": self.result,
        }


def result_summary(spec: JobSpec, stats: dict[str, Any], dry_run: bool) -> str:
    """What the job changed (or would change) for the summary: its ``<job>_result`` in the words of
    its declaration (pcswitcher/jobs/summary.py)."""
    data = stats.get(f"{spec.name}_result")
    return job_summary(data if isinstance(data, dict) else None, spec.summary, spec.summary_dry_run, dry_run)


def log_end(code: ExitCode, text: str, outcomes: list[JobOutcome], log_path: Path) -> None:
    """The last record of every run's log: its outcome and exit code (docs/architecture.md)."""
    level = logging.INFO
    if code in (ExitCode.INTERRUPTED, ExitCode.TERMINATED):
        level = logging.WARNING
    elif code != ExitCode.OK:
        level = logging.ERROR
    fields = {
        "exit_code": int(code),
        "outcome": text,
        "jobs": [o.as_dict() for o in outcomes],
        "log": str(log_path),
    }
    log.log(level, "finished: %s, exit code %d", text, int(code), extra={"fields": fields})


def log_failure(exc: BaseException, target: str, outcomes: list[JobOutcome], log_path: Path) -> None:
    """An error that ends the run outside the abort path (refused history question, busy or
    unreachable target, a bug): the reason at ERROR, then the end record."""
    with contextlib.suppress(Exception):
        if isinstance(exc, PcsError):
            code = exc.exit_code
            log.error("%s", exc, extra={"fields": {"error": type(exc).__name__}})
            verb = "refused" if code in (ExitCode.USAGE, ExitCode.LOCKED) else "failed"
            text = f"sync to {target} {verb}: {exc.message}"
        elif isinstance(exc, KeyboardInterrupt):
            code, text = ExitCode.INTERRUPTED, f"sync to {target} interrupted"
        else:
            code = ExitCode.FAILED
            log.error("internal error: %s: %s", type(exc).__name__, exc)
            text = f"sync to {target} failed: internal error ({type(exc).__name__})"
        log_end(code, text, outcomes, log_path)
