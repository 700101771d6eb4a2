"""The watch thread of a run: heartbeats, disk space and the link to the target.

The :class:`Monitor` pings both agents (session.py) every ``interval`` seconds, reads their
heartbeats and disk figures, and requests the abort when free space falls below ``runtime_minimum``
or the target is silent for ``link_timeout`` seconds. Before the run changes anything, its
:meth:`Monitor.preflight` checks free space against ``preflight_minimum``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pcswitcher.config.settings import DiskConfig
from pcswitcher.errors import PcsError, TargetError
from pcswitcher.jobs.summary import format_bytes
from pcswitcher.remote.session import AgentSession
from pcswitcher.run.abort import AbortController, Cause

log = logging.getLogger("pcswitcher")


class Monitor(threading.Thread):
    """Heartbeats, disk space and link watch for the run (one thread)."""

    def __init__(
        self,
        agents: dict[str, AgentSession],
        target_label: str,
        disk: DiskConfig,
        link_timeout: float,
        abort: AbortController,
    ) -> None:
        super().__init__(name="monitor", daemon=True)
        self.agents = agents
        self.target_label = target_label
        self.disk = disk
        self.link_timeout = link_timeout
        self.abort = abort
        self._stop_event = threading.Event()
        self._warned: set[tuple[str, str]] = set()

    def stop(self) -> None:
        self._stop_event.set()

    def preflight(self) -> None:
        """Check free space against ``preflight_minimum`` on both machines before anything changes."""
        for agent in self.agents.values():
            agent.ping()
        for agent in self.agents.values():
            hb = agent.wait_for("hb", max(self.link_timeout, 5.0))
            if hb is None:
                raise TargetError(
                    f"no heartbeat from the agent on {agent.label}", "check the link to the target and retry"
                )
            for figure in agent.disk:
                self._preflight_figure(agent.label, figure)

    def _preflight_figure(self, label: str, figure: dict[str, Any]) -> None:
        if "error" in figure:
            raise PcsError(
                f"cannot watch free space of {figure['path']} on {label}: {figure['error']}",
                "fix disk.paths in the config",
            )
        free, total = int(figure["free"]), int(figure["total"])
        if self.disk.preflight_minimum.breached(free, total):
            raise PcsError(
                f"not enough free space on {label}: {figure['path']} has {format_bytes(free)} free, "
                f"preflight_minimum is {self.disk.preflight_minimum.text}",
                "free some space or lower disk.preflight_minimum in the config",
            )
        log.debug(
            "free space on %s %s: %s of %s",
            label,
            figure["path"],
            format_bytes(free),
            format_bytes(total),
            extra={"host": label},
        )

    def run(self) -> None:
        # the ping is both the disk check and the heartbeat: at least twice per link_timeout, or a
        # disk.interval longer than link_timeout would read as a lost link
        while not self._stop_event.wait(min(self.disk.interval, self.link_timeout / 2)):
            for agent in self.agents.values():
                agent.ping()
                self._check_disk(agent)
            if self.link_lost():
                return

    def link_lost(self) -> bool:
        """Whether the target's connection is gone (its ssh master ended) or silent for longer than
        ``link_timeout``; if so, the abort's cause is the lost link (first cause wins).

        The watch loop asks on each turn. The driver asks too before it blames a failed job: when
        the link dies, Ansible's tasks fail as unreachable through the same master, often before the
        loop's next turn, and the cause to report is the link, not the job.
        """
        target = self.agents.get(self.target_label)
        if target is None or target.closing:
            return False
        silent = time.monotonic() - target.last_seen
        if not target.alive:
            why = "its ssh connection ended"
        elif silent > self.link_timeout:
            why = f"no heartbeat for {silent:.1f} s (link_timeout {self.link_timeout:g} s)"
        else:
            return False
        label = self.target_label
        self.abort.request(Cause.LINK, f"lost connection to {label}: {why}", host=label)
        return True

    def _check_disk(self, agent: AgentSession) -> None:
        for figure in agent.disk:
            if "error" in figure:
                continue
            free, total = int(figure["free"]), int(figure["total"])
            path = str(figure["path"])
            fields: dict[str, Any] = {"path": path, "free": free, "total": total}
            if self.disk.runtime_minimum.breached(free, total):
                self.abort.request(
                    Cause.DISK,
                    f"free space on {agent.label} {path} is {format_bytes(free)}, below runtime_minimum "
                    f"{self.disk.runtime_minimum.text}",
                    host=agent.label,
                    threshold=self.disk.runtime_minimum.text,
                    **fields,
                )
            elif (
                self.disk.warning_threshold.breached(free, total) and (agent.label, path) not in self._warned
            ):
                self._warned.add((agent.label, path))
                log.warning(
                    "free space on %s %s is %s, below warning_threshold %s",
                    agent.label,
                    path,
                    format_bytes(free),
                    self.disk.warning_threshold.text,
                    extra={"host": agent.label, "fields": fields},
                )
