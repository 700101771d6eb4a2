"""A sync as an ordered list of named steps, the loop that runs them, and the abort path.

:data:`STEPS` is the run after its opening (the first job's playbook started early, the target
resolved, the lock taken: driver.py). The loop (:func:`run_steps`) checks for an abort between two
steps — inside a step only where it waits — and whatever stops a run (Ctrl+C, SIGTERM, low disk,
lost link, a failed job or check, an error) ends in one place, :func:`abort_path`. The steps share
a :class:`RunContext`; each is a function of it. docs/architecture.md lists the same steps in the
same words.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcswitcher import paths
from pcswitcher.config.settings import Config, JobConfig
from pcswitcher.errors import ExitCode, LockHeld
from pcswitcher.jobs.discovery import JobSpec
from pcswitcher.jobs.gate import EarlyStart
from pcswitcher.jobs.playbooks import Launcher
from pcswitcher.jobs.registry import Registry
from pcswitcher.jobs.runner import PlaybookResult, PlaybookRun
from pcswitcher.remote.agent import remove_stale_run_dirs
from pcswitcher.remote.inventory import Target
from pcswitcher.remote.session import AgentSession, local_agent, remote_agent
from pcswitcher.remote.ssh import close_master
from pcswitcher.run.abort import AbortController, Cause
from pcswitcher.run.carry import Carry, way_back_note
from pcswitcher.run.cleanup import cleanup_run
from pcswitcher.run.events import EventLog
from pcswitcher.run.lock import SyncLock
from pcswitcher.run.monitor import Monitor
from pcswitcher.run.outcome import JobOutcome, result_summary
from pcswitcher.run.safety import HistoryRefused, Safety, SafetyError, confirm_history
from pcswitcher.run.ui import Ui

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
class Prepared:
    """Everything checked before the run starts anything."""

    root: Path
    jobs: dict[str, JobSpec]
    config: Config
    selected: list[JobConfig]
    skipped: list[JobConfig]
    inventory_path: Path


@dataclass
class RunContext:
    """What the steps of one run share."""

    options: SyncOptions
    p: Prepared
    ui: Ui
    run_id: str
    abort: AbortController
    lock: SyncLock
    registry: Registry
    launcher: Launcher
    events: EventLog
    local_run_dir: Path  # /tmp/pcswitcher-<run id>: the run's working directory on both machines
    run_state: Path  # runs/<run id>: its playbooks' private data dirs
    source_label: str
    target: Target | None = None  # once the inventory is read (the opening)
    early: EarlyStart | None = None  # the first job's playbook, started early (gate.py)
    safety: Safety | None = None
    carry: Carry | None = None
    agents: dict[str, AgentSession] = field(default_factory=dict)
    monitor: Monitor | None = None
    outcomes: list[JobOutcome] = field(default_factory=list)
    snapshots: dict[str, Any] = field(default_factory=dict)
    stale_run_dirs: list[str] = field(default_factory=list)  # removed once the lock is held
    step: str = "opening"  # the step the run is in (STEPS, then "finish")
    exit_code: ExitCode | None = None
    outcome_text: str = ""

    @property
    def control_path(self) -> Path:
        return self.local_run_dir / "cm"

    @property
    def host(self) -> Target:
        if self.target is None:
            raise RuntimeError("the target is not resolved yet")
        return self.target

    @property
    def changing(self) -> bool:
        """From the validate step on, playbooks beside the held first job run on the target: an error
        takes the abort path (its cleanup playbook included). Before, closing the agents and
        stopping the held playbook (it has run no change) is enough."""
        names = [s.name for s in STEPS]
        return self.step in names and names.index(self.step) >= names.index("validate")

    def outcome(self, name: str) -> JobOutcome:
        return next(o for o in self.outcomes if o.name == name)


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[RunContext], None]


# -- playbooks of the run --------------------------------------------------------------------------
def start_first_job(ctx: RunContext, limit: str) -> EarlyStart:
    """Start the first job's whole playbook on host ``limit``, held (gate.py)."""
    job = ctx.p.selected[0]
    ctx.events.current_job = job.name
    return EarlyStart.start(
        ctx.launcher,
        job.name,
        ctx.local_run_dir / f"gate-{job.name}",
        ctx.p.jobs[job.name].playbook,
        f"{job.name}-sync",
        limit=limit,
        **_job_args(ctx, job),
    )


