#!/usr/bin/env python3
"""Will the target have room? The folder_sync job's space check (roles/folder_sync/tasks/validate.yml).

Run on the source, read-only, after the other checks passed: by ``folder_sync_check.py`` in its
process (:func:`start_target_figures` first, :func:`space_check` once the checks passed), or alone::

    folder_sync_space.py AGENT INPUT

``AGENT`` is the path of pc-switcher's agent (``pcswitcher/remote/agent.py``, linked beside this script):
its disk figures are what the run's disk guard watches (on btrfs, data written but not yet
committed is not free), and the same code measures the target, sent over the sync's own ssh command
to the target's Python (:data:`LOADER`: the paths as JSON on stdin, never on a command line), as the
login user: statvfs needs no privilege.
``INPUT`` (JSON): ``folders`` (the plan's folders: source, target, rsync args), ``ssh``, ``host``,
``name`` (of the target, for messages), ``python`` (the target's interpreter) and ``threshold``
(``pcswitcher_disk_runtime_minimum``: ``{"percent": P}`` or ``{"bytes": N}``, with ``text``).

For each filesystem of the target that receives folders, the bytes the sync writes there must
leave at least the threshold free, or the sync is refused before anything changed:

1. cheap bound, no tree walk: the used space of the source filesystems of those folders
   (statvfs), each filesystem once. When even that fits, done.
2. else the exact figure: rsync's own ``--dry-run --stats`` with the job's arguments, per folder:
   "Total transferred file size" plus 4 KiB per file written (block rounding, metadata).

No credit is given for deletions or for the old copies of replaced files: rsync writes a new file
beside the old one, deletes only after the transfers (``--delete-delay``), and with snapshots on the
pre-sync snapshot keeps both anyway. Sparse files count at their full size in step 2 (an
over-estimate). Compressed or shared (reflinked) data on the source may make step 1's bound too low;
the run's disk guard then stops the sync at ``runtime_minimum``.

Prints ``{"writes": [...]}`` (one entry per target filesystem) on stdout; a refusal is ONE line on
stderr (the task fails on it), exit code 0. Python 3.8+, standard library only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from types import ModuleType
from typing import Any

TIMEOUT = 30  # s for the target's figures (one ssh session)
FILE_ALLOWANCE = 4096  # bytes per file written: block rounding and metadata
_STAT = re.compile(r"^(?P<key>[A-Za-z][A-Za-z ]+):\s+(?P<value>[\d,]+)(?:\s+\((?P<detail>[^)]*)\))?")


def load_agent(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("pcswitcher_agent", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the agent from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def breached(threshold: dict[str, Any], free: int, total: int) -> bool:
    """True when ``free`` bytes (of ``total``) is below the threshold (as config.Threshold)."""
    if "percent" in threshold:
        return free * 100 < float(threshold["percent"]) * total
    return free < int(threshold["bytes"])


def progress(**line: Any) -> None:
    path = os.environ.get("PCSWITCHER_PROGRESS", "")
    if path:
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")
        except OSError:
            pass


# The target's program (``python -c``): a fixed text, no path in it. Its stdin: the target folders
# as one JSON line, then the agent's source, which it runs as a module and asks for the figure of
# each folder. No path passes through a command line or a shell.
LOADER = (
    "import json,sys;paths=json.loads(sys.stdin.readline());ns={'__name__':'pcswitcher_agent'};"
    "exec(compile(sys.stdin.read(),'pcswitcher_agent.py','exec'),ns);"
    "print(json.dumps({'t':'disk','disk':[ns['disk_figure'](p) for p in paths]}))"
)


def _bare_host(plan: dict[str, Any]) -> str:
    host = str(plan["host"])  # as in rsync's HOST:PATH, an IPv6 address in brackets: ssh takes it bare
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def start_target_figures(agent_path: str, plan: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Start the target's measure (one ssh session, its input already written and closed);
    :func:`target_figures` collects it. Started early by the job's check, beside its own session."""
    targets = [folder["target"] for folder in plan["folders"]]
    remote = shlex.join([plan.get("python") or "python3", "-c", LOADER])
    with open(agent_path, "rb") as fh:
        stdin = json.dumps(targets).encode() + b"\n" + fh.read()
    # from a file, not a pipe: the agent's source is larger than a pipe holds, and nobody writes
    # while the caller goes on
    with tempfile.TemporaryFile() as fh_in:
        fh_in.write(stdin)
        fh_in.seek(0)
        return subprocess.Popen(
            [*shlex.split(plan["ssh"]), _bare_host(plan), remote],
            stdin=fh_in,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )


