"""Safety around a sync: btrfs snapshots on both machines, the sync history, and their checks.

During a sync the snapshots and the history go through the run's agents (:data:`SnapshotIO`,
:data:`HistoryIO`: the connections the run holds already, no playbook); elsewhere (the CLI's
``snapshots``, ``rollback``) through Ansible (``playbooks/snapshots.yml`` with the role
``btrfs_snapshots``, ``playbooks/sync_history.yml`` with the role ``sync_history``). Either way the
same code does the work on the machine (pcswitcher/remote/agent.py, the roles' module_utils); this
module chooses the arguments and reads the results. The driver calls, in this order
(docs/safety.md):

1. :meth:`Safety.validate` — before any job is validated: subvolumes and snapshot locations on both
   machines (read-only). Raises :class:`SafetyError` with a one-line reason.
2. :meth:`Safety.history_warnings` + :func:`confirm_history` — before anything changes.
3. :meth:`Safety.snapshot` ``("pre")`` — after validation, before the first job.
4. :meth:`Safety.snapshot` ``("post")`` and :meth:`Safety.record_history` — after all jobs succeeded.

In a dry run (``Safety(dry_run=True)``) the snapshot playbook runs in check mode and only reports what
it would create; the history is read but never written.

How a playbook is run is the caller's: a :data:`Player`. A sync passes one built on its launcher
(playbooks.py: the run's ControlMaster, registry and abort path); the CLI commands use
:func:`standalone_player`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pcswitcher.config.settings import Config, HistoryConfig, SnapshotsConfig
from pcswitcher.errors import ExitCode, LockHeld, PcsError
from pcswitcher.jobs.playbooks import Launcher
from pcswitcher.jobs.runner import EventHandler, PlaybookResult
from pcswitcher.remote.agent import LOCK_FILE, run_dir
from pcswitcher.run.ui import Ui

log = logging.getLogger("pcswitcher")

#: The target's lock: an flock on this file, held by a sync for its whole run (the agent) and by a
#: rollback while it works. A rollback refuses while it is held, and a sync must refuse while a
#: rollback holds it. /run/lock is a tmpfs: nothing survives a reboot.
# the machine's sync lock: the same file the driver takes as source and the agent as target
# (lock.py, agent.default_lock_path); the module expands ~ on the target
TARGET_LOCK_PATH = f"~/.local/state/{LOCK_FILE}"
SNAPSHOTS_PLAYBOOK = "snapshots.yml"
HISTORY_PLAYBOOK = "sync_history.yml"
SNAPSHOTS_RESULT = "btrfs_snapshots_result"
HISTORY_RESULT = "sync_history_result"

#: ``player(playbook, ident, extravars, check)``: run one playbook against the target and wait for it.
#: Returns None when the run was aborted (the driver's abort path then takes over).
Player = Callable[[Path, str, dict[str, Any], bool], PlaybookResult | None]

#: ``history_io(side, request)``: read or record one machine's history (``side`` is "source" or
#: "target"; ``request`` the arguments of :func:`pcswitcher.remote.agent.history`) and return its result.
#: The driver's is its agents (no playbook: they are connected already); without one, Safety runs
#: ``playbooks/sync_history.yml`` — the same code either way.
HistoryIO = Callable[[str, dict[str, Any]], dict[str, Any]]

#: ``snapshot_io(side, request)``: check, or take (and prune), one machine's snapshots of a sync
#: (``request`` the arguments of :func:`pcswitcher.remote.agent.snapshots`) and return its result.
#: The driver's is its agents; without one, Safety runs ``playbooks/snapshots.yml`` — whose module
#: runs the same function.
SnapshotIO = Callable[[str, dict[str, Any]], dict[str, Any]]


class SafetyError(PcsError):
    """A snapshot or history step failed (exit 1). The message is one line naming host and reason."""


class HistoryPathError(PcsError):
    """The history path on a machine cannot be a history file (a directory, a FIFO, a device):
    found when the history is read, before any change (exit 2: fix the config or inventory)."""

    exit_code = ExitCode.USAGE


class HistoryRefused(PcsError):
    """A history warning was not accepted: the sync does not start (exit 2: pass the named flag)."""

    exit_code = ExitCode.USAGE


def failure_text(result: PlaybookResult | None, what: str) -> str:
    """The failures of a playbook as one line, without runner's ``<task> on <host>:`` prefix."""
    if result is None:
        return f"{what} was aborted"
    messages = [f.split(": ", 1)[1] if ": " in f else f for f in result.failures] or result.errors
    return "; ".join(messages) or f"{what} failed ({result.status}, exit code {result.rc})"