def _job_args(ctx: RunContext, job: JobConfig) -> dict[str, Any]:
    extravars: dict[str, Any] = {
        "pcswitcher_run_id": ctx.run_id,
        "pcswitcher_progress_file": f"{ctx.local_run_dir}/progress.jsonl",
        "pcswitcher_dry_run": ctx.options.dry_run,
        "pcswitcher_ssh_control_path": str(ctx.control_path),
        "pcswitcher_disk_runtime_minimum": ctx.p.config.disk.runtime_minimum.as_var(),
        **ctx.p.jobs[job.name].extravars(job.settings),
    }
    return {"extravars": extravars, "check": ctx.options.dry_run, "on_event": ctx.events.handler(job.name)}


def play_job(ctx: RunContext, job: JobConfig, phase: str) -> PlaybookResult | None:
    """One phase of a job in a playbook run of its own: ``validate`` (``--tags validate``) or
    ``sync`` (``--skip-tags validate``); None when an abort came first."""
    tags, skip = (["validate"], []) if phase == "validate" else ([], ["validate"])
    ctx.events.current_job = job.name
    run = ctx.launcher.build(
        ctx.p.jobs[job.name].playbook, f"{job.name}-{phase}", tags=tags, skip_tags=skip, **_job_args(ctx, job)
    )
    return ctx.launcher.play(run, job.name)


def _safety_run(
    ctx: RunContext, playbook: Path, ident: str, extravars: dict[str, Any], check: bool
) -> PlaybookRun:
    extravars = {
        "pcswitcher_progress_file": f"{ctx.local_run_dir}/progress.jsonl",
        "pcswitcher_dry_run": ctx.options.dry_run,
        **extravars,
    }
    return ctx.launcher.build(playbook, ident, extravars, check=check, on_event=ctx.events.handler(None))


def safety_and_carry(ctx: RunContext) -> None:
    """The run's Safety (snapshots, history) and Carry, their playbooks on the run's launcher."""

    def play(playbook: Path, ident: str, extravars: dict[str, Any], check: bool) -> PlaybookResult | None:
        run = _safety_run(ctx, playbook, ident, extravars, check)
        ctx.events.current_job = None
        return ctx.launcher.play(run, ident)

    def start(
        playbook: Path, ident: str, extravars: dict[str, Any], check: bool
    ) -> Callable[[], PlaybookResult | None]:
        run = _safety_run(ctx, playbook, ident, extravars, check)
        ctx.launcher.start(run, ident)
        return lambda: ctx.launcher.wait(run)

    o, host = ctx.options, ctx.host
    ctx.safety = Safety.from_config(
        ctx.p.root, ctx.p.config, ctx.run_id, play, dry_run=o.dry_run, target_label=host.name
    )
    ctx.safety.history_io = lambda side, request: history_io(ctx, side, request)
    ctx.safety.snapshot_io = lambda side, request: snapshot_io(ctx, side, request)
    ctx.carry = Carry(
        ctx.p.root, play, o.config_path, ctx.p.inventory_path, host.name, dry_run=o.dry_run, start=start
    )
    ctx.carry.carry_io = lambda request: carry_io(ctx, request)
    ctx.carry.root_on_target = host.root_by_login_or_sudo


# -- the agents --------------------------------------------------------------------------------------
def log_stale_run_dirs(host: str, removed: list[str]) -> None:
    for path in removed:
        log.info("removed %s on %s, left by a run that was killed", path, host, extra={"host": host})


