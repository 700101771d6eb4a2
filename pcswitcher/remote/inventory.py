"""Targets come from a standard Ansible inventory, read with Ansible's own inventory code.

Host vars, groups, ``ansible_host``, ``ansible_port``, ``ansible_user``, keys and ssh args work as
Ansible users expect; the driver's own ssh session to the target (the monitor) is built from the
same variables, so it reaches the target exactly as Ansible does.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcswitcher import paths
from pcswitcher.errors import InventoryError

LOCAL_NAMES = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class Target:
    """How to reach one target host (its inventory name plus resolved connection variables)."""

    name: str
    address: str
    port: int | None = None
    user: str | None = None
    private_key: str | None = None
    ssh_common_args: tuple[str, ...] = ()
    ssh_extra_args: tuple[str, ...] = ()
    ssh_executable: str = "ssh"
    connection: str = "ssh"
    become: bool = False
    python: str = "python3"
    host_key_checking: bool = True
    history_path: str | None = None  # host var pcswitcher_history_path: wins over the config's
    snapshots_location: str | None = None  # host var pcswitcher_snapshots_location: likewise
    snapshots_subvolumes: tuple[str, ...] = ()  # host var pcswitcher_snapshots_subvolumes: likewise
    #: root on the target for an install (the carry): logged in as root, or ansible_become to root by sudo
    root_by_login_or_sudo: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{self.name} ({user}{self.address}{port})"

    def ssh_argv(self, *options: str) -> list[str]:
        """ssh with the inventory's settings; ``options`` are extra ``-o``-style arguments."""
        argv = [self.ssh_executable, *options]
        if not self.host_key_checking:
            argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.user:
            argv += ["-l", self.user]
        if self.private_key:
            argv += ["-i", os.path.expanduser(self.private_key)]
        argv += [*self.ssh_common_args, *self.ssh_extra_args, self.address]
        return argv


