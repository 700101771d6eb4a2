"""The way back: each sync carries the running pc-switcher, the config and the inventory to the target.

By hand this is Ansible (``playbooks/carry.yml``, role ``carry``). During a sync the check and the
config's write go through the run's target agent (:data:`CarryIO`, its ``carry`` command) and this
machine is read in-process, with the same code as the role's module (pcswitcher/remote/agent.py,
the role's module_utils) and the same decision (the role's filter ``carry_plan``); only the copy of
an install runs the playbook (``carry_action=carry``, which checks again). The driver calls:

1. :meth:`Carry.validate` — with the other checks, before the pre-sync snapshots: a pc-switcher on
   the target newer than this one (or a target where the install cannot go) refuses the sync.
2. :meth:`Carry.carry` — after every job succeeded, before the history is recorded: the install
   (``install.json`` in the parent of the app dir: ``PREFIX``, see README) goes to the same PREFIX on
   the target unless the target has the same install, its command is linked, and the config and the
   inventory of this run are written to the target login user's config dir.
3. :func:`way_back_note` — at the end of a successful sync: the inventory must list this machine
   for ``pc-switcher sync THIS`` to work on the target.

A dry run copies and writes nothing and says what it would carry.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

from pcswitcher.jobs.runner import PlaybookResult
from pcswitcher.jobs.summary import format_bytes
from pcswitcher.remote.agent import file_sha256, source_info
from pcswitcher.remote.inventory import load_inventory
from pcswitcher.run.safety import Player, SafetyError, failure_text

log = logging.getLogger("pcswitcher")
CARRY_PLAYBOOK = "carry.yml"
CARRY_RESULT = "carry_result"
DEFAULT_LINK = "/usr/local/bin/pc-switcher"


#: ``start(playbook, ident, extravars, check)``: start a playbook; returns the function that waits
#: for its result (None when the run was aborted), like a :data:`~pcswitcher.run.safety.Player` in two halves
Starter = Callable[[Path, str, dict[str, Any], bool], Callable[[], PlaybookResult | None]]


#: ``carry_io(request)``: the target's part of the carry (``request`` the arguments of
#: :func:`pcswitcher.remote.agent.carry`) -> its result; the driver's is its target agent
CarryIO = Callable[[dict[str, Any]], dict[str, Any]]
PLAN_FILTER = Path("roles") / "carry" / "filter_plugins" / "carry_plan.py"


def plan_filter(root: Path) -> ModuleType:
    """The carry role's filter plugin ``carry_plan.py``: the role's decision, made here too."""
    path = root / PLAN_FILTER
    spec = importlib.util.spec_from_file_location("pcswitcher_carry_plan", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CarryError(SafetyError):
    """The carry's check refused the sync, or the carry failed (exit 1, like a failed validation)."""


def command_link() -> str:
    """The link through which this pc-switcher was started (``BINDIR/pc-switcher``), else the
    default: the target's link goes to the same path."""
    script = Path(sys.prefix) / "bin" / "pc-switcher"
    found = shutil.which("pc-switcher")
    for candidate in (sys.argv[0], found or ""):
        path = Path(candidate)
        if path.is_absolute() and path.is_symlink() and path.resolve() == script.resolve():
            return str(path)
    return DEFAULT_LINK


def _size(value: Any) -> str:
    try:
        return format_bytes(int(value))
    except (TypeError, ValueError):
        return "? bytes"


