"""Instances of molecule's ``default`` (delegated) driver: sandbox machines (:mod:`tests.sandbox`).

Each role's ``molecule/default/create.yml`` and ``destroy.yml`` run this from the repository root::

    python -m tests.integration.molecule_sandbox create --ephemeral DIR --instance-config FILE NAME...
    python -m tests.integration.molecule_sandbox destroy --ephemeral DIR --instance-config FILE

``create`` brings up one machine per molecule platform in a new sandbox (a root machine, with its own
Debian root, for a platform with ``pcs_root: true``; ``pcs_ro_binds: {INSIDE: HOST}`` binds host dirs
read-only into it, see :meth:`tests.sandbox.Sandbox.add`) and hands molecule the
connections through its instance config (address, port, user root, the sandbox's client key). The
sandbox's ``known_hosts`` is copied to ``DIR/known_hosts``, which the scenarios' ssh options name with
``StrictHostKeyChecking=yes``: host keys are checked. ``DIR/pcs_sandbox.json`` records the sandbox
(``dir``, ``id``, the scenario's pc-switcher ``run_id`` and ``source_dir``, the scratch dir on this
host that plays the source's folders: ``/var/tmp/molecule-src-<id>``).

``destroy`` tears down the recorded sandbox, removes ``source_dir``, kills what is left on this host of
the scenario's run (processes whose environment holds ``PCSWITCHER_RUN_ID=<run_id>``: a scenario's
source side that a failed converge left running) with its dir ``/tmp/pcswitcher-<run_id>``, and empties
the instance config. It does nothing when nothing is recorded, so molecule may run it any number of
times.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import yaml

from tests.sandbox import Sandbox, SandboxError, down_dir

STATE_FILE = "pcs_sandbox.json"
KNOWN_HOSTS = "known_hosts"
SOURCE_PREFIX = "/var/tmp/molecule-src-"
RUN_DIR_PREFIX = "/tmp/pcswitcher-"
RUN_ID_PREFIX = "molecule-sb-"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_state(ephemeral: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((ephemeral / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    return data


def _kill_run_on_host(run_id: str) -> list[str]:
    """Kill this host's processes tagged with ``run_id`` and remove its run dir; returns problems."""
    if not run_id.startswith(RUN_ID_PREFIX) or "/" in run_id:
        return [f"refusing to clean up run id {run_id!r} on this host"]
    tagged: list[psutil.Process] = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except psutil.Error:
            continue
        if env.get("PCSWITCHER_RUN_ID") == run_id and proc.pid != os.getpid():
            tagged.append(proc)
    for proc in tagged:
        try:
            proc.kill()
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(tagged, timeout=5)
    problems = [f"process {proc.pid} of run {run_id} survived SIGKILL" for proc in alive]
    run_dir = Path(RUN_DIR_PREFIX + run_id)
    shutil.rmtree(run_dir, ignore_errors=True)
    if run_dir.exists():
        problems.append(f"could not remove {run_dir}")
    return problems


def destroy(ephemeral: Path, instance_config: Path) -> list[str]:
    """Tear down what :func:`create` recorded; returns the problems (empty when clean)."""
    problems: list[str] = []
    state = _read_state(ephemeral)
    if state is not None:
        try:
            down_dir(Path(state["dir"]))
        except SandboxError as exc:
            problems.append(str(exc))
        source = Path(state["source_dir"])
        if str(source).startswith(SOURCE_PREFIX) and source.parent == Path(SOURCE_PREFIX).parent:
            shutil.rmtree(source, ignore_errors=True)
            if source.exists():
                problems.append(f"could not remove {source}")
        problems += _kill_run_on_host(str(state["run_id"]))
    if not problems:
        (ephemeral / STATE_FILE).unlink(missing_ok=True)
        (ephemeral / KNOWN_HOSTS).unlink(missing_ok=True)
        if instance_config.parent.is_dir():
            _write(instance_config, "[]\n")
    return problems


