"""``pc-switcher snapshots list|cleanup`` and ``pc-switcher rollback`` (all through pcswitcher.run.safety).

Without TARGET, ``snapshots`` acts on this machine only (the config's ``source`` settings); with
TARGET, on the target (its settings: config ``target`` values, overridden by inventory host vars)
and on this machine.
"""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from pcswitcher import paths
from pcswitcher.config.settings import Config, load_config
from pcswitcher.errors import ExitCode, UsageError
from pcswitcher.jobs.discovery import discover_jobs
from pcswitcher.remote.agent import new_run_id
from pcswitcher.remote.inventory import load_inventory
from pcswitcher.run.cleanup import valid_id
from pcswitcher.run.safety import TARGET_LOCK_PATH, Safety, standalone_player
from pcswitcher.run.ui import Ui


@dataclass
class _Context:
    safety: Safety
    labels: dict[str, str]  # "target"/"source" -> what the user calls that machine


@contextlib.contextmanager
def _context(
    target: str | None, config_path: Path, inventory_path: Path, *, lock_path: str, read_only: bool
) -> Iterator[_Context]:
    """The Safety for the command. A command that changes nothing (``read_only``: a list, a
    dry-run) keeps its playbooks' files in a temporary directory, removed at the end: it leaves
    nothing in the state directory. One that changes snapshots keeps them in ``runs/<session>``
    (for ``pc-switcher cleanup``), and prunes old run directories as a sync does."""
    root = paths.project_root()
    config: Config = load_config(config_path, discover_jobs(root))
    session = new_run_id()  # a session id: a run id
    if read_only:
        with tempfile.TemporaryDirectory(prefix=f"pcswitcher-{session}-state-") as scratch:
            yield _new_context(
                root,
                config,
                session=session,
                state=Path(scratch),
                target=target,
                inventory_path=inventory_path,
                lock_path=lock_path,
            )
        return
    context = _new_context(
        root,
        config,
        session=session,
        state=paths.runs_dir() / session,
        target=target,
        inventory_path=inventory_path,
        lock_path=lock_path,
    )
    paths.prune_run_dirs(spare=session)  # once the target is known: a bad command changes nothing
    yield context


def _new_context(
    root: Path,
    config: Config,
    *,
    session: str,
    state: Path,
    target: str | None,
    inventory_path: Path,
    lock_path: str,
) -> _Context:
    here = socket.gethostname()
    if target is None:
        from pcswitcher.run.safety import local_inventory

        inventory, limit, labels = local_inventory(state), "localhost", {"target": here}
    else:
        host = load_inventory(inventory_path).resolve(target)
        inventory, limit, labels = inventory_path, host.name, {"target": host.name, "source": here}
    play = standalone_player(root=root, inventory=inventory, limit=limit, state_dir=state, session=session)
    safety = Safety.from_config(
        root,
        config,
        session,
        play,
        target_label=labels["target"],
        with_source=target is not None,
        lock_path=lock_path,
    )
    return _Context(safety, labels)


def _phases(session: dict[str, Any]) -> str:
    phases = sorted({s.get("phase", "?") for s in session.get("snapshots") or []})
    return ",".join(phases) or "-"


def snapshots_list(
    target: str | None, config_path: Path, inventory_path: Path, ui: Ui, as_json: bool
) -> ExitCode:
    with _context(target, config_path, inventory_path, lock_path=TARGET_LOCK_PATH, read_only=True) as ctx:
        listing = ctx.safety.list_sessions()
    enabled = ctx.safety.snapshots.enabled
    machines = {label: listing[side]["sessions"] for side, label in ctx.labels.items() if side in listing}
    notes = {
        label: note
        for side, label in ctx.labels.items()
        if side in listing
        and (note := _why_none(listing[side], _setting(side, target), label, enabled, config_path))
    }
    if as_json:
        click.echo(json.dumps({"machines": machines, "notes": notes}, indent=2, sort_keys=True))
        return ExitCode.OK
    for label, sessions in machines.items():
        ui.message(f"{label}: {len(sessions)} session(s)", style="bold")
        if label in notes:
            ui.message(f"  {notes[label]}")
        for session in sessions:
            subvolumes = sorted({s.get("subvolume", "?") for s in session.get("snapshots") or []})
            extra = f" (rollback to {session['rolled_back_to']})" if session.get("rolled_back_to") else ""
            ui.message(
                f"  {session['id']}  {session['time_utc']}  {session.get('kind', 'sync')}{extra}  "
                f"phases {_phases(session)}  subvolumes {', '.join(subvolumes) or '-'}"
            )
    return ExitCode.OK


