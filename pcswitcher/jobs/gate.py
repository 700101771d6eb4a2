"""The start-up overlap: start a playbook now, let it begin later, or discard it.

Starting ansible-playbook costs about 0.7 s before its first task. The first job's playbook is
started before the inventory is read, so that its start-up overlaps the driver's own (inventory,
lock, agents), and runs its checks and its changes in one process — without giving up "nothing
touches the target before the agents hold it" and "every check before any change". An
:class:`EarlyStart` holds it twice:

1. before its first task, until :meth:`EarlyStart.begin`; its events until then (its start-up, and
   the start of its first task, which Ansible announces before the hold) are kept and passed on at
   begin(), in order; a run discarded before then shows nothing, and is stopped with SIGKILL
   (it has run no task, so it has no worker and no connection to end);
2. after its validate phase (at its first task tagged neither ``validate`` nor ``always``,
   docs/job-contract.md) until :meth:`EarlyStart.release`.

How: the callback plugin ``plugins/callback/pcswitcher_gate.py``, enabled for this run only, waits
in the ansible-playbook main process for files ``<prefix>.start`` and ``<prefix>.go`` that this
module creates, and says ``<prefix>.held`` when it holds; ``PCSWITCHER_GATE`` names the prefix.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pcswitcher.jobs.playbooks import Launcher
from pcswitcher.jobs.runner import EventHandler, PlaybookResult, PlaybookRun, enable_callback

GATE_ENV = "PCSWITCHER_GATE"  # see plugins/callback/pcswitcher_gate.py
GATE_PLUGIN = "pcswitcher_gate"


class EarlyStart:
    """A playbook run held before its first task and after its checks (see the module doc)."""

    def __init__(self, prefix: Path, on_event: EventHandler | None = None) -> None:
        self.prefix = prefix
        self.on_event = on_event
        self.run: PlaybookRun | None = None
        self.launcher: Launcher | None = None
        self.result: PlaybookResult | None = None  # of a run that ended before it held
        self._begun = False
        self._waiting: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    @classmethod
    def start(
        cls, launcher: Launcher, name: str, prefix: Path, playbook: Path, ident: str, **build: Any
    ) -> EarlyStart:
        """Build the run with ``launcher`` (``build``: its arguments, ``on_event`` included) and
        start it now; it waits for :meth:`begin`."""
        early = cls(prefix, build.pop("on_event", None))
        prefix.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        early.launcher = launcher
        launcher.start(early.attach(launcher.build(playbook, ident, **build)), name)
        return early

    def attach(self, run: PlaybookRun) -> PlaybookRun:
        """Make a run (not started yet) this hold's: the plugin, the kept events, the hard stop."""
        run.envvars[GATE_ENV] = str(self.prefix)
        enable_callback(run.envvars, GATE_PLUGIN)
        run.on_event = self._keep
        run.kill_on_stop = True
        self.run = run
        return run

    def _keep(self, event: dict[str, Any]) -> None:
        with self._lock:
            if not self._begun:
                self._waiting.append(event)
                return
        if self.on_event is not None:
            self.on_event(event)

    def begin(self) -> None:
        """Let the play start its first task (it waits for this before touching any host)."""
        with self._lock:
            self._begun = True
            waiting, self._waiting = self._waiting, []
        if self.run is not None:
            self.run.kill_on_stop = False
        for event in waiting:
            if self.on_event is not None:
                self.on_event(event)
        Path(f"{self.prefix}.start").touch()

    def held(self) -> bool:
        """The play waits after its checks: every task of the job's validate phase has run."""
        return Path(f"{self.prefix}.held").exists()

    def wait_checked(self) -> bool | None:
        """Wait until the play holds after its checks (True), or ends: True when it succeeded (a job
        with no task after its checks), False when its checks failed (:attr:`result` says why).
        None when an abort came first."""
        assert self.run is not None
        assert self.launcher is not None
        while not self.held():
            if self.launcher.stop():
                return None
            if self.run.join(0.02):
                self.result = self.launcher.wait(self.run)
                return self.result is not None and self.result.ok
        return True

    def release(self) -> PlaybookResult | None:
        """Let the held play go on with the rest of the job, and wait for its end (None: an abort
        came first; a run not started by :meth:`start` is not waited for)."""
        Path(f"{self.prefix}.go").touch()
        if self.run is None or self.launcher is None:
            return None
        return self.launcher.wait(self.run)

    def discard(self) -> None:
        """Stop the play (held before its first task: it has changed nothing), quietly."""
        if self.run is not None and self.launcher is not None:
            self.on_event = None
            self.launcher.stop_all(quiet=True)
            self.launcher.end_all()