# --------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------

FIRST_SYNC_FLAG = "--allow-first-sync"
OUT_OF_ORDER_FLAG = "--allow-out-of-order"


@dataclass(frozen=True)
class HistoryWarning:
    """A reason to ask before a sync changes anything."""

    kind: str  # first_sync | other_peer | repeat_push | unreadable
    message: str
    flag: str  # the sync flag that accepts it without asking


@dataclass(frozen=True)
class MachineHistory:
    host: str
    path: str
    last: dict[str, Any] | None
    problem: str = ""


def _last(history: Any) -> dict[str, Any] | None:
    last = history.get("last") if isinstance(history, dict) else None
    return last if isinstance(last, dict) else None


def evaluate_history(source: MachineHistory, target: MachineHistory) -> list[HistoryWarning]:
    """The warnings for syncing ``source`` onto ``target`` given both machines' histories."""
    warnings: list[HistoryWarning] = []
    if target.problem:
        warnings.append(
            HistoryWarning(
                "unreadable", f"{target.problem}; treating {target.host} as never synced", FIRST_SYNC_FLAG
            )
        )
    if source.problem:
        log.warning("%s; its history is ignored", source.problem)
    tlast, slast = target.last, source.last
    if tlast is None:
        if not target.problem:
            warnings.append(
                HistoryWarning(
                    "first_sync",
                    f"{target.host} has never been synced: this first sync overwrites its data",
                    FIRST_SYNC_FLAG,
                )
            )
    elif tlast.get("peer") != source.host:
        warnings.append(
            HistoryWarning(
                "other_peer",
                f"{target.host} last synced with {tlast.get('peer')} (as {tlast.get('role')}, session "
                f"{tlast.get('session')} at {tlast.get('time')}), not with {source.host}",
                OUT_OF_ORDER_FLAG,
            )
        )
    if slast is not None and slast.get("role") == "source" and slast.get("peer") == target.host:
        warnings.append(
            HistoryWarning(
                "repeat_push",
                f"{source.host} already pushed to {target.host} (session {slast.get('session')} at "
                f"{slast.get('time')}) and has not been synced back since: {target.host} may have been "
                "used in between",
                OUT_OF_ORDER_FLAG,
            )
        )
    return warnings


def confirm_history(
    warnings: Sequence[HistoryWarning],
    ui: Ui,
    *,
    dry_run: bool,
    allow_first_sync: bool,
    allow_out_of_order: bool,
    assume_yes: bool = False,
) -> None:
    """Apply the history policy: log each warning, then continue or raise :class:`HistoryRefused`.

    A dry run logs and continues. A warning accepted by its flag is logged and passed. Otherwise an
    interactive run asks (default no); a non-interactive one refuses and names the flag. ``--yes``
    answers the question of an interactive run; a run without a terminal needs the warning's own flag.
    """
    for warning in warnings:
        allowed = (warning.flag == FIRST_SYNC_FLAG and allow_first_sync) or (
            warning.flag == OUT_OF_ORDER_FLAG and allow_out_of_order
        )
        fields = {"fields": {"history_warning": warning.kind}}
        if dry_run:
            log.warning("%s (dry-run: continuing)", warning.message, extra=fields)
            continue
        if allowed:
            log.warning("%s (accepted by %s)", warning.message, warning.flag, extra=fields)
            continue
        log.warning("%s", warning.message, extra=fields)
        if ui.interactive:
            if ui.confirm(f"{warning.message}. Sync anyway?", assume_yes):
                log.info("the user accepted: %s", warning.kind)
                continue
            raise HistoryRefused(
                f"sync cancelled: {warning.message}", f"pass {warning.flag} to skip the question"
            )
        raise HistoryRefused(warning.message, f"pass {warning.flag} to sync anyway")


# --------------------------------------------------------------------------------------------
# Running the playbooks
# --------------------------------------------------------------------------------------------