def _setting(side: str, target: str | None) -> str:
    """The setting that places the snapshots of ``side``: without TARGET, "target" is this machine."""
    if side == "target" and target is not None:
        return "snapshots.location.target (or the host var pcswitcher_snapshots_location)"
    return "snapshots.location.source"


def _why_none(info: dict[str, Any], setting: str, label: str, enabled: bool, config: Path) -> str | None:
    """Why a machine has no snapshot session, and what to set; None when it has sessions."""
    if info["sessions"]:
        return None
    where = info.get("location") or "?"
    if not enabled:
        return f"none: snapshots are disabled (snapshots.enabled: false in {config}), so no sync takes any"
    if not info.get("on_btrfs"):
        return (
            f"none: the snapshot location {where} on {label} is not on a btrfs file system, so no sync "
            f"can take snapshots there. Set `snapshots.enabled: false` in {config} to sync without "
            f"them, or set {setting} to a folder on the btrfs file system of the synced subvolumes"
        )
    return f"none yet in {where}: each sync takes them (before and after it runs its jobs)"


def snapshots_cleanup(
    target: str | None,
    *,
    config_path: Path,
    inventory_path: Path,
    keep: int | None,
    older_than: int | None,
    dry_run: bool,
    ui: Ui,
    as_json: bool,
) -> ExitCode:
    if keep is not None and keep < 1:
        raise UsageError(
            "--keep must be at least 1", "the newest session is always kept; pass --keep 1 or more"
        )
    with _context(target, config_path, inventory_path, lock_path=TARGET_LOCK_PATH, read_only=dry_run) as ctx:
        data = ctx.safety.cleanup(keep, older_than, dry_run)
    machines = {label: data.get(side) or {} for side, label in ctx.labels.items()}
    if as_json:
        click.echo(
            json.dumps({"dry_run": dry_run, "machines": machines}, indent=2, sort_keys=True, default=str)
        )
        return ExitCode.OK
    verb = "would delete" if dry_run else "deleted"
    for label, info in machines.items():
        doomed = info.get("deleted_sessions") or []
        ui.message(
            f"{label}: {verb} {len(doomed)} session(s) ({len(info.get('deleted') or [])} snapshot(s)), "
            f"kept {len(info.get('kept_sessions') or [])}"
        )
        for session in doomed:
            ui.message(f"  {verb} {session}")
    return ExitCode.OK


def rollback(
    target: str,
    session: str | None,
    *,
    config_path: Path,
    inventory_path: Path,
    dry_run: bool,
    assume_yes: bool,
    quick: bool,
    ui: Ui,
    lock_path: str = TARGET_LOCK_PATH,
) -> ExitCode:
    """Preview (check mode), confirm, then roll the target back."""
    if session is not None and not valid_id(session):
        raise UsageError(
            f"--session {session!r} is not a session id",
            "pass an id shown by `pc-switcher snapshots list TARGET`",
        )
    with _context(target, config_path, inventory_path, lock_path=lock_path, read_only=dry_run) as ctx:
        return _rollback(ctx, session, dry_run=dry_run, assume_yes=assume_yes, quick=quick, ui=ui)


def _rollback(
    ctx: _Context, session: str | None, *, dry_run: bool, assume_yes: bool, quick: bool, ui: Ui
) -> ExitCode:
    safety = ctx.safety
    plan = safety.rollback(session, dry_run=True, checksum=not quick)
    name = ctx.labels["target"]
    ui.message(
        f"rollback of {name} to session {plan.get('session')} ({plan.get('phase')} snapshots); "
        f"the current state is kept as session {safety.session}"
    )
    for item in plan.get("items") or []:
        ui.message(f"  {item['mount']} <- {item['snapshot']} ({item.get('changes', 0)} change(s))")
    if dry_run:
        ui.message("dry-run: nothing was changed")
        return ExitCode.OK
    if not assume_yes and not ui.interactive:
        raise UsageError("a rollback needs a confirmation and there is no terminal to ask", "pass --yes")
    question = (
        f"Replace the content of {', '.join(i['mount'] for i in plan.get('items') or [])} on {name} "
        f"with session {plan.get('session')}? Nothing may be using these subvolumes on {name}"
    )
    if not ui.confirm(question, assume_yes):
        ui.message("rollback cancelled; nothing was changed")
        return ExitCode.FAILED
    done = safety.rollback(plan.get("session"), dry_run=False, checksum=not quick)
    for item in done.get("items") or []:
        ui.message(
            f"  {item['mount']}: {item.get('changed', 0)} change(s); "
            f"previous state kept in {item['replaced']}"
        )
    ui.message(
        f"{name} rolled back to session {done.get('session')}; undo with "
        f"`pc-switcher rollback {name} --session {safety.session}`",
        style="bold green",
    )
    return ExitCode.OK