@dataclass
class Carry:
    """The carry of one sync onto ``target`` (its inventory name)."""

    root: Path
    play: Player
    config_path: Path
    inventory_path: Path
    target: str
    dry_run: bool = False
    #: starts the check without waiting for it (the driver's; None: validate() runs it in turn)
    start: Starter | None = None
    #: the target's agent (the driver's): the check and the config's write go through it, no playbook
    carry_io: CarryIO | None = None
    root_on_target: bool = False  # may install there (Target.root_by_login_or_sudo)
    seconds: float = 0.0  # how long the last playbook took
    checked: dict[str, Any] = field(default_factory=dict)  # the result of validate()
    _pending: Callable[[], PlaybookResult | None] | None = None
    _started: float = 0.0

    def _args(self, action: str) -> tuple[Path, str, dict[str, Any], bool]:
        extravars = {
            "carry_action": action,
            "carry_config": str(self.config_path.absolute()),
            "carry_inventory": str(self.inventory_path.absolute()),
            "carry_link": command_link(),
        }
        return self.root / "playbooks" / CARRY_PLAYBOOK, f"carry-{action}", extravars, self.dry_run

    def start_validate(self) -> None:
        """Start the check now (with a :data:`Starter`), so that it runs beside the other checks;
        :meth:`validate` then waits for it. Through the agent there is nothing to start."""
        if self.start is not None and self.carry_io is None:
            self._started = time.monotonic()
            self._pending = self.start(*self._args("validate"))

    def _run(self, action: str) -> dict[str, Any]:
        pending, self._pending = (self._pending, None) if action == "validate" else (None, None)
        if pending is not None:
            started, result = self._started, pending()
        else:
            started = time.monotonic()
            result = self.play(*self._args(action))
        if result is None or not result.ok:
            what = "the pc-switcher check" if action == "validate" else "carrying pc-switcher"
            raise CarryError(f"{what} failed: {failure_text(result, what)}")
        data = result.set_stats.get(CARRY_RESULT)
        self.seconds = time.monotonic() - started
        return data if isinstance(data, dict) else {}

    def _check_by_agent(self) -> dict[str, Any]:
        """The role's check without its playbook: this machine in-process, the target through the
        agent, the role's ``carry_plan``; what the role's Report would say (``set_stats``)."""
        assert self.carry_io is not None
        started = time.monotonic()
        files = {
            "config.yml": str(self.config_path.absolute()),
            "inventory.yml": str(self.inventory_path.absolute()),
        }
        source = source_info(str(self.root))
        source["file_sha256"] = {path: file_sha256(path) for path in files.values()}
        request = {
            "action": "target",
            "prefix": source["prefix"] if source["installed"] else "",
            "link": command_link(),
            "python_home": source.get("python_home") or "",
        }
        target = self.carry_io(request)
        if target.get("error"):
            raise CarryError(f"the pc-switcher check failed: {target['error']}")
        plan = plan_filter(self.root)
        decision = plan.carry_plan(source, target, become=self.root_on_target, host=self.target, files=files)
        if decision["problems"]:
            raise CarryError(f"the pc-switcher check failed: {'; '.join(decision['problems'])}")
        self.seconds = time.monotonic() - started
        install = target.get("install") or target.get("link_install") or {}
        return {
            **{k: source.get(k) for k in ("version", "installed", "app_dir")},
            "files": source.get("files", 0),
            "bytes": source.get("bytes", 0),
            "prefix": source["prefix"] if source["installed"] else "",
            **{k: decision[k] for k in ("install", "reason", "warning")},
            "target_version": install.get("version") or "",
            "config_dir": target.get("config_dir"),
            "files_same": all(f["same"] for f in decision["files"]),
            "plan_files": decision["files"],
        }

    def validate(self) -> None:
        """Refuse a newer pc-switcher on the target (and a target where the install cannot go)."""
        data = self._check_by_agent() if self.carry_io is not None else self._run("validate")
        self.checked = data
        theirs = data.get("target_version") or "none"
        log.info("pc-switcher check passed: %s here, %s on %s", data.get("version"), theirs, self.target)

    def carry(self) -> dict[str, Any]:
        """Carry the install, the config and the inventory; log what was (or would be) carried.

        When the check found nothing to carry (no install to copy; the target's config and
        inventory are this run's already), the playbook is not run again: it would only say so."""
        checked = self.checked
        if checked and not checked.get("install") and checked.get("files_same") is True:
            self.seconds = 0.0
            self._report_install(checked)
            log.info(
                "the config and the inventory on %s:%s are this run's already",
                self.target,
                checked.get("config_dir"),
            )
            return checked
        if self.carry_io is not None and checked and not checked.get("install"):
            data = self._write_by_agent(checked)
        else:
            data = self._run("carry")
        self._report_install(data)
        self._report_files(data)
        return data

    def _write_by_agent(self, checked: dict[str, Any]) -> dict[str, Any]:
        """No install to copy: the config and the inventory that differ, written by the target's
        agent (the role's module does the same write)."""
        assert self.carry_io is not None
        started = time.monotonic()
        files = checked.get("plan_files") or []
        contents = plan_filter(self.root).carry_contents(files)
        request = {
            "action": "write",
            "config_dir": checked.get("config_dir"),
            "files": [{"name": name, "content": text} for name, text in contents.items()],
            "check": self.dry_run,
        }
        reply = self.carry_io(request)
        if reply.get("error"):
            raise CarryError(f"carrying pc-switcher failed: {reply['error']}")
        self.seconds = time.monotonic() - started
        not_carried = [str(f["src"]) for f in files if not f.get("sha")]
        return {
            **checked,
            "written": reply.get("written") or [],
            "backups": reply.get("backups") or [],
            "not_carried": not_carried,
        }

    def _report_install(self, data: dict[str, Any]) -> None:
        version, prefix, reason = data.get("version"), data.get("prefix"), data.get("reason")
        fields = {"fields": {"carry": {k: data.get(k) for k in ("install", "reason", "transferred")}}}
        if reason == "checkout":
            log.info(
                "pc-switcher is not carried to %s: this one runs from a checkout (%s), not an install "
                "(`make install`)",
                self.target,
                data.get("app_dir"),
                extra=fields,
            )
        elif reason == "python":
            log.warning("%s", data.get("warning"), extra=fields)
        elif reason == "same":
            log.info(
                "%s has this pc-switcher %s already (%s): nothing copied",
                self.target,
                version,
                prefix,
                extra=fields,
            )
        elif self.dry_run:
            log.info(
                "would carry pc-switcher %s (%s files, %s) to %s:%s (dry-run)",
                version,
                data.get("files"),
                _size(data.get("bytes")),
                self.target,
                prefix,
                extra=fields,
            )
        else:
            log.info(
                "carried pc-switcher %s to %s:%s (%s of %s files copied, %s, in %.1f s)",
                version,
                self.target,
                prefix,
                data.get("transferred"),
                data.get("files"),
                _size(data.get("bytes")),
                self.seconds,
                extra=fields,
            )

    def _report_files(self, data: dict[str, Any]) -> None:
        written = [str(name) for name in data.get("written") or []]
        backups = [str(name) for name in data.get("backups") or []]
        where = f"{self.target}:{data.get('config_dir')}"
        if written:
            kept = f" (the previous {', '.join(backups)} kept as .bak)" if backups else ""
            verb = "would write" if self.dry_run else "wrote"
            log.info("%s %s to %s%s", verb, ", ".join(written), where, "" if self.dry_run else kept)
        else:
            log.info("the config and the inventory on %s are this run's already", where)
        for src in data.get("not_carried") or []:
            log.warning("%s is not a regular file: not carried to %s", src, self.target)


def this_machine_names() -> set[str]:
    """The names and non-loopback addresses by which an inventory may list this machine."""
    names = {socket.gethostname(), socket.getfqdn()}
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in {socket.AF_INET, socket.AF_INET6}:
                text = address.address.split("%", 1)[0]
                if not (text.startswith("127.") or text == "::1"):
                    names.add(text)
    return {name for name in names if name}


def way_back_note(inventory_path: Path, target: str) -> None:
    """At the end of a successful sync: say so when the inventory cannot take the target back here."""
    source = socket.gethostname()
    try:
        listed = load_inventory(inventory_path).lists(this_machine_names())
    except Exception as exc:  # the inventory was read at the start: this is only a note
        log.debug("could not read %s again: %s", inventory_path, exc)
        return
    if not listed:
        log.warning(
            "inventory %s does not list this machine (%s): add it, then `pc-switcher sync %s` works on %s "
            "(the way back)",
            os.fspath(inventory_path),
            source,
            source,
            target,
        )
