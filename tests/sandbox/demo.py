"""``python -m tests.sandbox demo`` (``make demo``): a real sync into a local sandbox machine.

Brings up two sandbox machines, ``workstation1`` (the source: pc-switcher runs inside it) and
``workstation2`` (the target, reached over ssh on a loopback address), seeds some user data on the
source, runs ``pc-switcher sync workstation2`` with the live display on this terminal, shows what
arrived on the target and the end of the session log, and tears both machines down.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from pcswitcher.jobs.discovery import discover_jobs
from tests.sandbox.machine import BTRFS_TOP, Machine, Sandbox

REPO = Path(__file__).resolve().parents[2]
PC_SWITCHER = str(REPO / ".venv" / "bin" / "pc-switcher")
DEMO_FILES = {
    "/home/alice/notes/todo.md": "# todo\n- resume work on workstation2\n",
    "/home/alice/projects/app/main.py": "print('hello from workstation1')\n",
    "/home/alice/.config/app/settings.ini": "[ui]\ntheme = dark\n",
    "/home/alice/.cache/thumbnails/big.bin": "x" * 4096,
    "/home/alice/.ssh/id_ed25519": "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n",
    "/home/alice/.ssh/id_ed25519.pub": "ssh-ed25519 AAAA demo\n",
}


def _say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def demo_config(jobs: set[str], durations: tuple[int, int]) -> dict[str, object]:
    config: dict[str, object] = {"jobs": {}}
    enabled: dict[str, bool] = {}
    if "folder_sync" in jobs:
        enabled["folder_sync"] = True
        # a user filter: skip caches, keep pip's (rsync filter rules, first match wins)
        config["folder_sync"] = {
            "folders": [{"source": "/home"}],
            "filters": ["+ .cache/pip/***", "- .cache/*"],
        }
    enabled["dummy_success"] = True
    config["dummy_success"] = {"source_duration": durations[0], "target_duration": durations[1]}
    config["jobs"] = enabled
    config["disk"] = {"paths": {"source": ["/home"], "target": ["/home"]}}
    # read-only btrfs snapshots of /home on both machines, kept on each machine's btrfs top level
    location = f"{BTRFS_TOP}/snapshots"
    config["snapshots"] = {
        "subvolumes": {"source": ["/home"], "target": ["/home"]},
        "location": {"source": location, "target": location},
    }
    return config


def seed(source: Machine) -> None:
    for inside, content in DEMO_FILES.items():
        path = source.path(inside)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    source.path("/home/alice/.ssh").chmod(0o700)


def tree(machine: Machine, top: str) -> str:
    result = machine.run(["find", top, "-printf", "%M %10s  %p\n"])
    return "\n".join(sorted(result.stdout.splitlines()))


LOG_END_RECORDS = 8
_RECORD_START = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} ")


def log_end(text: str, records: int) -> list[str]:
    """The lines of the last ``records`` records of ``pc-switcher logs`` output: a record starts with
    its time stamp; its detail lines (indented) follow it. Never starts in the middle of one."""
    starts = [i for i, line in enumerate(text.splitlines()) if _RECORD_START.match(line)]
    if not starts:
        return text.splitlines()
    return text.splitlines()[starts[max(0, len(starts) - records)] :]


def run_demo(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("error: the demo needs root (namespaces, loop devices, mounts) — run `sudo make demo`")
        return 2
    jobs = set(discover_jobs(REPO))
    with Sandbox() as sb:
        _say("two sandbox machines: own hostname, btrfs /home, sshd on loopback")
        source = sb.add("workstation1")
        target = sb.add("workstation2")
        print(f"source workstation1: pid namespace init {source.init_pid}")
        print(f"target workstation2: ssh {target.address}:{target.port} (host key checked)")
        print(f"inventory: {sb.inventory_path}")
        seed(source)
        config = demo_config(jobs, (args.source_duration, args.target_duration))
        cfg = source.path("/root/.config/pc-switcher/config.yml")
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        _say("config (in workstation1's ~/.config/pc-switcher/config.yml)")
        print(textwrap.indent(cfg.read_text(), "  "))
        _say("pc-switcher sync workstation2   (Ctrl+C aborts cleanly)")
        argv = [PC_SWITCHER, "sync", "workstation2", "-i", str(sb.inventory_path), "--allow-first-sync"]
        code = subprocess.run(source.exec_argv(argv), check=False).returncode
        _say(f"pc-switcher exited with {code}")
        if "folder_sync" in jobs:
            _say("/home/alice on the target (no .ssh private key, no .cache)")
            print(tree(target, "/home/alice"))
        _say("snapshots on both machines (pc-switcher snapshots list workstation2)")
        snaps = source.run([PC_SWITCHER, "snapshots", "list", "workstation2", "-i", str(sb.inventory_path)])
        print(snaps.stdout.rstrip() or snaps.stderr.rstrip())
        _say("the end of the session log (pc-switcher logs --last --level INFO)")
        log = source.run([PC_SWITCHER, "logs", "--last", "--level", "INFO"])
        print("\n".join(log_end(log.stdout, LOG_END_RECORDS)))
        left = [" ".join(p.cmdline()) for p in target.extra_processes()]
        _say(f"processes of the run left on the target: {len(left)}")
        for line in left:
            print(f"  {line}")
        _say("tearing down the sandbox machines")
    print("done: no machine, mount or loop device of the demo is left")
    return code


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="run a real sync into a sandbox machine (make demo)")
    parser.add_argument("--source-duration", type=int, default=8, help="dummy job: seconds on the source")
    parser.add_argument("--target-duration", type=int, default=10, help="dummy job: seconds on the target")
    parser.set_defaults(func=run_demo)


if __name__ == "__main__":  # pragma: no cover
    shutil.get_terminal_size()
    sys.exit(run_demo(argparse.Namespace(source_duration=8, target_duration=10)))
