#!/usr/bin/env python3
"""Read-only checks of the folder_sync job on the source (run by roles/folder_sync/tasks/validate.yml).

Takes the ``check`` part of the job's plan (JSON, from templates/plan.json.j2) as its one argument
(or on stdin) and prints ``{"problems": [...]}``: one line per problem, naming it and the fix. A
folder's filter list is ``fixed + rules + globals``, in the order of the sync's rsync arguments.
It checks that rsync is installed, that every source folder is a readable directory, that every
filter file exists, that the filter rules parse (rsync ``--list-only`` of ``/dev/null`` with the
rules: rsync parses every rule and merge file at start-up and lists one device node, nothing is
written), that the fixed never-sync rules come first, and that the target's rsync answers over the
same ssh command and remote rsync path as the sync. Changes nothing. Python 3.8+, standard library
only.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from typing import Any

TIMEOUT = 30


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def check(plan: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if shutil.which("rsync") is None:
        return ["rsync is missing on the source: install rsync"]
    for folder in plan.get("folders", []):
        source = folder["source"].rstrip("/") or "/"
        if not os.path.isdir(source):
            problems.append(
                f"source folder {source} does not exist on the source: create it, or disable it "
                f"(enabled: false) or remove it from folder_sync.folders"
            )
        elif not os.access(source, os.R_OK | os.X_OK):
            problems.append(f"source folder {source} is not readable by this user: run pc-switcher as root")
        filter_file = folder.get("filter_file") or ""
        if filter_file and not os.path.isfile(filter_file):
            problems.append(
                f"filter file {filter_file} of {source} does not exist on the source: "
                f"create it or remove filter_file"
            )
            continue
        filters = [*plan.get("fixed", []), *folder.get("rules", []), *plan.get("globals", [])]
        if not any(rule.startswith("--filter=- .ssh/id_") for rule in filters[:1]):
            problems.append(f"the never-sync rules are not the first filter rules of {source}: fix the role")
        res = subprocess.run(
            ["rsync", "--list-only", *filters, "/dev/null"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        if res.returncode != 0:
            problems.append(
                f"the filter rules of {source} do not parse: "
                f"{_last_line(res.stderr) or 'rc ' + str(res.returncode)}: "
                "fix folder_sync filters / filter_file"
            )
    if plan.get("folders"):
        argv = [*shlex.split(plan["ssh"]), plan["host"], f"{plan['remote_rsync']} --version"]
        try:
            res = subprocess.run(
                argv, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False
            )
            if res.returncode != 0 or "rsync" not in res.stdout:
                problems.append(
                    f"rsync on the target does not answer over ssh ({plan['remote_rsync']}): "
                    f"{_last_line(res.stderr) or 'rc ' + str(res.returncode)}: install rsync on the target "
                    f"and check the inventory's ssh settings (host key, key, user)"
                )
        except subprocess.TimeoutExpired:
            problems.append(f"ssh to the target for rsync timed out after {TIMEOUT} s: check the network")
    return problems


def main() -> int:
    plan = json.loads(sys.argv[1]) if len(sys.argv) > 1 else json.load(sys.stdin)
    sys.stdout.write(json.dumps({"problems": check(plan)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
