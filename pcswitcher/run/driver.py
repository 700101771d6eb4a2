"""The driver: one ``pc-switcher sync``, from its inputs to its end record.

A sync (docs/architecture.md, "A run"):

1. the opening, here: the jobs and the config read and checked (:func:`prepare`); the first job's
   playbook started, held before its first task (gate.py), so that its start-up overlaps the
   driver's; the inventory read and TARGET resolved (:func:`resolve_target`); the source lock
   taken. Bad input exits 2, a held lock 3: the held playbook is stopped, nothing changed, nothing
   left. The signal handlers of the abort path (abort.py) are installed before it: a signal while
   the run opens is an abort request, met before the first step.
2. the run's steps (steps.py, :data:`~pcswitcher.run.steps.STEPS`), with the log set up; whatever
   stops them takes the abort path (:func:`~pcswitcher.run.steps.abort_path`);
3. the end record of the log, the lock released.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

from pcswitcher import paths
from pcswitcher.config.settings import load_config
from pcswitcher.errors import ExitCode, UsageError
from pcswitcher.jobs.discovery import discover_jobs
from pcswitcher.jobs.playbooks import Launcher
from pcswitcher.jobs.registry import Registry
from pcswitcher.remote.agent import new_run_id, run_dir
from pcswitcher.remote.inventory import Target, load_inventory
from pcswitcher.run import logs
from pcswitcher.run.abort import AbortController, Cause
from pcswitcher.run.cleanup import JIDS_FILE
from pcswitcher.run.events import EventLog
from pcswitcher.run.lock import SyncLock
from pcswitcher.run.outcome import JobOutcome, log_end, log_failure
from pcswitcher.run.steps import (
    Prepared,
    RunContext,
    SyncOptions,
    remove_run_files,
    run_steps,
    safety_and_carry,
    start_first_job,
    take_lock,
)
from pcswitcher.run.ui import Ui

__all__ = ["Prepared", "Sync", "SyncOptions", "prepare", "resolve_target"]

log = logging.getLogger("pcswitcher")


def prepare(options: SyncOptions) -> Prepared:
    """Read and check the jobs and the config; raises a UsageError (exit 2) naming the problem and
    the fix. The inventory comes later (:func:`resolve_target`): the first job's playbook starts
    in between, so that its start-up overlaps the inventory's parsing."""
    root = paths.project_root()
    jobs = discover_jobs(root)
    config = load_config(options.config_path, jobs)
    enabled = config.enabled_jobs()
    selected = enabled
    if options.only:
        listed = {job.name: job for job in config.jobs}
        for name in options.only:
            if name not in jobs:
                raise UsageError(
                    f"--only: unknown job {name!r} (known jobs: {', '.join(sorted(jobs))})",
                    "name jobs from the config's `jobs:` list",
                )
            if name not in listed or not listed[name].enabled:
                raise UsageError(
                    f"--only: job {name!r} is not enabled in {config.path}",
                    f"set `{name}: true` under `jobs:` in the config, or leave it out of --only",
                )
        selected = [job for job in enabled if job.name in options.only]
    skipped = [job for job in config.jobs if job not in selected]
    if not selected:
        raise UsageError(f"no job is enabled in {config.path}", "enable at least one job under `jobs:`")
    return Prepared(root, jobs, config, selected, skipped, options.inventory_path)


def resolve_target(inventory_path: Path, name: str) -> Target:
    """Load the inventory and resolve TARGET; raises a UsageError (exit 2) naming the problem."""
    target = load_inventory(inventory_path).resolve(name)
    if target.connection not in {"ssh", "paramiko", "smart"}:
        raise UsageError(
            f"target {target.name} uses ansible_connection={target.connection}; pc-switcher needs ssh",
            "remove ansible_connection from the target's inventory entry",
        )
    return target


def _context(options: SyncOptions, prepared: Prepared, ui: Ui) -> RunContext:
    run_id = new_run_id()
    local_run_dir = Path(run_dir(run_id))
    # a dry-run writes nothing on either machine: its state lives in the run's temp dir
    state = local_run_dir / "state" if options.dry_run else paths.state_dir()
    run_state = state / "runs" / run_id
    abort = AbortController()
    registry = Registry(run_id, run_state / JIDS_FILE)
    source = socket.gethostname()
    launcher = Launcher(
        prepared.root,
        prepared.inventory_path,
        options.target,
        run_id,
        state=run_state,
        run_dir=str(local_run_dir),
        control_path=local_run_dir / "cm",
        registry=registry,
        stop=abort.event.is_set,
        shared_dirs=True,
        run_dir_var=True,
    )
    outcomes = [JobOutcome(job.name) for job in prepared.selected]
    outcomes += [
        JobOutcome(job.name, "skipped", detail="disabled" if not job.enabled else "not in --only")
        for job in prepared.skipped
    ]
    events = EventLog(ui, registry, source, options.target, options.dry_run)
    lock = SyncLock(paths.lock_path())
    return RunContext(
        options,
        prepared,
        ui,
        run_id,
        abort,
        lock,
        registry,
        launcher,
        events,
        local_run_dir,
        run_state,
        source,
        outcomes=outcomes,
    )


