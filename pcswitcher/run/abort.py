"""One abort path for every cause: Ctrl+C, SIGTERM, low disk, lost link, a failed job.

The :class:`AbortController` only records *why* the run stops (the first cause wins) and wakes the
driver, which then walks the steps of the abort path (docs/architecture.md, "Abort"). A second
Ctrl+C (or SIGTERM) does not wait: it runs the driver's *force* action from the signal handler —
SIGKILL to every tracked local tree, a best-effort remote sweep with a short timeout — and exits.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from enum import Enum
from types import FrameType
from typing import Any

from pcswitcher.errors import ExitCode

log = logging.getLogger("pcswitcher")


class Cause(Enum):
    INTERRUPT = "interrupt"  # Ctrl+C
    TERMINATE = "terminate"  # SIGTERM
    DISK = "disk"  # free space below runtime_minimum
    LINK = "link"  # no heartbeat from the target
    JOB_FAILED = "job_failed"
    ERROR = "error"  # any other failure of the driver during a run

    @property
    def exit_code(self) -> ExitCode:
        if self is Cause.INTERRUPT:
            return ExitCode.INTERRUPTED
        if self is Cause.TERMINATE:
            return ExitCode.TERMINATED
        return ExitCode.FAILED


class AbortController:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.cause: Cause | None = None
        self.message = ""
        self._lock = threading.Lock()
        self._force: Callable[[Cause], None] | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def request(self, cause: Cause, message: str, level: int = logging.CRITICAL, **fields: Any) -> bool:
        """Record the cause and wake the driver; returns False when an abort is already under way."""
        with self._lock:
            if self.cause is not None:
                return False
            self.cause = cause
            self.message = message
        log.log(level, message, extra={"fields": {"abort_cause": cause.value, **fields}})
        self.event.set()
        return True

    def set_force_action(self, action: Callable[[Cause], None]) -> None:
        self._force = action

    # -- signals ---------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        cause = Cause.INTERRUPT if signum == signal.SIGINT else Cause.TERMINATE
        if self.requested:
            if self._force is not None:
                log.warning(
                    "Second %s: forcing the abort", "Ctrl+C" if cause is Cause.INTERRUPT else "SIGTERM"
                )
                self._force(self.cause or cause)
            return
        text = "Sync interrupted by user" if cause is Cause.INTERRUPT else "Sync terminated by SIGTERM"
        self.request(cause, text, logging.WARNING)
