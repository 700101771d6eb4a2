"""The sync lock: one sync at a time per machine, as source or as target.

An exclusive ``flock`` on ``$XDG_STATE_HOME/pc-switcher/sync.lock``. The driver takes it on the
source; the agent takes the same file on the target for the whole session (agent.py), so a machine
is never the source of one sync and the target of another at once, and a machine cannot sync to
itself. The kernel drops a flock when its holder dies, however it dies; the file's content (who
held it) only serves the messages. The file is removed on release; an acquirer that finds a file
left by a dead holder reports it as stale. The descriptor is close-on-exec, so no child keeps it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psutil

from pcswitcher.errors import LockHeld
from pcswitcher.remote.agent import (
    describe_holder,
    missing_dirs,
    remove_empty_dirs,
    try_lock,
    unlock,
    write_holder,
)


class SyncLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._created: list[str] = []  # the directories acquire() made, deepest first
        self.stale: dict[str, Any] | None = None  # what a dead holder left in the file

    def acquire(self, **info: Any) -> None:
        """Take the lock, recording ``info`` (target, run_id; ``role`` defaults to "source") for
        the messages of others; raises :class:`LockHeld` (with the holder) when it is held."""
        self._created = missing_dirs(str(self.path.parent))
        fd, previous = try_lock(str(self.path))
        if fd is None:
            pid = previous.get("pid")
            alive = isinstance(pid, int) and psutil.pid_exists(pid)
            hint = (
                "wait for that sync to finish (or stop it with Ctrl+C / kill -TERM PID)"
                if alive
                else f"its holder is gone but a child keeps the file open; remove {self.path} and retry"
            )
            error = LockHeld(f"another sync holds the lock {self.path} ({describe_holder(previous)})", hint)
            error.holder, error.holder_alive = previous, alive
            raise error
        if previous.get("pid"):
            self.stale = previous
        write_holder(
            fd,
            {"role": "source", **info, "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        )
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            unlock(self._fd, str(self.path))
            self._fd = None
            remove_empty_dirs(self._created)  # leave no trace where there was none (a first dry-run)
