"""The registry: everything a run started, so that the abort path can end all of it.

It holds the host pids (with their start ticks, so a recycled pid is never signalled) of every local
process the driver started — ansible-playbook processes, the agents, the ssh master — and the async
job ids that the runner events reported for each host. Thread-safe: events arrive on runner threads.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil

from pcswitcher.remote.agent import start_ticks


@dataclass(frozen=True)
class Tracked:
    pid: int
    start: int  # clock ticks since boot (agent.start_ticks): immune to a stepped system clock
    role: str  # "playbook:<job>", "agent:source", "agent:target" …

    def process(self) -> psutil.Process | None:
        """The process if it still is the one we started (same pid and start tick)."""
        try:
            proc = psutil.Process(self.pid)
            if not self.start or start_ticks(self.pid) != self.start:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None


class Registry:
    def __init__(self, run_id: str, jids_file: Path | None = None) -> None:
        self.run_id = run_id
        self.jids_file = jids_file  # persisted so that `pc-switcher cleanup` knows them after a crash
        self._lock = threading.Lock()
        self._processes: list[Tracked] = []
        self._jids: dict[str, list[str]] = {}

    def add_process(self, proc: psutil.Process, role: str) -> Tracked:
        tracked = Tracked(proc.pid, start_ticks(proc.pid), role)
        with self._lock:
            self._processes.append(tracked)
        return tracked

    def add_jid(self, host: str, jid: str) -> None:
        with self._lock:
            known = self._jids.setdefault(host, [])
            if jid in known:
                return
            known.append(jid)
            if self.jids_file is not None:
                self.jids_file.parent.mkdir(parents=True, exist_ok=True)
                self.jids_file.write_text(json.dumps(self._jids))

    def jids(self, host: str | None = None) -> list[str]:
        with self._lock:
            if host is not None:
                return list(self._jids.get(host, []))
            return [j for ids in self._jids.values() for j in ids]

    def processes(self, role_prefix: str = "") -> list[Tracked]:
        with self._lock:
            return [t for t in self._processes if t.role.startswith(role_prefix)]

    def live_trees(self, role_prefix: str = "") -> list[psutil.Process]:
        """Every live tracked process of that role and all its descendants."""
        seen: dict[int, psutil.Process] = {}
        for tracked in self.processes(role_prefix):
            proc = tracked.process()
            if proc is None:
                continue
            seen[proc.pid] = proc
            try:
                for child in proc.children(recursive=True):
                    seen[child.pid] = child
            except psutil.NoSuchProcess:
                continue
        return list(seen.values())

    def kill_trees(self, role_prefix: str = "", sig: int = signal.SIGKILL) -> list[psutil.Process]:
        """Signal every live tracked tree; children first are frozen so they cannot fork away."""
        procs = {p.pid: p for p in self.live_trees(role_prefix)}
        if sig == signal.SIGKILL:
            for proc in procs.values():
                _signal(proc, signal.SIGSTOP)
            procs.update((p.pid, p) for p in self.live_trees(role_prefix))  # children forked meanwhile
        for proc in procs.values():
            _signal(proc, sig)
        return list(procs.values())


def _signal(proc: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        proc.send_signal(sig)
