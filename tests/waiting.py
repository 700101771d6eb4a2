"""Waiting for a condition in tests (unit and integration alike)."""

from __future__ import annotations

import time
from typing import Any


def wait_for(cond: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``cond()`` until it is true or ``timeout`` s have passed; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return bool(cond())
