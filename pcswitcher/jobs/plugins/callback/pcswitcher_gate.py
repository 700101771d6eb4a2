"""Ansible callback plugin of pc-switcher: hold a job before its first task and between its checks
and its changes.

The driver starts the first job's playbook as early as it can (its ~0.7 s start-up overlaps the
driver's own work) and runs it in one ansible-playbook process, validate phase and changes alike,
keeping two promises: nothing touches the target before the run's agents hold it (lock, dead-man
switch), and every check of every job (and the pre-sync snapshots) comes before any change. So this
plugin holds the play twice:

1. before its first task, until ``<prefix>.start`` exists (the agents are up, the history questions
   answered);
2. at the first task outside the validate phase — a task tagged neither ``validate`` nor ``always``
   (docs/job-contract.md) — it creates ``<prefix>.held`` (holding the task's name) and waits until
   ``<prefix>.go`` exists.

The files live in the run's private directory on the source; the driver sets ``PCSWITCHER_GATE`` to
the path prefix and stops a held playbook the usual way (SIGTERM). Without ``PCSWITCHER_GATE`` — a
playbook run by hand — the plugin does nothing. It runs in the ansible-playbook main process: while
it waits, no task runs on any host. It fails closed (see ``_wait``).
"""

from __future__ import annotations

import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: pcswitcher_gate
type: aggregate
short_description: hold a pc-switcher job after its validate phase until the driver says go
description:
  - Enabled by the pc-switcher driver for the playbook runs it holds (see the module docstring).
requirements:
  - the environment variable PCSWITCHER_GATE (a path prefix); without it the plugin does nothing
"""

GATE_ENV = "PCSWITCHER_GATE"
PRE_GATE_TAGS = frozenset({"validate", "always"})
EXIT_GATE_FAILED = 97


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "pcswitcher_gate"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prefix = os.environ.get(GATE_ENV, "")
        self._started = self._passed = not self._prefix

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        if not self._started:
            self._wait("start")
            self._started = True
        if self._passed or PRE_GATE_TAGS & set(task.tags or ()):
            return
        self._wait("go", held=str(task.get_name()))
        self._passed = True

    def _wait(self, name: str, held: str | None = None) -> None:
        """Wait for ``<prefix>.<name>``; with ``held``, first say so in ``<prefix>.held``."""
        try:
            if held is not None:
                path = f"{self._prefix}.held"
                with open(f"{path}.tmp", "w") as fh:
                    fh.write(held)
                os.replace(f"{path}.tmp", path)
            go = f"{self._prefix}.{name}"
            while not os.path.exists(go):
                if not os.path.isdir(os.path.dirname(go) or "."):
                    raise FileNotFoundError(f"the gate's directory {os.path.dirname(go)} is gone")
                time.sleep(0.01)
        except Exception as exc:
            # fail closed: Ansible turns a callback's exception into a warning and goes on, which
            # would run the job without the driver's go
            self._display.error(f"pc-switcher gate: {exc}; stopping before any change")
            raise SystemExit(EXIT_GATE_FAILED) from exc
