"""Run :class:`pcswitcher.run.safety.Safety` calls inside a sandbox machine (the source) and print JSON.

``python -m tests.integration.safety_probe REQUEST_JSON`` with a request like::

    {"inventory": "...", "target": "target", "session": "...", "dry_run": false,
     "snapshots": {...SnapshotsConfig fields...}, "history": {"path": ...}, "lock_path": "...",
     "calls": [["validate"], ["snapshot", "pre"], ["history_warnings"], ["record_history"]]}

Prints ``{"results": [...], "error": null | {"type": ..., "message": ..., "exit_code": ...}}``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from pcswitcher import paths
from pcswitcher.config.settings import HistoryConfig, SnapshotsConfig
from pcswitcher.errors import PcsError
from pcswitcher.run.safety import TARGET_LOCK_PATH, HistoryWarning, Safety, standalone_player


def main(argv: list[str]) -> int:
    request: dict[str, Any] = json.loads(argv[0])
    session = request["session"]
    snaps = dict(request.get("snapshots") or {})
    for key in ("source_subvolumes", "target_subvolumes"):
        if key in snaps:
            snaps[key] = tuple(snaps[key])
    safety = Safety(
        root=paths.project_root(),
        snapshots=SnapshotsConfig(**snaps),
        history=HistoryConfig(**(request.get("history") or {})),
        session=session,
        play=standalone_player(
            root=paths.project_root(),
            inventory=Path(request["inventory"]),
            limit=request["target"],
            state_dir=paths.runs_dir() / session,
            session=session,
        ),
        dry_run=bool(request.get("dry_run")),
        lock_path=request.get("lock_path") or TARGET_LOCK_PATH,
    )
    results: list[Any] = []
    error = None
    try:
        for name, *args in request["calls"]:
            value = getattr(safety, name)(*args)
            if isinstance(value, list):
                value = [dataclasses.asdict(v) if isinstance(v, HistoryWarning) else v for v in value]
            results.append(value)
    except PcsError as exc:
        error = {"type": type(exc).__name__, "message": exc.message, "exit_code": int(exc.exit_code)}
    print(json.dumps({"results": results, "error": error}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
