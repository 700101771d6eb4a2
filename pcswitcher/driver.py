"""The driver: one sync, from checks to summary, and the abort path.

Order of a sync (docs/architecture.md):
1. load jobs and config; start the first job's playbook, held before its first task by the gate
   (plugins/callback/pcswitcher_gate.py) so that its start-up overlaps the driver's; load the
   inventory, resolve the target                             (bad input: exit 2; the held
   playbook is stopped, nothing changed, nothing left)
2. take the source lock                                     (held: exit 3, the same)
3. start the agents on both machines; refuse a self-sync; preflight disk check; the sync history
   (read by the agents) and its questions
4. the first job's playbook runs its validate phase and waits at the gate; meanwhile the snapshot
   checks and the other jobs' validate phases (``--tags validate``) run   (nothing has changed yet)
5. pre-sync snapshots; release the first job; run the others (``--skip-tags validate``)
6. record the history, post-sync snapshots; close the agents, release the lock, print the summary

Whatever stops a run — Ctrl+C, SIGTERM, low disk, lost link, a failed job — takes :meth:`Sync._abort`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from . import logs, paths
from .abort import AbortController, Cause
from .agent import TAG, remove_stale_run_dirs, run_dir
from .agent_session import AgentSession, local_agent, remote_agent
from .carry import Carry, way_back_note
from .cleanup import JIDS_FILE, cleanup_playbook_run
from .config import Config, JobConfig, load_config
from .errors import ExitCode, LockHeld, PcsError, UsageError
from .inventory import Target, load_inventory
from .jobs import JobSpec, discover_jobs
from .lock import SyncLock
from .monitor import Monitor
from .registry import Registry
from .runner import PlaybookResult, PlaybookRun, failure_reason, prepare_bin_dir, standard_envvars
from .safety import HistoryRefused, Safety, SafetyError, confirm_history
from .ssh import close_master
from .summary import job_summary
from .ui import Ui

log = logging.getLogger("pcswitcher")


@dataclass
class SyncOptions:
    target: str
    config_path: Path
    inventory_path: Path
    dry_run: bool = False
    assume_yes: bool = False
    only: Sequence[str] = ()
    allow_first_sync: bool = False
    allow_out_of_order: bool = False


@dataclass
class JobOutcome:
    name: str
    status: str = "not run"  # succeeded | failed | skipped | not run | aborted
    duration: float = 0.0
    detail: str = ""
    changed: int = 0
    result: dict[str, Any] = field(default_factory=dict)  # the job's set_stats data

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "duration": round(self.duration, 3),
            "changed": self.changed,
            "detail": self.detail,
            "result": self.result,
        }


@dataclass
class Prepared:
    """Everything checked before the run starts anything."""

    root: Path
    jobs: dict[str, JobSpec]
    config: Config
    selected: list[JobConfig]
    skipped: list[JobConfig]
    inventory_path: Path


def _result_summary(spec: JobSpec, stats: dict[str, Any], dry_run: bool) -> str:
    """What the job changed (or would change) for the summary: its ``<job>_result`` in the words of
    its declaration (pcswitcher/summary.py)."""
    data = stats.get(f"{spec.name}_result")
    return job_summary(data if isinstance(data, dict) else None, spec.summary, spec.summary_dry_run, dry_run)


def _delegated_to_source(delegated: dict[str, Any]) -> bool:
    """A task delegated to this machine (``delegate_to: localhost``): ansible-core 2.19 keeps only
    ``ansible_host``/``_port``/``_user``/``_connection`` of the delegated vars in the result, older
    versions ``ansible_delegated_host`` too; the implicit localhost connects with ``local``."""
    if delegated.get("ansible_connection") == "local":
        return True
    names = {"localhost", "127.0.0.1", "::1"}
    return delegated.get("ansible_delegated_host") in names or delegated.get("ansible_host") in names


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


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


def _log_stale_run_dirs(host: str, removed: list[str]) -> None:
    for path in removed:
        log.info("removed %s on %s, left by a run that was killed", path, host, extra={"host": host})


class Sync:
    """One run of ``pc-switcher sync``."""

    def __init__(self, options: SyncOptions, prepared: Prepared, ui: Ui) -> None:
        self.options = options
        self.p = prepared
        self.ui = ui
        self.run_id = new_run_id()
        self.abort = AbortController()
        self.lock = SyncLock(paths.lock_path())
        self.local_run_dir = Path(run_dir(self.run_id))
        # a dry-run writes nothing on either machine: its state lives in the run's temp dir
        state = self.local_run_dir / "state" if options.dry_run else paths.state_dir()
        self.run_state = state / "runs" / self.run_id
        self.registry = Registry(self.run_id, self.run_state / JIDS_FILE)
        self.control_path = self.local_run_dir / "cm"
        self.source_label = socket.gethostname()
        self.agents: dict[str, AgentSession] = {}
        self.monitor: Monitor | None = None
        self.running: dict[PlaybookRun, str] = {}  # the playbooks started and not yet waited for -> job
        self.current_job: str | None = None
        self.outcomes = [JobOutcome(job.name) for job in prepared.selected]
        self.outcomes += [
            JobOutcome(job.name, "skipped", detail="disabled" if not job.enabled else "not in --only")
            for job in prepared.skipped
        ]
        self._counter = 0
        # a playbook beyond the checks has been started (the first job released, or a later job's
        # run): from then on an error must take the abort path, cleanup playbook included
        self._changing = False
        self._muted = False
        self._finished = False
        self.log_path = state / "logs" / f"{self.run_id}.jsonl"
        self.exit_code: ExitCode | None = None
        self._target: Target | None = None  # resolve_target(), once the first job's playbook is started
        self.safety: Safety | None = None
        self.carry: Carry | None = None
        self.snapshots: dict[str, Any] = {}
        self.stale_run_dirs: list[str] = []  # removed once the lock is held (remove_stale_run_dirs)

    @property
    def target(self) -> Target:
        if self._target is None:
            raise RuntimeError("the target is not resolved yet")
        return self._target

    # -- entry -----------------------------------------------------------------------------------
    def run(self) -> ExitCode:
        config = self.p.config
        # the first job's playbook starts before the inventory is read: its ~0.7 s start-up
        # overlaps the driver's. It waits before its first task for begin() (agents up, history
        # questions answered); on bad input or a held lock it is stopped, having touched nothing.
        # Ansible's temp dir of this process (made when the inventory is read, removed at exit)
        # lives in the run's directory, which the next sync removes even after a kill -9
        os.environ["ANSIBLE_LOCAL_TEMP"] = str(self.local_run_dir)
        early = self._start_gated(self.p.selected[0], self.options.target)
        first: PlaybookRun | None = early
        try:
            self._target = resolve_target(self.p.inventory_path, self.options.target)
            if self.target.name != self.options.target:  # TARGET named the host by its address
                self._discard(early, remove_files=False)
                first = None  # started again with the host's name, after the agents
            self.lock.acquire(target=self.target.name, run_id=self.run_id)
            # holding the lock, no other run of this machine is alive: what a killed one left goes
            self.stale_run_dirs = remove_stale_run_dirs(self.run_id)
        except BaseException:
            self._discard(early)
            raise
        self.safety = Safety.from_config(
            self.p.root,
            config,
            self.run_id,
            self._safety_play,
            dry_run=self.options.dry_run,
            target_label=self.target.name,
            history_io=self._history_io,
        )
        self.carry = Carry(
            self.p.root,
            self._safety_play,
            self.options.config_path,
            self.p.inventory_path,
            self.target.name,
            dry_run=self.options.dry_run,
            start=self._safety_start,
        )
        try:
            logs.setup_logging(
                self.log_path, config.file_log_level, self.ui.log_handler(), config.terminal_log_level
            )
            self.abort.install_signal_handlers()
            self.abort.set_force_action(self._force)
            try:
                code = self._run(first)
            except BaseException as exc:
                self._log_failure(exc)
                raise
            self._log_end(code)
            return code
        finally:
            self.abort.restore_signal_handlers()
            self.ui.stop()
            self.lock.release()
            logs.shutdown_logging()

    def _discard(self, run: PlaybookRun, remove_files: bool = True) -> None:
        """Stop the first job's playbook, still held before its first task (bad input, lock held,
        another limit): it has changed nothing. Its files go too, unless the run goes on."""
        self._stop_held()
        self._muted = False
        if remove_files:
            shutil.rmtree(self.local_run_dir, ignore_errors=True)
            shutil.rmtree(self.run_state, ignore_errors=True)

    def _stop_held(self) -> None:
        """Stop the playbooks started before any change (held by the gate), quietly: what a stopped
        run says is not news."""
        self._muted = True
        for run in self.running:
            run.terminate()
        self._stop_local_trees()

    def _announce(self) -> None:
        """The run's first records and the display's start."""
        names = [j.name for j in self.p.selected]
        log.info(
            "pc-switcher run %s: %s -> %s%s",
            self.run_id,
            self.source_label,
            self.target.describe(),
            " (dry-run)" if self.options.dry_run else "",
            extra={"fields": {"run_id": self.run_id, "jobs": names}},
        )
        if self.lock.stale:
            log.info("cleared a stale lock left by pid %s", self.lock.stale.get("pid"))
        _log_stale_run_dirs(self.source_label, self.stale_run_dirs)
        self.ui.start(self.target.name, self.run_id, names, self.options.dry_run)

    def _run(self, first: PlaybookRun | None) -> ExitCode:
        p = self.p
        assert self.safety is not None
        self._announce()
        try:
            # the first job's playbook (started in run(), or now when TARGET was an address) waits
            # for begin() (agents up, history questions answered) before its first task, checks
            # itself, then holds at the gate while the snapshot and other jobs' checks run. Until
            # it is released nothing has changed, and a failure only stops it (_teardown), without
            # the cleanup playbook.
            self._spawn_agents()
            if first is None:
                first = self._start_gated(p.selected[0], self.target.name)
            if not self.options.dry_run:
                self._prune_old_runs()  # while the agents' ssh handshake runs
            self._agents_ready()
            if self.abort.requested:
                return self._abort()
            assert self.monitor is not None
            self.monitor.preflight()
            self.monitor.start()
            # nothing has changed yet: the history questions, then every check of every job
            confirm_history(
                self.safety.history_warnings(),
                self.ui,
                dry_run=self.options.dry_run,
                allow_first_sync=self.options.allow_first_sync,
                allow_out_of_order=self.options.allow_out_of_order,
                assume_yes=self.options.assume_yes,
            )
            # the agents hold the target (lock, dead-man switch) and the sync is wanted: the first
            # job may check it now (its start-up is behind it already)
            self.ui.step(1, len(p.selected), p.selected[0].name, "validate")
            first.begin()
            assert self.carry is not None
            self.carry.start_validate()  # beside the other checks; a newer pc-switcher on the target
            self.safety.validate()
            if not self._validate_all(first):
                return self._finish(self._abort() if self.abort.requested else ExitCode.FAILED)
            self.carry.validate()  # refuses the sync
            if self.abort.requested:
                return self._abort()
            return self._sync(first)
        except HistoryRefused:
            raise  # nothing has changed; the CLI says why (exit 2)
        except SafetyError as exc:
            # a failed snapshot or safety check: stop on the abort path, before any (further) change
            self.abort.request(Cause.ERROR, exc.message, logging.CRITICAL)
            return self._abort()
        except BaseException as exc:
            # a driver error in the middle of a run (unreachable target, no heartbeat, a bug):
            # whatever was started is stopped on the same path, then the CLI reports the error
            if not self._finished and self._changing:
                with contextlib.suppress(Exception):
                    self.abort.request(Cause.ERROR, f"aborting: {exc}", logging.CRITICAL)
                    self._abort()
            raise
        finally:
            if not self._finished:
                self._teardown()

    def _sync(self, first: PlaybookRun) -> ExitCode:
        """Everything was checked: the snapshots before, every job in order, then (all succeeded)
        the carry, the history record and the snapshots after. Called inside :meth:`_run`'s ``try``:
        its errors take the same paths."""
        assert self.safety is not None
        assert self.carry is not None
        self.snapshots["pre"] = self.safety.snapshot("pre")
        for index, job in enumerate(self.p.selected, start=1):
            if self.abort.requested:
                return self._abort()
            result = self._run_job(index, job, first if index == 1 else None)
            if self.abort.requested:
                return self._abort()
            if result is None or not result.ok:
                detail = self._outcome(job.name).detail  # _run_job's reason for the failure
                self.abort.request(
                    Cause.JOB_FAILED, f"job {job.name} failed: {detail}", logging.ERROR, job=job.name
                )
                return self._abort()
        if self.abort.requested:
            return self._abort()
        # all jobs succeeded: pc-switcher, its config and inventory go too (the way back); then
        # the target was synced, even if the post snapshot should fail
        self.carry.carry()
        self.safety.record_history()
        self.snapshots["post"] = self.safety.snapshot("post")
        way_back_note(self.p.inventory_path, self.target.name)
        return self._finish(ExitCode.OK)

    # -- agents ------------------------------------------------------------------------------------
    def _spawn_agents(self) -> None:
        """Start both agents' processes; :meth:`_agents_ready` waits for them (the ssh handshake
        meanwhile overlaps the first job's start)."""
        if self.target.name == self.source_label:
            # an inventory that lists both machines works from either side: the machine that runs
            # the sync is never its target (and its agents are told apart by these names)
            raise LockHeld(
                f"target {self.target.name} is this machine (host name {self.source_label}); "
                "a machine cannot sync to itself",
                "pick another target from the inventory",
            )
        cfg = self.p.config
        silent_after = max(cfg.link_timeout * 2, 10.0)  # the agent's own dead-man timeout
        source = local_agent(
            self.run_id, self.source_label, cfg.disk.source_paths, silent_after, self.registry
        )
        target = remote_agent(
            self.target,
            self.run_id,
            cfg.disk.target_paths,
            silent_after,
            self.control_path,
            cfg.link_timeout,
            self.registry,
        )
        for agent in (source, target):
            agent.on_progress = self._on_progress
            self.agents[agent.label] = agent
        source.spawn()
        target.spawn()

    def _agents_ready(self) -> None:
        """Wait for both agents' hello; refuse a self-sync; set up the monitor."""
        cfg = self.p.config
        source = self.agents[self.source_label]
        # an abort (Ctrl+C) does not wait for the agents' hello: the caller takes the abort path
        source.wait_ready(cancel=self.abort.event)
        hello = self.agents[self.target.name].wait_ready(cancel=self.abort.event)
        if self.abort.requested:
            return
        remote_host = str(hello.get("host", ""))
        log.debug(
            "agents up: source pid %s, target %s pid %s",
            source.hello.get("pid"),
            remote_host,
            hello.get("pid"),
        )
        _log_stale_run_dirs(self.target.name, hello.get("stale") or [])
        if remote_host and remote_host == self.source_label:
            raise LockHeld(  # exit 3, as when the target's agent finds this machine's own lock
                f"target {self.target.name} is this machine (host name {remote_host}); "
                "a machine cannot sync to itself",
                "pick another target from the inventory",
            )
        self.monitor = Monitor(self.agents, self.target.name, cfg.disk, cfg.link_timeout, self.abort)

    # -- jobs --------------------------------------------------------------------------------------
    def _outcome(self, name: str) -> JobOutcome:
        return next(o for o in self.outcomes if o.name == name)

    def _validate_all(self, first: PlaybookRun) -> bool:
        """The validate phase of every job; the first job's runs in its own (gated) playbook."""
        selected = self.p.selected
        for index, job in enumerate(selected[1:], start=2):
            if self.abort.requested:
                return False
            self.ui.step(index, len(selected), job.name, "validate")
            result = self._play(job, tags=["validate"], skip_tags=[], phase="validate")
            if result is None or not result.ok:
                return self._validation_failed(job, result)
        if not self._await_gate(selected[0], first):
            return False
        log.info("all %d job(s) validated", len(selected))
        return True

    def _await_gate(self, job: JobConfig, run: PlaybookRun) -> bool:
        """Wait until the first job's run holds at the gate, or ends (then its checks failed, or it
        has no task after them)."""
        while not run.held():
            if self.abort.requested:
                return False
            if run.join(0.02):
                result = self._end_run(run)
                if result is not None and result.ok:
                    return True
                return self._validation_failed(job, result)
        return True

    def _validation_failed(self, job: JobConfig, result: PlaybookResult | None) -> bool:
        self._link_lost()  # then the lost link is the cause, and the validation was aborted by it
        outcome = self._outcome(job.name)
        outcome.status = "aborted" if self.abort.requested else "failed"
        outcome.detail = result.reason("validation failed") if result else "validation failed"
        if not self.abort.requested:
            log.error("validation of %s failed: %s", job.name, outcome.detail, extra={"job": job.name})
            self.abort.request(Cause.JOB_FAILED, f"validation of {job.name} failed", logging.ERROR)
        return False

    def _link_lost(self) -> bool:
        """Before a failed job is blamed: is the target's link gone? Then that is the abort's cause
        (Ansible's tasks fail as unreachable through the same ssh master, often before the
        monitor's next look)."""
        return self.monitor is not None and self.monitor.link_lost()

    def _run_job(self, index: int, job: JobConfig, held: PlaybookRun | None) -> PlaybookResult | None:
        """Run a job's changes: release its held run, or start one without its validate phase."""
        self.ui.step(index, len(self.p.selected), job.name, "sync")
        outcome = self._outcome(job.name)
        started = time.monotonic()
        if held is not None:
            self.current_job = job.name
            self._changing = True
            held.release()
            result = self._end_run(held)
        else:
            result = self._play(job, tags=[], skip_tags=["validate"], phase="sync")
        outcome.duration = time.monotonic() - started
        if result is not None and not self.abort.requested:
            self._drain_progress()  # the job's last progress lines come before its summary line
        if result is None or not result.ok:
            self._link_lost()  # then the lost link is the cause, and the job was aborted by it
        if self.abort.requested:
            outcome.status = "aborted"
            outcome.detail = self.abort.message
        elif result is not None and result.ok:
            outcome.status = "succeeded"
            outcome.changed = result.changed
            outcome.result = result.set_stats
            # the count of changed tasks is Ansible's, not the user's: it goes to the log only
            outcome.detail = _result_summary(self.p.jobs[job.name], result.set_stats, self.options.dry_run)
            log.debug(
                "%s: %d task(s) changed",
                job.name,
                result.changed,
                extra={"job": job.name, "fields": {"changed": result.changed}},
            )
        else:
            outcome.status = "failed"
            outcome.detail = result.reason("the playbook failed") if result else "the playbook failed"
        self.ui.job_finished(job.name, outcome.status, outcome.duration, outcome.detail)
        return result

    def _drain_progress(self) -> None:
        """Wait until both agents have passed on every progress line written so far (the job's
        playbook has ended: its lines are all written)."""
        for agent in self.agents.values():
            if agent.alive and not agent.drain(timeout=2.0):
                log.debug("the agent on %s did not confirm its progress lines", agent.label)

    def _envvars(self, tagged: bool) -> dict[str, str]:
        env = standard_envvars(
            project_dir=self.p.root,
            bin_dir=prepare_bin_dir(self.run_state / "bin"),
            control_path=self.control_path,
            run_dir=str(self.local_run_dir) if tagged else None,
            local_tmp=self.run_state / "tmp",
            ssh_keepalive=1,
        )
        if tagged:
            env[TAG] = self.run_id
        return env

    def _job_run(
        self,
        job: JobConfig,
        tags: list[str],
        skip_tags: list[str],
        phase: str,
        gate: Path | None = None,
        limit: str | None = None,
    ) -> PlaybookRun:
        spec = self.p.jobs[job.name]
        extravars: dict[str, Any] = {
            "pcswitcher_run_id": self.run_id,
            "pcswitcher_progress_file": f"{self.local_run_dir}/progress.jsonl",
            "pcswitcher_dry_run": self.options.dry_run,
            "pcswitcher_ssh_control_path": str(self.control_path),
            "pcswitcher_disk_runtime_minimum": self.p.config.disk.runtime_minimum.as_var(),
            **spec.extravars(job.settings),
        }
        run = self._new_run(
            spec.playbook,
            f"{job.name}-{phase}",
            extravars,
            tags,
            skip_tags,
            tagged=True,
            job=job.name,
            gate=gate,
            limit=limit,
        )
        self.current_job = job.name
        return run

    def _play(
        self, job: JobConfig, tags: list[str], skip_tags: list[str], phase: str
    ) -> PlaybookResult | None:
        run = self._job_run(job, tags, skip_tags, phase)
        return self._wait(run, job.name)

    def _start_gated(self, job: JobConfig, limit: str) -> PlaybookRun:
        """Start the whole playbook of ``job`` on host ``limit``: it waits for begin() before its
        first task and holds after its validate phase (see _await_gate)."""
        self.local_run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        run = self._job_run(job, [], [], "sync", gate=self.local_run_dir / f"gate-{job.name}", limit=limit)
        self._launch(run, job.name)
        return run

    def _new_run(
        self,
        playbook: Path,
        ident: str,
        extravars: dict[str, Any],
        tags: list[str],
        skip_tags: list[str],
        *,
        tagged: bool,
        job: str | None,
        gate: Path | None = None,
        limit: str | None = None,
    ) -> PlaybookRun:
        self._counter += 1
        self._changing = self._changing or (tagged and "validate" not in tags and gate is None)
        if tagged:  # its temp files (TMPDIR of the play environment) go into the run's directory
            extravars = {"pcswitcher_run_dir": str(self.local_run_dir), **extravars}
        run = PlaybookRun(
            playbook,
            project_dir=self.p.root,
            private_data_dir=self.run_state / f"{self._counter:02d}-{ident}",
            ident=ident,
            inventory=self.p.inventory_path.resolve(),
            limit=limit or self.target.name,
            extravars=extravars,
            envvars=self._envvars(tagged),
            tags=tags,
            skip_tags=skip_tags,
            check=self.options.dry_run and tagged,
            on_event=lambda event: self._on_event(job, event),
            gate=gate,
        )
        return run

    def _launch(self, run: PlaybookRun, job: str) -> None:
        """Start a playbook; its process tree is tracked and the abort path stops it."""
        self.running[run] = job
        run.start()
        proc = run.wait_for_process()
        if proc is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                self.registry.add_process(proc, f"playbook:{job}")

    def _end_run(self, run: PlaybookRun) -> PlaybookResult | None:
        """Wait for a started playbook to end (None when an abort came first: it stays running)."""
        while not run.join(0.02):
            if self.abort.requested:
                return None
        self.running.pop(run, None)
        run.scrub()
        return run.result()

    def _wait(self, run: PlaybookRun, job: str) -> PlaybookResult | None:
        self._launch(run, job)
        return self._end_run(run)

    # -- events and progress -------------------------------------------------------------------
    def _host_of(self, data: dict[str, Any]) -> str:
        res = data.get("res") or {}
        delegated = res.get("_ansible_delegated_vars")
        if isinstance(delegated, dict) and _delegated_to_source(delegated):
            return self.source_label
        return str(data.get("host") or self.target.name)

    def _on_event(self, job: str | None, event: dict[str, Any]) -> None:
        if self._muted:
            return
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        task = str(data.get("task") or "")
        extra: dict[str, Any] = {"job": job, "host": self._host_of(data) if data.get("host") else None}
        if kind == "playbook_on_task_start" and job is not None:
            self.ui.progress(job, None, None, task)
            log.debug("task: %s", task, extra=extra)
        elif kind in {"runner_on_ok", "runner_on_async_poll", "runner_on_async_ok"}:
            jid = res.get("ansible_job_id") or data.get("jid")
            if jid:
                self.registry.add_jid(str(extra["host"]), str(jid))
            if kind != "runner_on_ok":
                return
            if res.get("changed"):
                log.info(
                    "%s: %s",
                    "would change" if self.options.dry_run else "changed",
                    task,
                    extra={**extra, "fields": {"task": task, "action": data.get("task_action")}},
                )
            elif data.get("task_action") in {"ansible.builtin.debug", "debug"} and res.get("msg"):
                log.info("%s", res.get("msg"), extra=extra)
            else:
                log.debug("ok: %s", task, extra=extra)
        elif kind == "runner_on_failed":
            level = logging.WARNING if data.get("ignore_errors") else logging.ERROR
            log.log(level, "failed: %s: %s", task, failure_reason(res), extra=extra)
        elif kind == "runner_on_unreachable":
            log.error("unreachable: %s", str(res.get("msg") or "").strip(), extra=extra)
        elif kind == "runner_on_skipped":
            log.debug("skipped: %s", task, extra=extra)
        elif kind == "warning":
            log.warning("%s", str(data.get("warning") or event.get("stdout") or "").strip(), extra=extra)
        elif kind in {"verbose", "deprecated", "error"} and event.get("stdout"):
            # Ansible's own output goes to the log, not to the screen
            log.debug("ansible: %s", str(event["stdout"]).strip(), extra=extra)

    def _on_progress(self, host: str, line: dict[str, Any]) -> None:
        job = self.current_job
        if job is None:
            return
        percent = line.get("percent")
        item = line.get("item")
        if isinstance(percent, int | float) or isinstance(item, str):
            self.ui.progress(
                job,
                host,
                float(percent) if isinstance(percent, int | float) else None,
                item if isinstance(item, str) else None,
            )
        message = line.get("message")
        if isinstance(message, str) and message:
            level = logging.getLevelName(str(line.get("level", "INFO")).upper())
            log.log(
                level if isinstance(level, int) else logging.INFO,
                "%s",
                message,
                extra={"job": job, "host": host},
            )

    # -- the abort path --------------------------------------------------------------------------
    def _abort(self) -> ExitCode:
        """Steps 2–6 of the abort path (step 1, logging the cause, happened in AbortController.request)."""
        cause = self.abort.cause or Cause.ERROR
        started = time.monotonic()
        target = self.agents.get(self.target.name)
        source = self.agents.get(self.source_label)
        # 3 + 4 at once: SIGTERM to ansible-playbook (clean stop of workers and ssh clients) and the
        # target's agent kills the run's tagged processes through the open connection
        interrupted = set(self.running.values())  # the jobs whose playbook the abort stops
        for run in self.running:
            run.terminate()
        if cause is Cause.LINK and target is not None:
            # the master's connection is frozen or gone: drop it, so that the cleanup playbook
            # connects afresh instead of multiplexing over a dead link
            target.kill()
        if target is not None and target.alive:
            target.send(" ".join(["sweep", *self.registry.jids()]))
        self._stop_local_trees()
        if source is not None and source.alive:
            report = source.sweep(self.registry.jids(), timeout=3)
            self._log_sweep(self.source_label, report)
        if target is not None and target.alive:
            report = target.wait_for("swept", timeout=3)
            self._log_sweep(self.target.name, report)
        log.info("run stopped in %.2f s; running the cleanup playbook", time.monotonic() - started)
        # 5: the cleanup playbook
        self._cleanup_playbook()
        for outcome in self.outcomes:
            if outcome.status == "not run" and outcome.name in interrupted:
                outcome.status = "aborted"
        return self._finish(cause.exit_code)

    def _stop_local_trees(self) -> None:
        """Give ansible-playbook 1 s to end its tree, then SIGKILL whatever of it is left."""
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

    def _log_sweep(self, host: str, report: dict[str, Any] | None) -> None:
        if report is None:
            log.warning(
                "no answer from the agent on %s; the cleanup playbook takes over", host, extra={"host": host}
            )
            return
        killed = report.get("killed") or []
        log.info(
            "killed %d process(es) of the run on %s",
            len(killed),
            host,
            extra={"host": host, "fields": {"killed": killed, "remaining": report.get("remaining")}},
        )

    def _cleanup_playbook(self) -> None:
        self._counter += 1
        result = cleanup_playbook_run(
            root=self.p.root,
            inventory=self.p.inventory_path,
            target=self.target.name,
            run_id=self.run_id,
            jids=self.registry.jids(),
            private_data_dir=self.run_state / f"{self._counter:02d}-cleanup",
            on_process=self._track_cleanup,
            source=False,  # the source agent has swept this machine already
        )
        if result.ok:
            log.info("cleanup playbook done in %.1f s", result.duration)
        else:
            log.error(
                "cleanup playbook failed: %s; the target's agent sweeps the run when its session ends; "
                "run `pc-switcher cleanup %s --run %s` once the target is reachable",
                result.reason(result.status),
                self.target.name,
                self.run_id,
            )

    def _safety_run(self, playbook: Path, ident: str, extravars: dict[str, Any], check: bool) -> PlaybookRun:
        """A playbook of Safety or Carry, on the run's connection, registry and abort path."""
        run = self._new_run(
            playbook,
            ident,
            {
                "pcswitcher_progress_file": f"{self.local_run_dir}/progress.jsonl",
                "pcswitcher_dry_run": self.options.dry_run,
                **extravars,
            },
            [],
            [],
            tagged=True,
            job=None,
        )
        run.check = check
        return run

    def _safety_play(
        self, playbook: Path, ident: str, extravars: dict[str, Any], check: bool
    ) -> PlaybookResult | None:
        """Run such a playbook and wait for it."""
        run = self._safety_run(playbook, ident, extravars, check)
        self.current_job = None
        return self._wait(run, ident)

    def _safety_start(
        self, playbook: Path, ident: str, extravars: dict[str, Any], check: bool
    ) -> Callable[[], PlaybookResult | None]:
        """Start such a playbook without waiting for it; returns the wait."""
        run = self._safety_run(playbook, ident, extravars, check)
        self._launch(run, ident)
        return lambda: self._end_run(run)

    def _history_io(self, side: str, request: dict[str, Any]) -> dict[str, Any]:
        """How Safety reads and records the history during a sync: through the agents."""
        target = self.target
        agent = self.agents.get(target.name if side == "target" else self.source_label)
        if side == "target" and target.history_path:
            request = {**request, "path": target.history_path}  # the inventory host var wins
        if agent is None or not agent.alive:
            return {"error": f"the agent on the {side} is not running"}
        if side == "target" and request.get("action") == "record":
            flushed = self._flush_target(agent)
            if self.abort.requested:  # Ctrl+C, or the link lost, while the disks were flushed
                return {"error": "stopped while the target's disks were being flushed"}
            request = {**request, "flushed": flushed}  # else the agent flushes (without pings)
        reply = agent.request("history", request, timeout=max(self.p.config.link_timeout, 10.0))
        return reply if reply is not None else {"error": f"no answer from the agent on {agent.label}"}

    def _flush_target(self, agent: AgentSession) -> bool:
        """Before the target's history record: its local filesystems flushed (docs/safety.md). The
        agent flushes in a thread and goes on answering pings, so this waits as long as it takes
        (gigabytes onto a slow disk) while the link lives; the monitor ends it on a lost link.
        True when the agent said it is done."""
        started = time.monotonic()
        if not agent.send("flush"):
            return False
        told = False
        while agent.alive and not self.abort.requested:
            reply = agent.wait_for("flushed", 1.0)
            if reply is not None:
                log.info(
                    "target's disks flushed in %.1f s (%s)",
                    time.monotonic() - started,
                    ", ".join(reply.get("mounts") or []) or "sync",
                )
                return True
            if not told:
                log.info("waiting for the target's disks to write the synced data")
                told = True
        return False

    def _track_cleanup(self, proc: psutil.Process) -> None:
        self.registry.add_process(proc, "playbook:cleanup")

    def _force(self, cause: Cause) -> None:
        """Second Ctrl+C: SIGKILL every local tree, best-effort remote sweep, exit now."""
        self.registry.kill_trees("playbook:")
        target = self.agents.get(self.target.name)
        if target is not None and target.alive:
            target.sweep(self.registry.jids(), timeout=0.4)
        for agent in self.agents.values():
            agent.detach()  # EOF: each agent sweeps its machine once more and exits
        log.warning(
            "forced exit; run `pc-switcher cleanup %s --run %s` to be thorough",
            self.target.name,
            self.run_id,
        )
        self._log_end(cause.exit_code, f"sync to {self.target.name} forced to stop: {self.abort.message}")
        logs.shutdown_logging()
        # not ui.stop(): this runs in a signal handler and the display's lock may be held by the
        # code it interrupted; just give the terminal its cursor back
        if self.ui.interactive:
            with contextlib.suppress(OSError):
                os.write(2, b"\x1b[?25h\n")
        self.lock.release()
        os._exit(int(cause.exit_code))

    # -- end -------------------------------------------------------------------------------------
    def _finish(self, code: ExitCode) -> ExitCode:
        if self._finished:
            return code
        self._teardown()
        rows = [(o.name, o.status, o.duration, o.detail) for o in self.outcomes]
        if code == ExitCode.OK:
            outcome = f"sync to {self.target.name} completed" + (" (dry-run)" if self.options.dry_run else "")
        else:
            verb = "aborted" if self.abort.cause else "failed"
            outcome = f"sync to {self.target.name} {verb}: {self.abort.message}"
        self.exit_code = code
        self.outcome_text = outcome
        self.ui.summary(rows, outcome)
        return code

    def _log_end(self, code: ExitCode, outcome: str | None = None) -> None:
        """The last record of every run's log: its outcome and exit code (docs/architecture.md)."""
        text = outcome or getattr(self, "outcome_text", "") or f"sync to {self.options.target} ended"
        level = logging.INFO
        if code in (ExitCode.INTERRUPTED, ExitCode.TERMINATED):
            level = logging.WARNING
        elif code != ExitCode.OK:
            level = logging.ERROR
        fields = {
            "exit_code": int(code),
            "outcome": text,
            "jobs": [o.as_dict() for o in self.outcomes],
            "log": str(self.log_path),
        }
        log.log(level, "finished: %s, exit code %d", text, int(code), extra={"fields": fields})

    def _log_failure(self, exc: BaseException) -> None:
        """An error that ends the run outside the abort path (refused history question, busy or
        unreachable target, a bug): the reason at ERROR, then the end record."""
        with contextlib.suppress(Exception):
            if isinstance(exc, PcsError):
                code = exc.exit_code
                log.error("%s", exc, extra={"fields": {"error": type(exc).__name__}})
                verb = "refused" if code in (ExitCode.USAGE, ExitCode.LOCKED) else "failed"
                text = f"sync to {self.options.target} {verb}: {exc.message}"
            elif isinstance(exc, KeyboardInterrupt):
                code, text = ExitCode.INTERRUPTED, f"sync to {self.options.target} interrupted"
            else:
                code = ExitCode.FAILED
                log.error("internal error: %s: %s", type(exc).__name__, exc)
                text = f"sync to {self.options.target} failed: internal error ({type(exc).__name__})"
            self._log_end(code, text)

    def result(self) -> dict[str, Any]:
        """The machine-readable result of the run (``pc-switcher sync --json``, docs/cli.md)."""
        cause = self.abort.cause
        return {
            "schema": "pc-switcher/sync-result/1",
            "run_id": self.run_id,
            "source": self.source_label,
            "target": self.target.name,
            "dry_run": self.options.dry_run,
            "exit_code": int(self.exit_code) if self.exit_code is not None else None,
            "outcome": getattr(self, "outcome_text", ""),
            "abort_cause": cause.value if cause else None,
            "jobs": [o.as_dict() for o in self.outcomes],
            "snapshots": self.snapshots,
            "log": None if self.options.dry_run else str(self.log_path),
        }

    def _teardown(self) -> None:
        """Close the agents (each sweeps and removes the run's directory), the ssh master, state."""
        self._finished = True
        if self.monitor is not None:
            self.monitor.stop()
        if self.running:  # a run stopped before any change (refused, agent failed): held checks
            self._stop_held()  # what its checks say now (an unreachable target) is not the error
        for agent in self.agents.values():
            report = agent.close(timeout=5)
            killed = (report or {}).get("killed") or []
            if killed:
                log.debug(  # Ansible's async watchers poll every 5 s and outlive their job briefly
                    "the agent on %s ended %d process(es) of the run still running at the end",
                    agent.label,
                    len(killed),
                    extra={"host": agent.label, "fields": {"killed": killed}},
                )
        close_master(self.target, self.control_path)
        self.registry.kill_trees("agent:")
        shutil.rmtree(self.local_run_dir, ignore_errors=True)
        for tmp in (self.run_state / "tmp", self.run_state / "bin"):
            shutil.rmtree(tmp, ignore_errors=True)

    def _prune_old_runs(self) -> None:
        paths.prune_run_dirs(spare=self.run_id)
