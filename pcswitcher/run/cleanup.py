"""The cleanup playbook: run by the abort path, and by ``pc-switcher cleanup`` for a run that died."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pcswitcher import paths
from pcswitcher.errors import ExitCode, LockHeld, UsageError
from pcswitcher.jobs.playbooks import Launcher
from pcswitcher.jobs.runner import PlaybookRun
from pcswitcher.remote.agent import RUN_ID_RE, run_dir
from pcswitcher.remote.inventory import Target, load_inventory
from pcswitcher.run.lock import SyncLock
from pcswitcher.run.ui import Ui

log = logging.getLogger("pcswitcher")
JIDS_FILE = "async_jids.json"


def recorded_jids(run_state: Path) -> list[str]:
    """The async job ids a run recorded while it ran (see Registry)."""
    try:
        data = json.loads((run_state / JIDS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [str(j) for ids in data.values() for j in ids] if isinstance(data, dict) else []


def cleanup_run(
    launcher: Launcher, run_id: str, jids: Sequence[str], source: bool = True, private: Path | None = None
) -> PlaybookRun:
    """A run of ``playbooks/cleanup.yml`` against the launcher's target for RUN_ID: untagged, its own
    Ansible temp files outside the run's directory, which it removes."""
    extravars = {"cleanup_run_id": run_id, "cleanup_async_jids": list(jids), "cleanup_source": source}
    playbook = launcher.root / "playbooks" / "cleanup.yml"
    return launcher.build(playbook, "cleanup", extravars, tagged=False, private_data_dir=private)


def valid_id(text: str) -> bool:
    """A run or session id as pc-switcher makes them: a letter or digit, then letters, digits,
    ``_.-`` (no ``/``, no leading dot or dash, no control character), at most 64 characters."""
    return RUN_ID_RE.fullmatch(text) is not None


def newest_run_id() -> str | None:
    runs = paths.newest_first(p for p in paths.runs_dir().glob("*") if p.is_dir() and valid_id(p.name))
    return runs[0].name if runs else None


def _run_was_seen(run_id: str) -> bool:
    """Does anything on this machine show that run ``run_id`` existed (its state, its log, or its
    working directory: a dry-run keeps its state and log there)?"""
    return (
        (paths.runs_dir() / run_id).is_dir()
        or (paths.logs_dir() / f"{run_id}.jsonl").is_file()
        or Path(run_dir(run_id)).is_dir()
    )


def _chosen_run(run_id: str | None) -> str:
    if run_id is None:
        run_id = newest_run_id()
        if run_id is None:
            raise UsageError(
                f"no run recorded in {paths.runs_dir()}", "pass --run RUN_ID (see `pc-switcher logs`)"
            )
    if not _run_was_seen(run_id):
        raise UsageError(
            f"--run {run_id}: no such run on this machine (no {paths.runs_dir() / run_id}, "
            f"no log, no {run_dir(run_id)})",
            "pass an id shown by `pc-switcher logs`",
        )
    return run_id


def _take_lock(target: str) -> SyncLock | None:
    """The sync lock for the cleanup's duration: a live run is never cleaned up (exit 3), and no sync
    starts meanwhile. None when only a dead holder's child keeps the lock (then clean up anyway)."""
    lock = SyncLock(paths.lock_path())
    try:
        lock.acquire(role="cleanup", target=target)
    except LockHeld as exc:
        if not exc.holder_alive:
            return None
        pid = (exc.holder or {}).get("pid", "PID")
        raise LockHeld(
            f"a sync is running: {exc.message}",
            f"cleanup is for a run that died; stop the live one with Ctrl+C or `kill -TERM {pid}` "
            "(its abort cleans up both machines)",
        ) from None
    return lock


def run_cleanup(target: str, run_id: str | None, inventory_path: Path, ui: Ui) -> ExitCode:
    """``pc-switcher cleanup TARGET [--run ID]``."""
    if run_id is not None and not valid_id(run_id):
        raise UsageError(f"--run {run_id!r} is not a run id", "pass an id shown by `pc-switcher logs`")
    host = load_inventory(inventory_path).resolve(target)
    lock = _take_lock(host.name)
    try:
        run_id = _chosen_run(run_id)
        return _cleanup(host, run_id, inventory_path, ui)
    finally:
        if lock is not None:
            lock.release()


def _cleanup(host: Target, run_id: str, inventory_path: Path, ui: Ui) -> ExitCode:
    run_state = paths.runs_dir() / run_id
    jids = recorded_jids(run_state)
    ui.message(
        f"cleaning up run {run_id} on {host.describe()} and this machine ({len(jids)} async job id(s))"
    )
    # the playbook's files go in the run's state, or (a dry-run's run has none) in a temp dir
    with contextlib.ExitStack() as stack:
        private = run_state / "cleanup-manual"
        if not run_state.is_dir():
            private = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pcswitcher-cleanup-")))
        launcher = Launcher(
            paths.project_root(),
            inventory_path,
            host.name,
            run_id,
            state=private.parent,
            run_dir=run_dir(run_id),
            control_path=Path(run_dir(run_id)) / "cm",
        )
        result = launcher.run_to_end(cleanup_run(launcher, run_id, jids, private=private), "cleanup", 60.0)
    if not result.ok:
        ui.error(f"cleanup of run {run_id} on {host.name} failed: {result.reason(result.status)}")
        return ExitCode.FAILED
    report = result.set_stats.get("cleanup_result") or {}
    for side in ("target", "source"):
        swept = report.get(side) or {}
        killed = swept.get("killed") or []
        removed = (swept.get("removed") or []) + (swept.get("temps_removed") or [])
        ui.message(f"{side}: killed {len(killed)} process(es), removed {len(removed)} path(s)")
    return ExitCode.OK