def _refuse_self_sync(ctx: RunContext, name: str) -> None:
    """An inventory that lists both machines works from either side: the machine that runs the sync
    is never its target (and its agents are told apart by these names)."""
    if name == ctx.source_label:
        raise LockHeld(  # exit 3, as when the target's agent finds this machine's own lock
            f"target {ctx.host.name} is this machine (host name {name}); a machine cannot sync to itself",
            "pick another target from the inventory",
        )


def spawn_agents(ctx: RunContext) -> None:
    """Start both agents' processes; :func:`agents_ready` waits for them."""
    _refuse_self_sync(ctx, ctx.host.name)
    cfg = ctx.p.config
    silent_after = max(cfg.link_timeout * 2, 10.0)  # the agent's own dead-man timeout
    source = local_agent(ctx.run_id, ctx.source_label, cfg.disk.source_paths, silent_after, ctx.registry)
    target = remote_agent(
        ctx.host,
        ctx.run_id,
        paths=cfg.disk.target_paths,
        timeout=silent_after,
        control_path=ctx.control_path,
        link_timeout=cfg.link_timeout,
        registry=ctx.registry,
    )
    for agent in (source, target):
        agent.on_progress = ctx.events.on_progress
        ctx.agents[agent.label] = agent
    source.spawn()
    target.spawn()


def agents_ready(ctx: RunContext) -> None:
    """Wait for both agents' hello (an abort does not wait); refuse a self-sync; set up the monitor."""
    source = ctx.agents[ctx.source_label]
    source.wait_ready(cancel=ctx.abort.event)
    hello = ctx.agents[ctx.host.name].wait_ready(cancel=ctx.abort.event)
    if ctx.abort.requested:
        return
    remote_host = str(hello.get("host", ""))
    log.debug(
        "agents up: source pid %s, target %s pid %s", source.hello.get("pid"), remote_host, hello.get("pid")
    )
    log_stale_run_dirs(ctx.host.name, hello.get("stale") or [])
    if remote_host:
        _refuse_self_sync(ctx, remote_host)
    cfg = ctx.p.config
    ctx.monitor = Monitor(ctx.agents, ctx.host.name, cfg.disk, cfg.link_timeout, ctx.abort)


