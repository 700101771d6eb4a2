#!/usr/bin/env python3
"""Read-only checks of the folder_sync job (run on the source by roles/folder_sync/tasks/validate.yml).

Takes the ``check`` part of the job's plan (JSON, from templates/plan.json.j2) as its first argument
(or on stdin) and prints ``{"problems": [...]}``: one line per problem, naming it and the fix. A
folder's filter list is ``fixed + rules + globals``, in the order of the sync's rsync arguments.

On the source it checks that rsync is installed, that every source folder is a readable directory,
that every filter file exists, that the filter rules parse (rsync ``--list-only`` of ``/dev/null``
with the rules: rsync parses every rule and merge file at start-up and lists one device node,
nothing is written) and that the fixed never-sync rules come first.

On the target it runs one ssh session, with the sync's own ssh command (so through the run's ssh
master when there is one): the sync's exact remote rsync path with ``--version`` (host key, key,
user and ``sudo -n`` as for the sync; 3.1.3 or newer: :data:`RSYNC_MINIMUM`), then
``TARGET_PROGRAM`` (its input on stdin): rsync installed, no symlink anywhere in a target path,
every target folder a directory the sync can write, or, when it does not exist yet, its parent (as
root through ``sudo -n`` with become).

With ``SPACE_SCRIPT SPACE_INPUT`` after the plan (the role's validate phase), it then runs the space
check of ``folder_sync_space.py`` (imported from that path; its input: ``agent``, ``folders``,
``threshold``, with the plan's ssh command, host, name and python) when no problem was found: its ssh session
to the target, which measures the target's free space, is started first and runs beside the checks'
session. Prints ``{"problems": [...], "writes": [...]}``. Changes nothing on either machine.
Python 3.8+, standard library only.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from types import ModuleType
from typing import Any

TIMEOUT = 30

# The oldest rsync the target may run: 3.1.3 is the first whose receiver compares mtimes to the
# nanosecond (the job's --modify-window=-1); an older one compares whole seconds and would skip a
# file rewritten at the same size in the second of the last sync. Debian has it since buster (10).
RSYNC_MINIMUM = (3, 1, 3)
RSYNC_VERSION = re.compile(r"\Arsync +version v?(\d+)\.(\d+)\.(\d+)\b")

# The target's checks: a fixed Python program (``python3 -c PROGRAM``, the same text every run), run
# in the same ssh session as the ``rsync --version``, as the user the sync's rsync runs as: the login
# user, or root through ``sudo -n`` when the sync's rsync is (become; pc-switcher's agent and Ansible
# need passwordless sudo there already), so that it sees every component of a target path that rsync
# will follow, in root-only directories too. Its input comes as JSON on stdin, never on a command
# line: ``{"name": HOST (for the messages), "become": true when the sync's rsync runs as root through
# sudo -n, "targets": [...]}``. No path passes through a shell. Prints MARK, then one line per
# problem; nothing on stderr.
# - Every existing component of a target path is looked at with lstat, from / down: a symlink
#   anywhere in it is refused (rsync would write, and --delete delete, where the link points).
# - Not become: the login user is the user rsync runs as, so the target (or its parent) must be
#   writable by it.
# - Become: rsync runs as root, which writes anywhere: writability is not checked.
# - A component that cannot be looked at (an error other than "does not exist") is refused: what is
#   not seen cannot be vouched for.
MARK = "--pcswitcher-target-check--"
TARGET_PROGRAM = r"""
import json, os, pwd, shutil, stat, sys
data = json.load(sys.stdin)
host, become = data["name"], data["become"]
out = []
say = out.append
def user():
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
root = "run as root or set ansible_become"
def shown(name):  # control characters and non-UTF-8 bytes as rsync shows them (\\#012): one line
    out = ""
    for char in name:
        code = ord(char)
        code = code - 0xDC00 if 0xDC80 <= code <= 0xDCFF else code
        out += "\\#%03o" % code if code < 0x20 or code == 0x7F or ord(char) != code else char
    return out
if shutil.which("rsync") is None:
    say("rsync is missing on the target %s: install rsync there" % host)
for target in data["targets"]:
    parts = [part for part in target.split("/") if part]
    t = "/" + "/".join(parts)
    p = os.path.dirname(t)
    state, cur = "exists", "/"
    for part in parts:
        cur = os.path.join(cur, part)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            state = "missing"
            break
        except OSError as exc:
            say("target folder %s on %s: %s cannot be checked (%s): make it readable by %s or set "
                "another target" % (t, host, cur, exc.strerror, user()))
            state = "unknown"
            break
        if stat.S_ISLNK(st.st_mode):
            say("target folder %s on %s: %s is a symlink (to %s): rsync would write where it points: "
                "replace the link by a directory or set another target"
                % (t, host, cur, shown(os.readlink(cur))))
            state = "link"
            break
        if not stat.S_ISDIR(st.st_mode):
            if cur == t:
                say("target %s on %s is not a directory: move it away or set another target" % (t, host))
            else:
                say("the parent %s of the target folder %s on %s is not a directory: "
                    "move it away or set another target" % (cur, t, host))
            state = "bad"
            break
    if state == "exists" and not become and not os.access(t, os.W_OK):
        say("target folder %s on %s is not writable by %s: %s" % (t, host, user(), root))
    elif state == "missing" and cur == t:
        if not become and not os.access(p, os.W_OK):
            say("the parent %s of the target folder %s on %s is not writable by %s: %s"
                % (p, t, host, user(), root))
    elif state == "missing":
        say("the parent %s of the target folder %s does not exist on %s: create it" % (p, t, host))