@contextmanager
def _captured_warnings() -> Iterator[list[str]]:
    from ansible._internal import _display_utils
    from ansible.utils.display import Display

    seen: list[str] = []
    # ``_warning`` is where both ``warning`` and ``error_as_warning`` (the inventory manager's
    # "Failed to parse inventory with ... plugin") end up printing: capture there.
    original = Display._warning

    def capture(self: Any, warning: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(_display_utils.format_message(warning, False))

    Display._warning = capture
    try:
        yield seen
    finally:
        Display._warning = original


def _parse_problem(path: Path, warnings: list[str]) -> str:
    """The one warning that explains why a file failed to parse, as one line."""
    plugin = "yaml" if path.suffix in {".yml", ".yaml"} else "ini"
    chosen = next((w for w in warnings if f"'{plugin}' plugin" in w), warnings[0] if warnings else "")
    cause = chosen.split("<<< caused by >>>")[-1] if "caused by" in chosen else chosen
    lines = [ln.strip() for ln in cause.strip().splitlines() if ln.strip()]
    text = lines[0] if lines else "not a valid inventory"
    text = re.sub(r"^Failed to parse inventory:\s*", "", text)
    text = re.sub(r"^Failed to parse inventory with '\w+' plugin:\s*", "", text)
    origin = next((ln for ln in lines if ln.startswith("Origin:") and re.search(r":\d+:\d+$", ln)), None)
    where = ""
    if origin:
        match = re.search(r":(\d+):(\d+)$", origin)
        if match:
            where = f":{match.group(1)}:{match.group(2)}"
    return f"{path}{where}: {text}"


class Inventory:
    """A loaded inventory; :meth:`resolve` turns a TARGET argument into a :class:`Target`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            raise InventoryError(
                f"inventory {path} does not exist",
                paths.init_hint("-i", path) + ", or pass -i/--inventory with your inventory",
            )
        if not path.is_file():
            raise InventoryError(
                f"inventory {path} is not a regular file", "pass the inventory file with -i/--inventory PATH"
            )
        if not os.access(path, os.R_OK):
            raise InventoryError(
                f"inventory {path} is not readable", f"check its permissions (chmod u+r {path})"
            )
        os.environ.setdefault("ANSIBLE_INVENTORY_UNPARSED_FAILED", "True")
        os.environ.setdefault("ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED", "True")
        # Ansible's own temp dir of this process: not ~/.ansible/tmp (a dry-run writes nothing in $HOME)
        os.environ.setdefault("ANSIBLE_LOCAL_TEMP", tempfile.gettempdir())
        from ansible.errors import AnsibleError
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.vars.manager import VariableManager

        self._loader = DataLoader()
        with _captured_warnings() as warnings:
            try:
                self._manager = InventoryManager(loader=self._loader, sources=[str(path)])
            except AnsibleError:
                raise InventoryError(
                    _parse_problem(path, warnings),
                    "fix the inventory (INI or YAML, see inventory/example.yml)",
                ) from None
        self._variables = VariableManager(loader=self._loader, inventory=self._manager)

    def hosts(self) -> list[str]:
        return sorted(h.name for h in self._manager.get_hosts())

    def lists(self, names: set[str]) -> bool:
        """Whether a host of the inventory is named, or has its ansible_host, one of ``names``."""
        return any(
            h.name in names or str(h.vars.get("ansible_host", "")) in names for h in self._manager.get_hosts()
        )

    def _host(self, name: str) -> Any:
        host = self._manager.get_host(name)
        if host is not None:
            return host
        for candidate in self._manager.get_hosts():  # an alias: TARGET given as its ansible_host
            if str(candidate.vars.get("ansible_host", "")) == name:
                return candidate
        return None

    def resolve(self, name: str) -> Target:
        host = self._host(name)
        if host is None:
            known = self.hosts()
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            listing = ", ".join(known) if known else "none"
            raise InventoryError(
                f"unknown target {name!r}: not a host of inventory {self.path} (known hosts: {listing})",
                f"{hint}pass one of the known hosts, or add {name} to the inventory",
            )
        from ansible.template import Templar

        variables = self._variables.get_vars(host=host)
        templar = Templar(loader=self._loader, variables=variables)

        def var(key: str, default: Any = None) -> Any:
            if key not in variables:
                return default
            try:
                return templar.template(variables[key])
            except Exception as exc:
                raise InventoryError(
                    f"inventory {self.path}: host {host.name}: cannot evaluate {key}: {exc}".splitlines()[0],
                    f"fix {key} of {host.name} in the inventory",
                ) from None

        connection = str(var("ansible_connection", "ssh"))
        where = f"inventory {self.path}: host {host.name}"
        port_number = _port(where, var("ansible_port"))
        _check_pcswitcher_vars(where, {k: var(k) for k in variables if str(k).startswith("pcswitcher_")})
        checking = var("ansible_host_key_checking", os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "True"))
        return Target(
            name=host.name,
            address=str(var("ansible_host", host.name)),
            port=port_number,
            user=var("ansible_user") or var("ansible_ssh_user"),
            private_key=var("ansible_ssh_private_key_file") or var("ansible_private_key_file"),
            ssh_common_args=tuple(shlex.split(str(var("ansible_ssh_common_args", "") or ""))),
            ssh_extra_args=tuple(shlex.split(str(var("ansible_ssh_extra_args", "") or ""))),
            ssh_executable=str(var("ansible_ssh_executable", "ssh") or "ssh"),
            connection=connection,
            become=_truthy(var("ansible_become", False)),
            python=_interpreter(var("ansible_python_interpreter")),
            host_key_checking=_truthy(checking),
            history_path=str(var("pcswitcher_history_path") or "") or None,
            snapshots_location=str(var("pcswitcher_snapshots_location") or "") or None,
            snapshots_subvolumes=tuple(str(p) for p in var("pcswitcher_snapshots_subvolumes") or ()),
            root_by_login_or_sudo=_root_by_login_or_sudo(var),
        )


#: The ``pcswitcher_*`` host vars a user may set in the inventory -> what each must be. Every
#: other ``pcswitcher_*`` name belongs to the driver (extra vars, the play environment that carries
#: the run tag) and is refused: a host var would override the playbooks' own values.
HOST_VARS: dict[str, str] = {
    "pcswitcher_history_path": "path",
    "pcswitcher_snapshots_location": "path",
    "pcswitcher_snapshots_subvolumes": "paths",
}


def _port(where: str, port: Any) -> int | None:
    """ansible_port as a TCP port (1-65535): an integer, or a string of digits."""
    if port is None or port == "":
        return None
    if isinstance(port, str) and re.fullmatch(r"[0-9]{1,5}", port.strip()):
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool):
        raise InventoryError(
            f"{where}: ansible_port {port!r} is not a number",
            "set ansible_port to the target's ssh port (e.g. 22)",
        )
    if not 1 <= port <= 65535:
        raise InventoryError(
            f"{where}: ansible_port {port} is not a TCP port (1-65535)",
            "set ansible_port to the target's ssh port (e.g. 22)",
        )
    return port


def _check_pcswitcher_vars(where: str, values: dict[str, Any]) -> None:
    """The target's ``pcswitcher_*`` vars: known names only, each an absolute, normalised path (or
    a non-empty list of them) of printable characters."""
    from pcswitcher.config.formats import path_problem

    for name, value in sorted(values.items()):
        kind = HOST_VARS.get(name)
        if kind is None:
            close = difflib.get_close_matches(name, list(HOST_VARS), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise InventoryError(
                f"{where}: {name} is not a pc-switcher host var (known: {', '.join(HOST_VARS)})",
                f"{hint}remove it; other pcswitcher_* variables belong to pc-switcher itself",
            )
        items = value if kind == "paths" and isinstance(value, list) and value else [value]
        if kind == "paths" and items is not value:
            problem: str | None = f"expected a non-empty list of absolute paths, got {value!r}"
        else:
            bad = next((item for item in items if not isinstance(item, str) or path_problem(item)), None)
            problem = None
            if bad is not None:
                problem = (
                    path_problem(bad) if isinstance(bad, str) else f"expected an absolute path, got {bad!r}"
                )
        if problem is not None:
            raise InventoryError(f"{where}: {name}: {problem}", f"fix {name} of the host in the inventory")


def _root_by_login_or_sudo(var: Any) -> bool:
    """The carry role's ``carry_become`` (roles/carry/tasks/main.yml), from the same host vars."""
    become = _truthy(var("ansible_become", False))
    by_sudo = str(var("ansible_become_user", "root") or "root") == "root" and (
        str(var("ansible_become_method", "sudo") or "sudo") == "sudo"
    )
    user = var("ansible_user") or var("ansible_ssh_user") or os.environ.get("USER", "")
    return (become and by_sudo) or str(user) == "root"


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes", "on", "y"}


def _interpreter(value: Any) -> str:
    """ansible_python_interpreter, with Ansible's discovery values ("auto", …) meaning python3."""
    text = str(value or "").strip()
    return "python3" if not text or text.startswith("auto") else text


def load_inventory(path: Path) -> Inventory:
    return Inventory(path)