class Sync:
    """One run of ``pc-switcher sync``: its opening, its steps (steps.py), its end."""

    def __init__(self, options: SyncOptions, prepared: Prepared, ui: Ui) -> None:
        self.options = options
        self.ui = ui
        self.ctx = _context(options, prepared, ui)
        self.run_id = self.ctx.run_id
        self.log_path = self.ctx.run_state.parent.parent / "logs" / f"{self.run_id}.jsonl"

    def run(self) -> ExitCode:
        ctx = self.ctx
        # Ansible's temp dir of this process (made when the inventory is read, removed at exit)
        # lives in the run's directory, which the next sync removes even after a kill -9
        os.environ["ANSIBLE_LOCAL_TEMP"] = str(ctx.local_run_dir)
        # the handlers come first: a signal while the run opens (the first playbook started, the
        # lock taken) is an abort request like any later one, and the steps' loop takes the abort
        # path before its first step; entry()'s SIGTERM exception (errors.Terminated) would unwind
        # past the opening instead, without the abort path's sweep of what it started
        ctx.abort.install_signal_handlers()
        try:
            self._open()
            safety_and_carry(ctx)
            return self._run_opened()
        finally:
            ctx.abort.restore_signal_handlers()

    def _run_opened(self) -> ExitCode:
        ctx = self.ctx
        config = ctx.p.config
        try:
            logs.setup_logging(
                self.log_path, config.file_log_level, self.ui.log_handler(), config.terminal_log_level
            )
            ctx.abort.set_force_action(self._force)
            try:
                code = run_steps(ctx)
            except BaseException as exc:
                log_failure(exc, self.options.target, ctx.outcomes, self.log_path)
                raise
            log_end(
                code, ctx.outcome_text or f"sync to {self.options.target} ended", ctx.outcomes, self.log_path
            )
            return code
        finally:
            self.ui.stop()
            ctx.lock.release()
            logs.shutdown_logging()

    def _open(self) -> None:
        """The first job's playbook started, held (its ~0.7 s start-up overlaps the inventory, the
        lock and the agents); the target resolved; the lock taken. On bad input or a held lock the
        held playbook is stopped, having touched nothing, and the run's files go."""
        ctx = self.ctx
        ctx.early = start_first_job(ctx, self.options.target)
        try:
            ctx.target = resolve_target(ctx.p.inventory_path, self.options.target)
            ctx.launcher.limit = ctx.events.target = ctx.target.name
            if ctx.target.name != self.options.target:  # TARGET named the host by its address
                ctx.early.discard()
                ctx.early = None  # started again with the host's name, after the agents
            take_lock(ctx)
        except BaseException:
            if ctx.early is not None:
                ctx.early.discard()
            remove_run_files(ctx, state=True)
            raise

    def _force(self, cause: Cause) -> None:
        """Second Ctrl+C: SIGKILL every local tree, best-effort remote sweep, exit now."""
        ctx = self.ctx
        ctx.registry.kill_trees("playbook:")
        target = ctx.agents.get(ctx.host.name)
        if target is not None and target.alive:
            target.sweep(ctx.registry.jids(), timeout=0.4)
        for agent in ctx.agents.values():
            agent.detach()  # EOF: each agent sweeps its machine once more and exits
        log.warning(
            "forced exit; run `pc-switcher cleanup %s --run %s` to be thorough", ctx.host.name, self.run_id
        )
        text = f"sync to {ctx.host.name} forced to stop: {ctx.abort.message}"
        log_end(cause.exit_code, text, ctx.outcomes, self.log_path)
        logs.shutdown_logging()
        # not ui.stop(): this runs in a signal handler and the display's lock may be held by the
        # code it interrupted; just give the terminal its cursor back
        if self.ui.interactive:
            with contextlib.suppress(OSError):
                os.write(2, b"\x1b[?25h\n")
        ctx.lock.release()
        os._exit(int(cause.exit_code))

    def result(self) -> dict[str, Any]:
        """The machine-readable result of the run (``pc-switcher sync --json``, docs/cli.md)."""
        ctx = self.ctx
        cause = ctx.abort.cause
        return {
            "schema": "pc-switcher/sync-result/1",
            "run_id": self.run_id,
            "source": ctx.source_label,
            "target": ctx.host.name,
            "dry_run": self.options.dry_run,
            "exit_code": int(ctx.exit_code) if ctx.exit_code is not None else None,
            "outcome": ctx.outcome_text,
            "abort_cause": cause.value if cause else None,
            "jobs": [o.as_dict() for o in ctx.outcomes],
            "snapshots": ctx.snapshots,
            "log": None if self.options.dry_run else str(self.log_path),
        }