def ask_agent(
    ctx: RunContext, side: str, command: str, request: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """``command REQUEST`` to the agent of ``side`` ("source" or "target") and its reply; an
    abort (Ctrl+C, the monitor) ends the wait. Whatever prevents a reply is an ``error``."""
    agent = ctx.agents.get(ctx.host.name if side == "target" else ctx.source_label)
    if agent is None or not agent.alive:
        return {"error": f"the agent on the {side} is not running"}
    reply = agent.request(command, request, timeout=timeout, cancel=ctx.abort.event)
    if ctx.abort.requested:
        return {"error": "stopped by the abort"}
    if reply is None or reply.get("t") == "busy":
        return {"error": f"no answer from the agent on {agent.label}"}
    return reply


def history_io(ctx: RunContext, side: str, request: dict[str, Any]) -> dict[str, Any]:
    """How Safety reads and records the history during a sync: through the agents."""
    target = ctx.host
    if side == "target" and target.history_path:
        request = {**request, "path": target.history_path}  # the inventory host var wins
    agent = ctx.agents.get(target.name) if side == "target" else None
    if agent is not None and agent.alive and request.get("action") == "record":
        flushed = flush_target(ctx, agent)
        if ctx.abort.requested:  # Ctrl+C, or the link lost, while the disks were flushed
            return {"error": "stopped while the target's disks were being flushed"}
        request = {**request, "flushed": flushed}  # else the agent flushes (without pings)
    return ask_agent(ctx, side, "history", request, max(ctx.p.config.link_timeout, 10.0))


def carry_io(ctx: RunContext, request: dict[str, Any]) -> dict[str, Any]:
    """How the carry reads the target and writes its config during a sync: through its agent."""
    return ask_agent(ctx, "target", "carry", request, max(ctx.p.config.link_timeout, 30.0))


def snapshot_io(ctx: RunContext, side: str, request: dict[str, Any]) -> dict[str, Any]:
    """How Safety checks and takes the snapshots during a sync: through the agents. The agent works
    in a thread and answers pings meanwhile (a snapshot waits for btrfs's commit), so this waits as
    long as it takes while the link lives."""
    target = ctx.host
    if side == "target":  # the inventory host vars win
        request = {
            **request,
            "location": target.snapshots_location or request["location"],
            "subvolumes": list(target.snapshots_subvolumes) or request["subvolumes"],
        }
    return ask_agent(ctx, side, "snapshots", request, math.inf)


def flush_target(ctx: RunContext, agent: AgentSession) -> bool:
    """Before the target's history record: its local filesystems flushed (docs/safety.md). The
    agent flushes in a thread and goes on answering pings, so this waits as long as it takes
    (gigabytes onto a slow disk) while the link lives; the monitor ends it on a lost link.
    True when the agent said it is done."""
    started = time.monotonic()
    if not agent.send("flush"):
        return False
    told = False
    while agent.alive and not ctx.abort.requested:
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


# -- the steps -----------------------------------------------------------------------------------------
def agents(ctx: RunContext) -> None:
    """Both agents up (the ssh handshake overlaps the first job's start-up), the monitor set up."""
    spawn_agents(ctx)
    if ctx.early is None:  # TARGET named the host by its address: started again with its name
        ctx.early = start_first_job(ctx, ctx.host.name)
    if not ctx.options.dry_run:
        paths.prune_run_dirs(spare=ctx.run_id)  # while the agents' ssh handshake runs
    agents_ready(ctx)


def preflight(ctx: RunContext) -> None:
    """The disk check on both machines (``disk.preflight_minimum``); then the monitor watches."""
    assert ctx.monitor is not None
    ctx.monitor.preflight()
    ctx.monitor.start()


def history_questions(ctx: RunContext) -> None:
    """Nothing has changed yet: a target never synced, synced with another machine... asks."""
    assert ctx.safety is not None
    o = ctx.options
    confirm_history(
        ctx.safety.history_warnings(),
        ctx.ui,
        dry_run=o.dry_run,
        allow_first_sync=o.allow_first_sync,
        allow_out_of_order=o.allow_out_of_order,
        assume_yes=o.assume_yes,
    )


def validate(ctx: RunContext) -> None:
    """Every check of every job, the snapshots' and the carry's; the first job's checks in its early
    playbook, which then holds (gate.py)."""
    assert ctx.safety is not None
    assert ctx.carry is not None
    assert ctx.early is not None
    selected = ctx.p.selected
    # the agents hold the target and the sync is wanted: the first job may check it now
    ctx.ui.step(1, len(selected), selected[0].name, "validate")
    ctx.early.begin()
    ctx.carry.start_validate()  # beside the other checks; a newer pc-switcher on the target
    ctx.safety.validate()
    for index, job in enumerate(selected[1:], start=2):
        if ctx.abort.requested:
            return
        ctx.ui.step(index, len(selected), job.name, "validate")
        result = play_job(ctx, job, "validate")
        if result is None or not result.ok:
            return validation_failed(ctx, job, result)
    checked = ctx.early.wait_checked()
    if checked is None:
        return
    if not checked:
        return validation_failed(ctx, selected[0], ctx.early.result)
    log.info("all %d job(s) validated", len(selected))
    ctx.carry.validate()  # refuses the sync


def validation_failed(ctx: RunContext, job: JobConfig, result: PlaybookResult | None) -> None:
    link_lost(ctx)  # then the lost link is the cause, and the validation was aborted by it
    outcome = ctx.outcome(job.name)
    outcome.status = "aborted" if ctx.abort.requested else "failed"
    outcome.detail = result.reason("validation failed") if result else "validation failed"
    if not ctx.abort.requested:
        log.error("validation of %s failed: %s", job.name, outcome.detail, extra={"job": job.name})
        ctx.abort.request(Cause.JOB_FAILED, f"validation of {job.name} failed", logging.ERROR)


def link_lost(ctx: RunContext) -> bool:
    """Before a failed job is blamed: is the target's link gone? Then that is the abort's cause
    (Ansible's tasks fail as unreachable through the same ssh master, often before the
    monitor's next look)."""
    return ctx.monitor is not None and ctx.monitor.link_lost()


def snapshots_before(ctx: RunContext) -> None:
    assert ctx.safety is not None
    ctx.snapshots["pre"] = ctx.safety.snapshot("pre")


def jobs(ctx: RunContext) -> None:
    """Each job's changes in config order: the first job released from its hold, each other in a
    playbook run with ``--skip-tags validate``. A failed job stops the sync."""
    assert ctx.early is not None
    for index, job in enumerate(ctx.p.selected, start=1):
        if ctx.abort.requested:
            return
        result = run_job(ctx, index, job)
        if ctx.abort.requested:
            return
        if result is None or not result.ok:
            detail = ctx.outcome(job.name).detail  # run_job's reason for the failure
            ctx.abort.request(
                Cause.JOB_FAILED, f"job {job.name} failed: {detail}", logging.ERROR, job=job.name
            )
            return


def run_job(ctx: RunContext, index: int, job: JobConfig) -> PlaybookResult | None:
    """Run a job's changes and record its outcome."""
    assert ctx.early is not None
    ctx.ui.step(index, len(ctx.p.selected), job.name, "sync")
    outcome = ctx.outcome(job.name)
    started = time.monotonic()
    if index == 1:
        ctx.events.current_job = job.name
        result = ctx.early.release()
    else:
        result = play_job(ctx, job, "sync")
    outcome.duration = time.monotonic() - started
    if result is not None and not ctx.abort.requested:
        drain_progress(ctx)  # the job's last progress lines come before its summary line
    if result is None or not result.ok:
        link_lost(ctx)  # then the lost link is the cause, and the job was aborted by it
    record_outcome(ctx, job, outcome, result)
    ctx.ui.job_finished(job.name, outcome.status, outcome.duration, outcome.detail)
    return result


def record_outcome(
    ctx: RunContext, job: JobConfig, outcome: JobOutcome, result: PlaybookResult | None
) -> None:
    if ctx.abort.requested:
        outcome.status = "aborted"
        outcome.detail = ctx.abort.message
    elif result is not None and result.ok:
        outcome.status = "succeeded"
        outcome.changed = result.changed
        outcome.result = result.set_stats
        # the count of changed tasks is Ansible's, not the user's: it goes to the log only
        outcome.detail = result_summary(ctx.p.jobs[job.name], result.set_stats, ctx.options.dry_run)
        log.debug(
            "%s: %d task(s) changed",
            job.name,
            result.changed,
            extra={"job": job.name, "fields": {"changed": result.changed}},
        )
    else:
        outcome.status = "failed"
        outcome.detail = result.reason("the playbook failed") if result else "the playbook failed"


def drain_progress(ctx: RunContext) -> None:
    """Wait until both agents have passed on every progress line written so far (the job's
    playbook has ended: its lines are all written)."""
    for agent in ctx.agents.values():
        if agent.alive and not agent.drain(timeout=2.0):
            log.debug("the agent on %s did not confirm its progress lines", agent.label)


def carry(ctx: RunContext) -> None:
    """All jobs succeeded: pc-switcher, its config and inventory go to the target (the way back)."""
    assert ctx.carry is not None
    ctx.carry.carry()


def history_record(ctx: RunContext) -> None:
    """The target was synced: both machines record it (the target's disks flushed first)."""
    assert ctx.safety is not None
    ctx.safety.record_history()


def snapshots_after(ctx: RunContext) -> None:
    assert ctx.safety is not None
    ctx.snapshots["post"] = ctx.safety.snapshot("post")
    way_back_note(ctx.p.inventory_path, ctx.host.name)


#: The run after its opening, in order (docs/architecture.md, "A run", lists the same names).
STEPS: tuple[Step, ...] = (
    Step("agents", agents),
    Step("preflight", preflight),
    Step("history questions", history_questions),
    Step("validate", validate),
    Step("snapshots before", snapshots_before),
    Step("jobs", jobs),
    Step("carry", carry),
    Step("history record", history_record),
    Step("snapshots after", snapshots_after),
)


# -- the loop, the abort path, the end -----------------------------------------------------------------
def run_steps(ctx: RunContext, steps: Sequence[Step] = STEPS) -> ExitCode:
    """Run the steps in order; an abort (requested by a step, a signal, the monitor) takes the abort
    path before the next one. An error: a failed check or snapshot (SafetyError) takes the abort
    path; a refused history question ends the run before any change; any other error stops what
    was started (the abort path once the run is :attr:`~RunContext.changing`) and is raised."""
    try:
        announce(ctx)
        for step in steps:
            if ctx.abort.requested:
                break
            ctx.step = step.name
            step.run(ctx)
    except HistoryRefused:
        teardown(ctx)
        raise  # nothing has changed; the CLI says why (exit 2)
    except SafetyError as exc:
        ctx.abort.request(Cause.ERROR, exc.message, logging.CRITICAL)
    except BaseException as exc:
        try:
            if ctx.changing:  # whatever was started is stopped on the same path
                with contextlib.suppress(Exception):
                    ctx.abort.request(Cause.ERROR, f"aborting: {exc}", logging.CRITICAL)
                    abort_path(ctx)
        finally:
            teardown(ctx)
        raise
    if ctx.abort.requested:
        return abort_path(ctx)
    return finish(ctx, ExitCode.OK)


def announce(ctx: RunContext) -> None:
    """The run's first records and the display's start."""
    names = [j.name for j in ctx.p.selected]
    dry = " (dry-run)" if ctx.options.dry_run else ""
    fields = {"fields": {"run_id": ctx.run_id, "jobs": names}}
    log.info(
        "pc-switcher run %s: %s -> %s%s", ctx.run_id, ctx.source_label, ctx.host.describe(), dry, extra=fields
    )
    if ctx.lock.stale:
        log.info("cleared a stale lock left by pid %s", ctx.lock.stale.get("pid"))
    log_stale_run_dirs(ctx.source_label, ctx.stale_run_dirs)
    ctx.ui.start(ctx.host.name, ctx.run_id, names, ctx.options.dry_run)


def abort_path(ctx: RunContext) -> ExitCode:
    """Steps 2–6 of the abort path (step 1, logging the cause, happened in AbortController.request)."""
    cause = ctx.abort.cause or Cause.ERROR
    started = time.monotonic()
    target = ctx.agents.get(ctx.host.name)
    source = ctx.agents.get(ctx.source_label)
    # 3 + 4 at once: SIGTERM to ansible-playbook (clean stop of workers and ssh clients) and the
    # target's agent kills the run's tagged processes through the open connection
    interrupted = ctx.launcher.stop_all()  # the jobs whose playbook the abort stops
    if cause is Cause.LINK and target is not None:
        # the master's connection is frozen or gone: drop it, so that the cleanup playbook
        # connects afresh instead of multiplexing over a dead link
        target.kill()
    if target is not None and target.alive:
        target.send(" ".join(["sweep", *ctx.registry.jids()]))
    ctx.launcher.end_all()
    if source is not None and source.alive:
        log_sweep(ctx.source_label, source.sweep(ctx.registry.jids(), timeout=3))
    if target is not None and target.alive:
        log_sweep(ctx.host.name, target.wait_for("swept", timeout=3))
    log.info("run stopped in %.2f s; running the cleanup playbook", time.monotonic() - started)
    cleanup_playbook(ctx)  # 5
    for outcome in ctx.outcomes:
        if outcome.status == "not run" and outcome.name in interrupted:
            outcome.status = "aborted"
    return finish(ctx, cause.exit_code)


def log_sweep(host: str, report: dict[str, Any] | None) -> None:
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
    for path in report.get("temps_removed") or []:  # what an interrupted rsync was receiving
        log.info("removed the killed rsync's temporary file %s on %s", path, host, extra={"host": host})


def cleanup_playbook(ctx: RunContext) -> None:
    # the source agent has swept this machine already
    run = cleanup_run(ctx.launcher, ctx.run_id, ctx.registry.jids(), source=False)
    result = ctx.launcher.run_to_end(run, "cleanup", timeout=60.0)
    if result.ok:
        log.info("cleanup playbook done in %.1f s", result.duration)
    else:
        log.error(
            "cleanup playbook failed: %s; the target's agent sweeps the run when its session ends; "
            "run `pc-switcher cleanup %s --run %s` once the target is reachable",
            result.reason(result.status),
            ctx.host.name,
            ctx.run_id,
        )


def finish(ctx: RunContext, code: ExitCode) -> ExitCode:
    """The end of every run that got past its opening: teardown, then the summary."""
    teardown(ctx)
    rows = [(o.name, o.status, o.duration, o.detail) for o in ctx.outcomes]
    if code == ExitCode.OK:
        outcome = f"sync to {ctx.host.name} completed" + (" (dry-run)" if ctx.options.dry_run else "")
    else:
        verb = "aborted" if ctx.abort.cause else "failed"
        outcome = f"sync to {ctx.host.name} {verb}: {ctx.abort.message}"
    ctx.exit_code = code
    ctx.outcome_text = outcome
    ctx.ui.summary(rows, outcome)
    return code


def teardown(ctx: RunContext) -> None:
    """Close the agents (each sweeps and removes the run's directory), the ssh master, state. Once."""
    if ctx.step == "finish":
        return
    ctx.step = "finish"
    if ctx.monitor is not None:
        ctx.monitor.stop()
    if ctx.launcher.running:  # a run stopped before any change (refused, agent failed): held checks
        ctx.launcher.stop_all(quiet=True)  # what they say now (an unreachable target) is not the error
        ctx.launcher.end_all()
    for agent in ctx.agents.values():
        report = agent.close(timeout=5)
        killed = (report or {}).get("killed") or []
        if killed:
            log.debug(  # Ansible's async watchers poll every 5 s and outlive their job briefly
                "the agent on %s ended %d process(es) of the run still running at the end",
                agent.label,
                len(killed),
                extra={"host": agent.label, "fields": {"killed": killed}},
            )
    close_master(ctx.host, ctx.control_path)
    ctx.registry.kill_trees("agent:")
    remove_run_files(ctx, state=False)


def remove_run_files(ctx: RunContext, state: bool) -> None:
    """The run's working directory; its shared temp and bin dirs, or (``state``) all its state."""
    shutil.rmtree(ctx.local_run_dir, ignore_errors=True)
    if state:
        shutil.rmtree(ctx.run_state, ignore_errors=True)
        return
    for tmp in (ctx.run_state / "tmp", ctx.run_state / "bin"):
        shutil.rmtree(tmp, ignore_errors=True)


def take_lock(ctx: RunContext) -> None:
    """The source lock (held: exit 3); holding it, no other run of this machine is alive: what a
    killed one left goes."""
    ctx.lock.acquire(target=ctx.host.name, run_id=ctx.run_id)
    ctx.stale_run_dirs = remove_stale_run_dirs(ctx.run_id)
