"""The source lock: one sync at a time on this machine.

An exclusive ``flock`` on ``$XDG_STATE_HOME/pc-switcher/sync.lock``. The kernel drops it when the
holder dies, however it dies, so a lock left by a dead process is never in the way: the file's
content (who held it) only serves the message. The descriptor is close-on-exec, so no child keeps it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

import psutil

from .errors import LockHeld


class SyncLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.stale: dict[str, Any] | None = None  # the holder a previous, dead run left in the file

    def holder(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text() or "{}")
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def acquire(self, **info: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            held = self.holder()
            who = ", ".join(
                f"{k} {held[k]}" for k in ("pid", "target", "run_id", "started") if held.get(k) is not None
            )
            alive = _alive(held.get("pid"))
            hint = (
                "wait for that sync to finish (or stop it with Ctrl+C / kill -TERM PID)"
                if alive
                else f"the holder is gone but a child still holds the file; remove {self.path} and retry"
            )
            raise LockHeld(f"another sync holds the lock ({who or 'unknown holder'})", hint) from None
        previous = self.holder()
        if previous.get("pid") and previous.get("released") is not True:
            self.stale = previous
        record = {**info, "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            held = self.holder()
            held["released"] = True
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps(held).encode(), 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None


def _alive(pid: object) -> bool:
    return isinstance(pid, int) and psutil.pid_exists(pid)
