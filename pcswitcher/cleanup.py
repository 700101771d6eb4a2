"""The cleanup playbook: run by the abort path, and by ``pc-switcher cleanup`` for a run that died."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from . import paths
from .agent import RUN_ID_RE, run_dir
from .errors import ExitCode, UsageError
from .inventory import load_inventory
from .runner import PlaybookResult, PlaybookRun, prepare_bin_dir, standard_envvars
from .ui import Ui

log = logging.getLogger("pcswitcher")
JIDS_FILE = "async_jids.json"


def recorded_jids(run_state: Path) -> list[str]:
    """The async job ids a run recorded while it ran (see Registry)."""
    try:
        data = json.loads((run_state / JIDS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [str(j) for ids in data.values() for j in ids] if isinstance(data, dict) else []


def cleanup_playbook_run(
    *,
    root: Path,
    inventory: Path,
    target: str,
    run_id: str,
    jids: Sequence[str],
    private_data_dir: Path,
    on_process: Callable[[psutil.Process], None] | None = None,
    timeout: float = 60.0,
    source: bool = True,
) -> PlaybookResult:
    """Run ``playbooks/cleanup.yml`` against TARGET for RUN_ID and wait for it (at most ``timeout``)."""
    env = standard_envvars(
        project_dir=root,
        bin_dir=prepare_bin_dir(private_data_dir / "bin"),
        control_path=Path(run_dir(run_id)) / "cm",
        run_dir=None,  # its own Ansible temp files must not live in the directory it removes
        local_tmp=private_data_dir / "tmp",
        ssh_keepalive=1,
    )
    run = PlaybookRun(
        root / "playbooks" / "cleanup.yml",
        project_dir=root,
        private_data_dir=private_data_dir,
        ident="cleanup",
        inventory=inventory.resolve(),
        limit=target,
        extravars={"cleanup_run_id": run_id, "cleanup_async_jids": list(jids), "cleanup_source": source},
        envvars=env,
    )
    return run.run_to_end(timeout, on_process)


def newest_run_id() -> str | None:
    runs = sorted(p.name for p in paths.runs_dir().glob("*") if p.is_dir() and RUN_ID_RE.match(p.name))
    return runs[-1] if runs else None


def run_cleanup(target: str, run_id: str | None, inventory_path: Path, ui: Ui) -> ExitCode:
    """``pc-switcher cleanup TARGET [--run ID]``."""
    inventory = load_inventory(inventory_path)
    host = inventory.resolve(target)
    if run_id is None:
        run_id = newest_run_id()
        if run_id is None:
            raise UsageError(
                f"no run recorded in {paths.runs_dir()}", "pass --run RUN_ID (see `pc-switcher logs`)"
            )
    if not RUN_ID_RE.match(run_id) or not re.match(r"^[\w.-]+$", run_id):
        raise UsageError(f"--run {run_id!r} is not a run id", "pass an id shown by `pc-switcher logs`")
    run_state = paths.runs_dir() / run_id
    jids = recorded_jids(run_state)
    ui.message(
        f"cleaning up run {run_id} on {host.describe()} and this machine ({len(jids)} async job id(s))"
    )
    result = cleanup_playbook_run(
        root=paths.project_root(),
        inventory=inventory_path,
        target=host.name,
        run_id=run_id,
        jids=jids,
        private_data_dir=run_state / "cleanup-manual",
    )
    if not result.ok:
        ui.error(f"cleanup of run {run_id} on {host.name} failed: {result.reason(result.status)}")
        return ExitCode.FAILED
    report = result.set_stats.get("cleanup_result") or {}
    for side in ("target", "source"):
        killed = (report.get(side) or {}).get("killed") or []
        removed = (report.get(side) or {}).get("removed") or []
        ui.message(f"{side}: killed {len(killed)} process(es), removed {len(removed)} path(s)")
    return ExitCode.OK