def local_inventory(directory: Path) -> Path:
    """An inventory whose only host is this machine (local connection, this Python)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "local-inventory.yml"
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    path.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": host}}}))
    return path


def standalone_player(
    *,
    root: Path,
    inventory: Path,
    limit: str,
    state_dir: Path,
    session: str,
    on_event: EventHandler | None = None,
    timeout: float | None = None,
) -> Player:
    """A :data:`Player` for the CLI commands: one playbook run per call, private data dirs under
    ``state_dir``, Ansible's remote temp files under ``/tmp/pcswitcher-<session>`` (never inside a
    subvolume that a rollback rewrites)."""
    launcher = Launcher(root, inventory, limit, session, state=state_dir, run_dir=run_dir(session))

    def play(playbook: Path, ident: str, extravars: dict[str, Any], check: bool) -> PlaybookResult | None:
        extravars = {"pcswitcher_run_id": session, **extravars}
        run = launcher.build(playbook, ident, extravars, check=check, on_event=on_event)
        return launcher.run_to_end(run, ident, timeout)

    return play


# --------------------------------------------------------------------------------------------
# The driver's API
# --------------------------------------------------------------------------------------------


@dataclass
class Safety:
    """Snapshots and history of one sync (or one CLI command) between this machine and the target."""

    root: Path
    snapshots: SnapshotsConfig
    history: HistoryConfig
    session: str
    play: Player
    dry_run: bool = False
    target_label: str = "target"
    lock_path: str = TARGET_LOCK_PATH
    #: the source (False: the "target" is this machine itself, e.g. `snapshots list` without TARGET)
    with_source: bool = True
    hosts: dict[str, str] = field(default_factory=dict)  # "source"/"target" -> host name (from history)
    history_io: HistoryIO | None = None
    snapshot_io: SnapshotIO | None = None

    @classmethod
    def from_config(cls, root: Path, config: Config, session: str, play: Player, **kw: Any) -> Safety:
        return cls(root, config.snapshots, config.history, session, play, **kw)

    # -- snapshots ---------------------------------------------------------------------------------
    def _snapshot_vars(self, action: str, **extra: Any) -> dict[str, Any]:
        s = self.snapshots
        if self.with_source:
            target_subvolumes, target_location = s.target_subvolumes, s.target_location
        else:  # this machine only: it is "the source" of the config
            target_subvolumes, target_location = s.source_subvolumes, s.source_location
        return {
            "pcswitcher_run_id": self.session,
            "btrfs_snapshots_action": action,
            "btrfs_snapshots_session": self.session,
            "btrfs_snapshots_subvolumes": list(target_subvolumes),
            "btrfs_snapshots_location": target_location,
            "btrfs_snapshots_source": self.with_source,
            "btrfs_snapshots_source_subvolumes": list(s.source_subvolumes),
            "btrfs_snapshots_source_location": s.source_location,
            "btrfs_snapshots_keep": s.keep,
            "btrfs_snapshots_older_than": s.older_than or 0,
            "btrfs_snapshots_prune": s.prune,
            "btrfs_snapshots_lock_path": self.lock_path,
            **extra,
        }

    def _snapshots(self, action: str, check: bool, what: str, **extra: Any) -> dict[str, Any]:
        if self.snapshot_io is not None and self.with_source and action in {"validate", "pre", "post"}:
            return self._snapshots_by_agents(action, check, what)
        result = self.play(
            self.root / "playbooks" / SNAPSHOTS_PLAYBOOK,
            f"snapshots-{action}",
            self._snapshot_vars(action, **extra),
            check,
        )
        if result is None or not result.ok:
            raise SafetyError(f"{what}: {failure_text(result, what)}")
        data = result.set_stats.get(SNAPSHOTS_RESULT)
        return data if isinstance(data, dict) else {}

    def _snapshots_by_agents(self, action: str, check: bool, what: str) -> dict[str, Any]:
        """What the playbook's set_stats would hold, from the agents: the target first, then the
        source (the playbook's order); a check names the problems of both machines at once."""
        assert self.snapshot_io is not None
        s = self.snapshots
        places = {
            "target": (s.target_subvolumes, s.target_location),
            "source": (s.source_subvolumes, s.source_location),
        }
        data: dict[str, Any] = {}
        problems: list[str] = []
        for side in ("target", "source"):  # a sync: both machines
            subvolumes, location = places[side]
            request = {
                "action": "validate" if action == "validate" else "snapshot",
                "phase": "pre" if action == "validate" else action,
                "session": self.session,
                "subvolumes": list(subvolumes),
                "location": location,
                "prune": s.prune and action == "post",
                "keep": s.keep,
                "older_than": s.older_than or 0,
                "check": check,
            }
            reply = self.snapshot_io(side, request)
            if reply.get("error"):
                raise SafetyError(f"{what}: {reply['error']}")
            problems += [str(p) for p in reply.get("problems") or []]
            data[side] = reply
        if problems:
            raise SafetyError(f"{what}: {'; '.join(problems)}")
        return data

    def validate(self) -> None:
        """Check subvolumes and snapshot locations on both machines; changes nothing.

        Raises :class:`SafetyError` naming every problem of both machines (one line)."""
        if not self.snapshots.enabled:
            log.warning("snapshots are disabled (snapshots.enabled: false): this sync cannot be rolled back")
            return
        self._snapshots("validate", check=self.dry_run, what="snapshot check failed")
        log.info("snapshot check passed on both machines")

    def snapshot(self, phase: str) -> dict[str, Any]:
        """Take the ``pre`` or ``post`` snapshots on both machines (dry run: only report them)."""
        if phase not in {"pre", "post"}:
            raise ValueError(f"phase must be pre or post, not {phase!r}")
        if not self.snapshots.enabled:
            return {}
        started = time.monotonic()
        data = self._snapshots(phase, check=self.dry_run, what=f"{phase}-sync snapshot failed")
        seconds = time.monotonic() - started
        log.info(
            "%s-sync snapshot phase: %.2f s on both machines",
            phase,
            seconds,
            extra={"fields": {"phase": phase, "snapshot_phase_seconds": round(seconds, 3)}},
        )
        for side in ("target", "source"):
            info = data.get(side) or {}
            host = self.target_label if side == "target" else str(info.get("host") or side)
            for path in info.get("created") or []:
                extra = {"host": host, "fields": {"snapshot": path, "phase": phase}}
                log.info("%s snapshot: %s", side, path, extra=extra)
            for path in info.get("would_create") or []:
                log.info("%s snapshot (dry-run, not taken): %s", side, path, extra={"host": host})
        would = [p for side in ("target", "source") for p in (data.get(side) or {}).get("would_create") or []]
        if would:
            log.info("would take %s-sync snapshots: %s", phase, ", ".join(would))
        if phase == "post" and self.snapshots.prune:
            self._report_prune(
                {side: (data.get(side) or {}).get("pruned") or {} for side in ("target", "source")}
            )
        return data

    def _report_prune(self, pruned: dict[str, Any]) -> None:
        """Log what the post-sync prune deleted per machine (INFO) and its problems (WARNING): a
        failed prune leaves old sessions, not a failed sync."""
        verb = "would prune (dry-run)" if self.dry_run else "pruned"
        counts: dict[str, int] = {}
        for side in ("target", "source"):
            info = pruned.get(side) or {}
            if not info:  # this machine was not snapshotted
                continue
            host = str(info.get("host") or (self.target_label if side == "target" else "source"))
            sessions = [str(s) for s in info.get("deleted_sessions") or []]
            counts[host] = len(sessions)
            for session in sessions:
                log.info(
                    "%s: %s snapshot session %s",
                    host,
                    verb,
                    session,
                    extra={"fields": {"pruned_session": session, "side": side}},
                )
            for item in info.get("skipped") or []:
                log.warning(
                    "%s: snapshot session %s left alone (%s): delete it by hand if it is not needed",
                    host,
                    item.get("path"),
                    item.get("reason"),
                )
            if info.get("msg"):
                where = "" if side == "source" else f" {self.target_label}"
                log.warning(
                    "%s: pruning old snapshot sessions failed: %s; the sync itself succeeded. Delete "
                    "old sessions with `pc-switcher snapshots cleanup%s`",
                    host,
                    str(info["msg"]).strip().splitlines()[0] if str(info["msg"]).strip() else "no reason",
                    where,
                )
        if counts:
            s = self.snapshots
            rule = f"keep {s.keep}" + (f", older than {s.older_than} s" if s.older_than else "")
            log.info(
                "%s %d old snapshot session(s) (%s; snapshots.%s)",
                verb,
                sum(counts.values()),
                ", ".join(f"{host} {n}" for host, n in counts.items()),
                rule,
                extra={"fields": {"pruned": counts}},
            )

    def list_sessions(self) -> dict[str, dict[str, Any]]:
        """Per machine that was listed ("target", "source"): ``sessions`` (oldest first), the snapshot
        ``location`` and ``on_btrfs`` (whether that location is on a btrfs file system)."""
        data = self._snapshots("list", check=False, what="listing the snapshots failed")
        return {
            side: {
                "sessions": list(info.get("sessions") or []),
                "location": info.get("location"),
                "on_btrfs": bool(info.get("on_btrfs")),
            }
            for side in ("target", "source")
            if isinstance(info := data.get(side), dict) and not info.get("skipped")
        }

    def cleanup(self, keep: int | None, older_than: int | None, dry_run: bool) -> dict[str, Any]:
        """Apply the retention on both machines (``dry_run``: only list what would be deleted)."""
        extra = {
            "btrfs_snapshots_keep": keep if keep is not None else self.snapshots.keep,
            "btrfs_snapshots_older_than": (
                older_than if older_than is not None else self.snapshots.older_than
            )
            or 0,
        }
        return self._snapshots("cleanup", check=dry_run, what="snapshot cleanup failed", **extra)

    def rollback(self, session: str | None, dry_run: bool, checksum: bool = True) -> dict[str, Any]:
        """Roll the target back to ``session``'s pre-sync snapshots (None: the newest).

        ``self.session`` is the new session that keeps the replaced state. Raises
        :class:`~pcswitcher.errors.LockHeld` while a sync holds the target's lock."""
        extra = {
            "btrfs_snapshots_rollback_session": session or "",
            "btrfs_snapshots_checksum": checksum,
            "btrfs_snapshots_exclude": [self.history.path],
        }
        result = self.play(
            self.root / "playbooks" / SNAPSHOTS_PLAYBOOK,
            "snapshots-rollback",
            self._snapshot_vars("rollback", **extra),
            dry_run,
        )
        if result is None or not result.ok:
            text = failure_text(result, "the rollback")
            if "lock" in text and "is held" in text:
                raise LockHeld(text, "run the rollback again once the sync has ended")
            raise SafetyError(f"rollback failed: {text}")
        data = result.set_stats.get(SNAPSHOTS_RESULT) or {}
        return dict((data.get("target") or {}) if isinstance(data, dict) else {})

    # -- history -----------------------------------------------------------------------------------
    def _history(self, action: str, check: bool, **extra: Any) -> dict[str, Any]:
        if self.history_io is not None:
            return self._history_by_agents(action, extra)
        result = self.play(
            self.root / "playbooks" / HISTORY_PLAYBOOK,
            f"history-{action}",
            {
                "pcswitcher_run_id": self.session,
                "sync_history_action": action,
                "sync_history_session": self.session,
                "sync_history_path": self.history.path,
                "sync_history_source_path": self.history.path,
                "sync_history_source": self.with_source,
                **extra,
            },
            check,
        )
        if result is None or not result.ok:
            raise SafetyError(f"sync history {action} failed: {failure_text(result, 'the history')}")
        data = result.set_stats.get(HISTORY_RESULT)
        return data if isinstance(data, dict) else {}

    def _history_by_agents(self, action: str, extra: dict[str, Any]) -> dict[str, Any]:
        """What the playbook's set_stats would hold, from the agents (source and target)."""
        assert self.history_io is not None
        peers = {
            "source": extra.get("sync_history_target_host", ""),
            "target": extra.get("sync_history_source_host", ""),
        }
        data: dict[str, Any] = {}
        for side in ("target", "source") if self.with_source else ("target",):
            request = {
                "action": action,
                "path": self.history.path,
                "role": side if action == "record" else "",
                "peer": peers[side],
                "session": self.session,
            }
            reply = self.history_io(side, request)
            if reply.get("bad_path"):
                raise HistoryPathError(str(reply["error"]))
            if reply.get("error"):
                raise SafetyError(f"sync history {action} failed: {reply['error']}")
            data[side] = reply
        return data

    def read_history(self) -> tuple[MachineHistory, MachineHistory]:
        """Both machines' histories (source, target); read-only, also in a dry run."""
        data = self._history("read", check=False)
        sides = []
        for side in ("source", "target"):
            info = data.get(side) or {}
            host = str(info.get("host") or side)
            self.hosts[side] = host
            sides.append(
                MachineHistory(
                    host=host,
                    path=str(info.get("path") or self.history.path),
                    last=_last(info.get("history")),
                    problem=str(info.get("problem") or ""),
                )
            )
        return sides[0], sides[1]

    def history_warnings(self) -> list[HistoryWarning]:
        """The reasons to ask before this sync changes anything (see :func:`evaluate_history`)."""
        source, target = self.read_history()
        return evaluate_history(source, target)

    def record_history(self) -> None:
        """Record this session on both machines (after all jobs succeeded; never in a dry run)."""
        if self.dry_run:
            log.info("dry-run: the sync history is not written")
            return
        if not {"source", "target"} <= set(self.hosts):
            self.read_history()
        self._history(
            "record",
            check=False,
            sync_history_source_host=self.hosts["source"],
            sync_history_target_host=self.hosts["target"],
        )
        log.info(
            "sync history recorded: %s -> %s, session %s",
            self.hosts["source"],
            self.hosts["target"],
            self.session,
        )