sys.stdout.write("MARK\n" + "".join(line + "\n" for line in out))
""".replace("MARK", MARK)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def check_source(plan: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if shutil.which("rsync") is None:
        return ["rsync is missing on the source: install rsync"]
    for folder in plan.get("folders", []):
        source = folder["source"].rstrip("/") or "/"
        if os.path.lexists(source) and not os.path.isdir(source):
            problems.append(
                f"source folder {source} on the source is not a directory: set folder_sync.folders "
                "to a directory, or disable it (enabled: false)"
            )
        elif not os.path.isdir(source):
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
    return problems


def target_command(plan: dict[str, Any]) -> str:
    """The remote command: the login shell runs the remote rsync (as the sync does), then the fixed
    checks program, which reads the target folders from stdin (:func:`target_input`).

    ``remote_rsync`` is already a shell command (it is rsync's ``--rsync-path``, built from fixed
    words and the quoted run id); the program and the interpreter are quoted for the login shell.
    No path of the config is on this command line.
    """
    python = plan.get("python") or "python3"
    sudo = "sudo -n -- " if plan.get("become") else ""
    return (
        f"{plan['remote_rsync']} --version </dev/null; "
        f"{sudo}{shlex.quote(python)} -c {shlex.quote(TARGET_PROGRAM)}"
    )


def target_input(plan: dict[str, Any]) -> str:
    targets = [folder["target"] for folder in plan.get("folders", [])]
    name = plan.get("name") or plan["host"]
    return json.dumps({"name": name, "become": bool(plan.get("become")), "targets": targets})


def start_target_check(plan: dict[str, Any]) -> subprocess.Popen[str]:
    """Start the target's checks (one ssh session); :func:`check_target` collects them. Started
    first, so that the ssh session runs while the source is checked."""
    host = plan["host"]  # as in rsync's HOST:PATH, an IPv6 address in brackets: ssh takes it bare
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    argv = [*shlex.split(plan["ssh"]), host, target_command(plan)]
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def check_target(plan: dict[str, Any], proc: subprocess.Popen[str]) -> list[str]:
    try:
        stdout, stderr = proc.communicate(target_input(plan), timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return [f"ssh to the target for rsync timed out after {TIMEOUT} s: check the network"]
    answer, mark, checks = stdout.partition(MARK + "\n")
    problems = [line.strip() for line in checks.splitlines() if line.strip()]
    why = _last_line(stderr) or f"rc {proc.returncode}"
    # rsync --version went first: its answer is the output before the mark. "missing" says more
    # than "does not answer", so a missing rsync is not reported twice.
    if "rsync" not in answer and not any(p.startswith("rsync is missing on the target") for p in problems):
        problems.insert(
            0,
            f"rsync on the target does not answer over ssh ({plan['remote_rsync']}): {why}: "
            "install rsync on the target and check the inventory's ssh settings (host key, key, user)",
        )
    elif not mark:
        problems.append(
            f"the target folders could not be checked over ssh: {why}: install python3 on the target "
            "(or set ansible_python_interpreter)"
        )
    if "rsync" in answer:
        problems[:0] = rsync_version_problem(answer, plan.get("name") or plan["host"])
    return problems


def rsync_version_problem(answer: str, name: str) -> list[str]:
    """The target's ``rsync --version`` must name a version of :data:`RSYNC_MINIMUM` or newer (an
    allowlist: an answer that names none, such as another program's, is refused too)."""
    found = RSYNC_VERSION.match(answer.lstrip())
    if found and tuple(int(part) for part in found.groups()) >= RSYNC_MINIMUM:
        return []
    first = (answer.strip().splitlines() or [""])[0].strip()[:80]
    minimum = ".".join(str(part) for part in RSYNC_MINIMUM)
    return [
        f"rsync on {name} is too old or unknown ({first!r}): the sync needs rsync {minimum} or newer there "
        "(its nanosecond mtime comparison): install a newer rsync on the target"
    ]


def load_space(path: str) -> ModuleType:
    """``folder_sync_space.py`` (the role's file beside the agent it loads), imported from its folder."""
    sys.path.insert(0, os.path.dirname(path))
    return importlib.import_module(os.path.splitext(os.path.basename(path))[0])


def main(argv: list[str]) -> int:
    """``PLAN [SPACE_SCRIPT SPACE_INPUT]``: the checks, then, when they found no problem, the space
    check (folder_sync_space.py, its input with ``agent``: the agent's path). The target's measure
    for the space check runs in its own ssh session beside the checks' (read-only, both)."""
    plan = json.loads(argv[1]) if len(argv) > 1 else json.load(sys.stdin)
    target = start_target_check(plan)
    if len(argv) <= 3:
        sys.stdout.write(json.dumps({"problems": check_source(plan) + check_target(plan, target)}) + "\n")
        return 0
    space = load_space(argv[2])
    # the target's connection and name are the checks' own: the space input adds what it measures
    connection = {key: plan[key] for key in ("ssh", "host", "name", "python") if key in plan}
    space_input = {**connection, **json.loads(argv[3])}
    agent = space_input["agent"]
    measure = None
    if space_input.get("folders"):
        with contextlib.suppress(OSError):  # space_check tries again and reports it
            measure = space.start_target_figures(agent, space_input)
    problems = check_source(plan) + check_target(plan, target)
    writes: list[dict[str, Any]] = []
    if not problems:
        writes, problem = space.space_check(agent, space_input, measure)
        problems += [problem] if problem else []
    elif measure is not None:  # read-only and short: let it end rather than leave it running
        with contextlib.suppress(RuntimeError):
            space.target_figures(space_input, measure)
    sys.stdout.write(json.dumps({"problems": problems, "writes": writes}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
