"""What /proc tells of a process that psutil does not: the signals it catches."""

from __future__ import annotations

import signal
from pathlib import Path


def catches(pid: int, sig: signal.Signals) -> bool:
    """Whether the process ``pid`` (a pid of this PID namespace) has a handler of ``sig``: its
    ``SigCgt`` in /proc. For ``pc-switcher``: its Python has started and runs pc-switcher's own code,
    which makes SIGTERM an exit 143 first; before that a signal ends it as it would any program."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) >> (sig - 1) & 1)