def create(
    ephemeral: Path,
    instance_config: Path,
    names: Sequence[str],
    size: str,
    root: Sequence[str] = (),
    ro_binds: Sequence[str] = (),
) -> dict[str, Any]:
    """Bring up the machines ``names``; returns the recorded state. Those also in ``root`` are root
    machines (their own Debian root), each with the read-only binds ``ro_binds`` (``INSIDE=HOST``)."""
    binds: dict[str, Path] = {}
    for spec in ro_binds:
        inside, sep, host = spec.partition("=")
        if not sep or not inside or not host:
            raise SandboxError(f"--ro-bind {spec!r}: give INSIDE=HOST, e.g. /srv/pcs-apt=/var/tmp/repos")
        binds[inside] = Path(host)
    if set(root) - set(names):
        raise SandboxError(f"--root {sorted(set(root) - set(names))}: not among the machines {list(names)}")
    ephemeral.mkdir(parents=True, exist_ok=True)
    leftover = destroy(ephemeral, instance_config)  # a sandbox of an interrupted run
    if leftover:
        raise SandboxError("; ".join(leftover))
    sandbox = Sandbox(size=size)
    ident = sandbox.dir.name
    state: dict[str, Any] = {
        "dir": str(sandbox.dir),
        "id": ident,
        "run_id": f"molecule-{ident}",
        "source_dir": SOURCE_PREFIX + ident,
        "machines": {},
    }
    # recorded first: destroy finds the sandbox even if what follows fails
    _write(ephemeral / STATE_FILE, json.dumps(state, indent=2) + "\n")
    try:
        for name in names:
            if name in root:
                sandbox.add(name, root=True, ro_binds=binds)
            else:
                sandbox.add(name)
        shutil.copyfile(sandbox.known_hosts, ephemeral / KNOWN_HOSTS)
        instances = []
        for machine in sandbox.machines.values():
            instances.append(
                {
                    "instance": machine.name,
                    "address": machine.address,
                    "port": machine.port,
                    "user": "root",
                    "identity_file": str(sandbox.client_key),
                }
            )
            state["machines"][machine.name] = {"address": machine.address, "port": machine.port}
        _write(instance_config, yaml.safe_dump(instances, sort_keys=False))
        _write(ephemeral / STATE_FILE, json.dumps(state, indent=2) + "\n")
    except BaseException:
        destroy(ephemeral, instance_config)
        raise
    return state


def _add_platform_options(args: argparse.Namespace) -> None:
    """``--root`` and ``--ro-bind`` from the platforms' ``pcs_root`` and ``pcs_ro_binds`` keys."""
    try:
        platforms = json.loads(args.platforms_json)
    except ValueError as exc:
        raise SandboxError(f"--platforms-json is not JSON: {exc}") from exc
    for platform in platforms if isinstance(platforms, list) else []:
        if platform.get("pcs_root") is True:
            args.root.append(str(platform["name"]))
        for inside, host in (platform.get("pcs_ro_binds") or {}).items():
            args.ro_bind.append(f"{inside}={host}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.integration.molecule_sandbox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("create", "destroy"):
        cmd = sub.add_parser(command)
        cmd.add_argument("--ephemeral", type=Path, required=True, help="molecule's ephemeral directory")
        cmd.add_argument("--instance-config", type=Path, required=True, help="molecule's instance config")
        if command == "create":
            cmd.add_argument("--size", default="1G", help="btrfs image size per machine (sparse)")
            cmd.add_argument("names", nargs="+", help="the machines (molecule's platform names)")
            cmd.add_argument(
                "--root",
                action="append",
                default=[],
                metavar="NAME",
                help="this machine is a root machine (its own Debian root; platform key pcs_root: true)",
            )
            cmd.add_argument(
                "--ro-bind",
                action="append",
                default=[],
                metavar="INSIDE=HOST",
                help="root machines: host dir HOST read-only at INSIDE (platform key pcs_ro_binds)",
            )
            cmd.add_argument(
                "--platforms-json",
                default="[]",
                help="molecule's platforms: --root for those with pcs_root: true, --ro-bind for pcs_ro_binds",
            )
    args = parser.parse_args(argv)
    try:
        if args.command == "create":
            _add_platform_options(args)
            state = create(
                args.ephemeral, args.instance_config, args.names, args.size, args.root, args.ro_bind
            )
            print(json.dumps(state))
            return 0
        problems = destroy(args.ephemeral, args.instance_config)
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
