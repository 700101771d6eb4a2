"""The launcher: the one place that builds and starts the playbook runs of pc-switcher.

Every ansible-playbook pc-switcher starts — a job's, the snapshots', the history's, the carry's, the
cleanup's, in a sync or in a command of its own — is a :class:`~pcswitcher.jobs.runner.PlaybookRun` built
here: its environment (:func:`~pcswitcher.jobs.runner.standard_envvars`, the run tag), its private data dir
(``NN-<ident>``, numbered in start order below the run's state), check mode, the event callback;
and, when a sync runs it, started here: tracked in the registry, stopped by the abort path
(:meth:`Launcher.stop_all`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from pcswitcher.jobs.registry import Registry
from pcswitcher.jobs.runner import (
    EventHandler,
    PlaybookResult,
    PlaybookRun,
    prepare_bin_dir,
    standard_envvars,
)
from pcswitcher.remote.agent import TAG

log = logging.getLogger("pcswitcher")


@dataclass
class Launcher:
    """Builds, starts, waits for and stops the playbook runs of one sync or command."""

    root: Path  # the project: playbooks/ and roles/
    inventory: Path
    limit: str  # the host the playbooks run against (``--limit``), unless a run names another
    run_id: str  # the run tag (``PCSWITCHER_RUN_ID``) of the tagged runs
    state: Path  # the private data dirs go below it, numbered
    #: the run's working directory (``/tmp/pcswitcher-<run id>``) on both machines: Ansible's remote
    #: and async temp dirs of the tagged runs; with ``run_dir_var`` also their play environment's TMPDIR
    run_dir: str
    control_path: Path | None = None  # the run's ssh master (None: each run connects on its own)
    registry: Registry | None = None  # where a started run's process is tracked (a sync's)
    stop: Callable[[], bool] = lambda: False  # an abort was requested: waits return None
    shared_dirs: bool = False  # the tagged runs share one bin/ and tmp/ below ``state`` (a sync)
    run_dir_var: bool = False  # pass ``pcswitcher_run_dir`` (the run's agents made the directory)
    running: dict[PlaybookRun, str] = field(default_factory=dict)  # started, not waited for -> name
    _count: int = 0

    # -- building --------------------------------------------------------------------------------
    def build(  # noqa: PLR0913 -- keyword-only, one per PlaybookRun option it passes on or defaults
        self,
        playbook: Path,
        ident: str,
        extravars: Mapping[str, Any],
        *,
        tags: Sequence[str] = (),
        skip_tags: Sequence[str] = (),
        check: bool = False,
        tagged: bool = True,
        on_event: EventHandler | None = None,
        envvars: Mapping[str, str] | None = None,
        limit: str | None = None,
        private_data_dir: Path | None = None,
    ) -> PlaybookRun:
        """A run of ``playbook``; ``tagged``: part of the run (its tag, its working directory), else
        a run that must not live in it (the cleanup playbook, which removes it)."""
        self._count += 1
        pdd = private_data_dir or self.state / f"{self._count:02d}-{ident}"
        if tagged and self.run_dir_var:  # its temp files (the play environment's TMPDIR) go there
            extravars = {"pcswitcher_run_dir": self.run_dir, **extravars}
        return PlaybookRun(
            playbook,
            project_dir=self.root,
            private_data_dir=pdd,
            ident=ident,
            inventory=self.inventory.resolve(),
            limit=limit or self.limit,
            extravars=extravars,
            envvars={**self._envvars(pdd, tagged), **(envvars or {})},
            tags=tags,
            skip_tags=skip_tags,
            check=check,
            on_event=on_event,
        )

    def _envvars(self, pdd: Path, tagged: bool) -> dict[str, str]:
        own = self.state if tagged and self.shared_dirs else pdd
        env = standard_envvars(
            project_dir=self.root,
            bin_dir=prepare_bin_dir(own / "bin"),
            control_path=self.control_path,
            run_dir=self.run_dir if tagged else None,
            local_tmp=own / "tmp",
            ssh_keepalive=1,
        )
        if tagged:
            env[TAG] = self.run_id
        return env

    # -- a sync's runs: started, waited for, stopped -------------------------------------------------
    def start(self, run: PlaybookRun, name: str) -> None:
        """Start a playbook; its process tree is tracked and :meth:`stop_all` stops it."""
        self.running[run] = name
        run.start()
        proc = run.wait_for_process()
        if proc is not None:
            self._track(proc, name)

    def _track(self, proc: psutil.Process, name: str) -> None:
        if self.registry is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                self.registry.add_process(proc, f"playbook:{name}")

    def wait(self, run: PlaybookRun) -> PlaybookResult | None:
        """Wait for a started playbook to end (None when an abort came first: it stays running, for
        the abort path to stop)."""
        while not run.join(0.02):
            if self.stop():
                return None
        self.running.pop(run, None)
        run.scrub()
        return run.result()

    def play(self, run: PlaybookRun, name: str) -> PlaybookResult | None:
        """Start a playbook and wait for it; None (and nothing started) once an abort was requested."""
        if self.stop():
            return None
        self.start(run, name)
        return self.wait(run)

    def run_to_end(self, run: PlaybookRun, name: str, timeout: float | None = None) -> PlaybookResult:
        """Run a playbook outside a sync's abort path (the cleanup playbook, the safety commands):
        at most ``timeout`` seconds, stopped the clean way on an exception (Ctrl+C)."""
        return run.run_to_end(timeout, lambda proc: self._track(proc, name))

    def stop_all(self, quiet: bool = False) -> set[str]:
        """Stop every started run the clean way (SIGTERM to ansible-playbook, see runner.py) and
        return their names; ``quiet``: what the stopped runs say now is not news (their events go)."""
        stopped = set(self.running.values())
        for run in self.running:
            if quiet:
                run.on_event = None
            run.terminate()
        return stopped

    def end_all(self) -> None:
        """After :meth:`stop_all`: give ansible-playbook 1 s to end its tree, SIGKILL whatever of it
        is left, and let runner's threads return."""
        if self.registry is not None:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and self.registry.live_trees("playbook:"):
                time.sleep(0.02)
            leftovers = self.registry.kill_trees("playbook:")
            if leftovers:
                log.debug("killed %d local process(es) left by ansible-playbook", len(leftovers))
        for run in self.running:
            run.cancel()
            run.join(5)
            run.scrub()
        self.running.clear()