def target_figures(plan: dict[str, Any], proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """The agent's disk figure of each target folder, from :func:`start_target_figures`."""
    name = plan.get("name") or _bare_host(plan)
    targets = [folder["target"] for folder in plan["folders"]]
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(
            f"cannot measure free space on {name} (no answer in {TIMEOUT} s): check the network"
        ) from None
    try:
        figures = json.loads(stdout.decode())["disk"]
    except (ValueError, KeyError, TypeError):
        why = stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(
            f"cannot measure free space on {name} "
            f"({why[-1] if why else 'rc ' + str(proc.returncode)}): check python3 on the target"
        ) from None
    if len(figures) != len(targets):
        raise RuntimeError(f"the agent on {name} measured {len(figures)} of {len(targets)} folders")
    for figure in figures:
        if "error" in figure or not figure.get("total"):
            raise RuntimeError(
                f"cannot measure free space of {figure.get('path')} on {name}: "
                f"{figure.get('error') or 'not on a disk filesystem'}: set another folder target"
            )
    return list(figures)


def source_used(agent: ModuleType, source: str) -> tuple[str, int]:
    """(filesystem, used bytes) of the filesystem of ``source`` (a btrfs once, whatever the subvolume)."""
    st = os.statvfs(source)
    uuid = agent.btrfs_filesystem(st.f_fsid)
    return uuid or f"fsid:{st.f_fsid:x}", (st.f_blocks - st.f_bfree) * st.f_frsize


def rsync_estimate(folder: dict[str, Any]) -> int:
    """Bytes the folder's rsync would write on the target: its own dry-run statistics."""
    args = list(folder["args"])
    if args[-2:-1] != [folder["source"]]:
        raise RuntimeError(
            f"the rsync arguments of {folder['source']} do not end with the folder: fix the role"
        )
    extra = ["--dry-run", "--stats", "--info=progress0", "--out-format="]
    argv = ["rsync", *args[:-2], *extra, *args[-2:]]
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    stats: dict[str, tuple[int, str]] = {}
    for line in res.stdout.decode(errors="replace").splitlines():
        match = _STAT.match(line)
        if match:
            stats[match.group("key").strip()] = (
                int(match.group("value").replace(",", "")),
                match.group("detail") or "",
            )
    if res.returncode not in (0, 24) or "Total transferred file size" not in stats:
        lines = res.stderr.decode(errors="replace").strip().splitlines()
        why = lines[-1] if lines else f"rc {res.returncode}"
        raise RuntimeError(
            f"rsync --dry-run of {folder['source']} failed ({why}): cannot tell whether the target has room"
        )
    created, detail = stats.get("Number of created files", (0, ""))
    created_regular = re.search(r"reg: ([\d,]+)", detail)
    other_created = created - (int(created_regular.group(1).replace(",", "")) if created_regular else 0)
    files = stats.get("Number of regular files transferred", (0, ""))[0] + max(other_created, 0)
    return stats["Total transferred file size"][0] + FILE_ALLOWANCE * files


def check_filesystem(
    agent: ModuleType, plan: dict[str, Any], figure: dict[str, Any], folders: list[dict[str, Any]]
) -> tuple[dict[str, Any], str]:
    """The writes onto one target filesystem and "" or the problem (one line)."""
    threshold = plan["threshold"]
    free, total = int(figure["free"]), int(figure["total"])
    used = dict(source_used(agent, folder["source"]) for folder in folders)
    bound = sum(used.values())
    report: dict[str, Any] = {"target": figure["path"], "free": free, "total": total, "bound": bound}
    names = ", ".join(folder["source"] for folder in folders)
    if not breached(threshold, free - bound, total):
        progress(
            level="DEBUG",
            message=f"{plan['name']}:{figure['path']} has {human(free)} free; {names} cannot write more "
            f"than {human(bound)} (used space of the source filesystems): room enough",
        )
        return report, ""
    progress(
        level="INFO",
        message=f"{names} may not fit on {plan['name']}:{figure['path']} ({human(free)} free): "
        "measuring what the sync would write (rsync --dry-run)",
    )
    writes = 0
    for folder in folders:
        progress(item=f"space needed by {folder['source']} (rsync --dry-run)")
        writes += rsync_estimate(folder)
    report["writes"] = writes
    left = free - writes
    if not breached(threshold, left, total):
        return report, ""
    what = "folder" if len(folders) == 1 else "folders"
    return report, (
        f"not enough space on {plan['name']}: {what} {names} would write {human(writes)} into "
        f"{figure['path']}, whose filesystem has {human(free)} free; {human(max(left, 0))} would be left, "
        f"below disk.runtime_minimum {threshold.get('text') or threshold}: free space on the target, "
        "exclude files from the sync (filters) or lower disk.runtime_minimum"
    )


def space_check(
    agent_path: str, plan: dict[str, Any], started: subprocess.Popen[bytes] | None = None
) -> tuple[list[dict[str, Any]], str]:
    """The writes onto each target filesystem, and "" or the refusal (one line). ``started``: the
    target's measure, when :func:`start_target_figures` started it already."""
    threshold = plan.get("threshold")
    refusal = ""
    if plan.get("folders") and (
        not isinstance(threshold, dict) or not ({"percent", "bytes"} & set(threshold))
    ):
        refusal = f"pcswitcher_disk_runtime_minimum is not a threshold ({threshold!r}): fix the extra vars"
    if not plan.get("folders") or refusal:
        if started is not None:  # nothing to measure: end the session, leave nothing running
            started.kill()
            started.communicate()
        return [], refusal
    try:
        agent = load_agent(agent_path)
        figures = target_figures(plan, started or start_target_figures(agent_path, plan))
        groups: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        for index, folder in enumerate(plan["folders"]):  # target_figures: one figure per folder
            figure = figures[index]
            groups.setdefault(str(figure["fs"]), (figure, []))[1].append(folder)
        results = [check_filesystem(agent, plan, figure, folders) for figure, folders in groups.values()]
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return [], str(exc)
    return [report for report, _ in results], "; ".join(problem for _, problem in results if problem)


def main(argv: list[str]) -> int:
    writes, problem = space_check(argv[1], json.loads(argv[2]))
    sys.stdout.write(json.dumps({"writes": writes}) + "\n")
    if problem:
        sys.stderr.write(problem + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
