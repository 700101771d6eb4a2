"""Command line of the sandbox tool: ``python -m tests.sandbox {up,down,status,root-cache,demo}``.

More commands plug in without touching this file: a module listed in ``EXTENSION_MODULES`` (e.g. a
future ``tests/sandbox/demo.py``) that exists must define ``register(subparsers)``, adding its
sub-parser with ``set_defaults(func=handler)``, where ``handler(args: argparse.Namespace) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.sandbox.machine import (
    STATE_FILE,
    Sandbox,
    SandboxError,
    down_all,
    down_dir,
    kept_up,
    live_process,
    recorded_sandboxes,
)

EXTENSION_MODULES: tuple[str, ...] = ("tests.sandbox.demo", "tests.sandbox.rootfs")


def _cmd_up(args: argparse.Namespace) -> int:
    names = [*args.names, *args.name]
    if not names:
        print("give at least one machine NAME", file=sys.stderr)
        return 2
    if args.root and (args.extra_dir or args.private_etc or args.login_user):
        print(
            "--root machines have their own /etc: drop --extra-dir, --private-etc, --login-user",
            file=sys.stderr,
        )
        return 2
    if args.ro_bind and not args.root:
        print("--ro-bind is for root machines: add --root", file=sys.stderr)
        return 2
    binds: dict[str, Path] = {}
    for spec in args.ro_bind:
        inside, sep, host = spec.partition("=")
        if not sep:
            print(f"--ro-bind {spec!r}: give INSIDE=HOST, e.g. /srv/pcs-apt=/var/tmp/repos", file=sys.stderr)
            return 2
        binds[inside] = Path(host)
    sandbox = Sandbox(base_dir=args.base_dir, size=args.size, port=args.port)
    try:
        for name in names:
            if args.root:
                machine = sandbox.add(name, root=True, ro_binds=binds, timeout=args.timeout)
            else:
                machine = sandbox.add(
                    name, extra_dirs=args.extra_dir, private_etc=args.private_etc, timeout=args.timeout
                )
            for spec in args.login_user:
                user, _, uid = spec.partition(":")
                if not uid.isdigit():
                    raise SandboxError(f"--login-user {spec!r}: give NAME:UID, e.g. alice:1100")
                machine.add_login_user(user, int(uid))
            print(f"{machine.name}: {machine.address}:{machine.port} (init pid {machine.init_pid})")
    except BaseException:
        sandbox.down()
        raise
    # Leave the machines running: no teardown on exit, and none by `make test` (kept).
    sandbox.keep()
    print(f"inventory: {sandbox.inventory_path}")
    print(f"sandbox dir: {sandbox.dir}")
    print(f"ssh: {' '.join(next(iter(sandbox.machines.values())).ssh_argv())}")
    print(
        f"kept: `make test` (down --all --orphaned) leaves it up; stop it with: {_down_command(sandbox.dir)}"
    )
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    if args.all == (args.dir is not None):
        print("give either --all or one sandbox DIR", file=sys.stderr)
        return 2
    if args.all:
        kept = [d for d in recorded_sandboxes(args.base_dir) if kept_up(d)] if args.orphaned else []
        for done in down_all(args.base_dir, only_orphaned=args.orphaned):
            print(f"removed {done}")
        for sandbox_dir in kept:
            print(
                f"left up {sandbox_dir}: kept for manual work by `up`; stop it with: "
                + _down_command(sandbox_dir)
            )
        return 0
    down_dir(Path(args.dir))
    print(f"removed {args.dir}")
    return 0


def _down_command(sandbox_dir: Path) -> str:
    return f"{sys.executable} -m tests.sandbox down {sandbox_dir}"


def _cmd_status(args: argparse.Namespace) -> int:
    dirs = recorded_sandboxes(args.base_dir)
    if not dirs:
        print("no sandboxes recorded")
    for sandbox_dir in dirs:
        try:
            state: dict[str, Any] = json.loads((sandbox_dir / STATE_FILE).read_text())
        except (OSError, ValueError) as exc:
            print(f"{sandbox_dir}: unreadable state ({exc})")
            continue
        owner_alive = live_process(state.get("owner_pid"), state.get("owner_start")) is not None
        owner = f"owner pid {state.get('owner_pid')} ({'alive' if owner_alive else 'gone'})"
        print(f"{sandbox_dir}: {owner}{', kept up for manual work' if state.get('kept') is True else ''}")
        for rec in state.get("machines", {}).values():
            alive = live_process(rec.get("init_pid"), rec.get("init_start")) is not None
            print(
                f"  {rec.get('name')}{' (root machine)' if rec.get('root') else ''}:"
                f" {rec.get('address')}:{rec.get('port')}"
                f" unshare pid {rec.get('unshare_pid')} init pid {rec.get('init_pid')}"
                f" sshd pid {rec.get('sshd_pid')} {'running' if alive else 'DOWN'}"
            )
        inventory = sandbox_dir / "inventory.yml"
        if inventory.exists():
            print(f"  inventory: {inventory}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.sandbox", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base-dir",
        type=Path,
        default=None,
        help="dir of all sandboxes (default $PCS_SANDBOX_DIR or /var/tmp/pcswitcher-sandbox)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_up(sub)
    _add_down(sub)
    status = sub.add_parser("status", help="list recorded sandboxes, their machines and pids")
    status.set_defaults(func=_cmd_status)
    _add_extensions(sub)
    return parser


def _add_up(sub: Any) -> None:
    up = sub.add_parser(
        "up",
        help="bring machines up and leave them running",
        description="Bring machines up and leave them running (stop them with `down`). A plain machine"
        " shares this host's /usr and /etc (its /home and /root are its own btrfs subvolumes); a root"
        " machine (--root) is its own Debian system: its own dpkg database, /etc, apt (offline), python3"
        " and sshd, started in about 2 s from a snapshot of the cached Debian root (see `root-cache`;"
        " the first --root builds that cache, about 30-120 s).",
    )
    up.add_argument("names", nargs="*", metavar="NAME", help="machine name")
    up.add_argument("--name", action="append", default=[], help="machine name (repeatable)")
    up.add_argument(
        "--root",
        action="store_true",
        help="root machines: each its own Debian root (btrfs snapshot of the cached root)",
    )
    up.add_argument("--timeout", type=float, default=30.0, help="seconds for each machine to come up")
    up.add_argument(
        "--ro-bind",
        action="append",
        default=[],
        metavar="INSIDE=HOST",
        help="with --root: host dir HOST read-only at INSIDE (under /srv, /mnt, /opt, /media), repeatable",
    )
    up.add_argument("--size", default="2G", help="btrfs image size per machine (default 2G)")
    up.add_argument("--port", type=int, default=2222, help="sshd port (default 2222)")
    up.add_argument(
        "--extra-dir",
        action="append",
        default=[],
        help="existing host dir to overmount with a private subvolume in each machine (repeatable)",
    )
    up.add_argument(
        "--private-etc",
        action="store_true",
        help="give each machine its own copy of /etc (for login users and sudoers rules)",
    )
    up.add_argument(
        "--login-user",
        metavar="NAME:UID",
        action="append",
        default=[],
        help="with --private-etc: a login user with passwordless sudo on each machine (repeatable)",
    )
    up.set_defaults(func=_cmd_up)


def _add_down(sub: Any) -> None:
    down = sub.add_parser("down", help="tear down one sandbox (DIR) or all recorded ones (--all)")
    down.add_argument("dir", nargs="?", default=None)
    down.add_argument("--all", action="store_true")
    down.add_argument(
        "--orphaned",
        action="store_true",
        help="with --all: skip sandboxes whose owner process is alive, and those kept up by `up`",
    )
    down.set_defaults(func=_cmd_down)


def _add_extensions(sub: Any) -> None:
    """The subcommands of the modules in EXTENSION_MODULES that are there (e.g. ``demo``)."""
    for module_name in EXTENSION_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return rc
