"""Where pc-switcher keeps its files (XDG base directories) and where its playbooks live."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

APP = "pc-switcher"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/pc-switcher`` (default ``~/.config/pc-switcher``)."""
    return _xdg("XDG_CONFIG_HOME", ".config") / APP


def state_dir() -> Path:
    """``$XDG_STATE_HOME/pc-switcher`` (default ``~/.local/state/pc-switcher``): logs, runs, lock."""
    return _xdg("XDG_STATE_HOME", ".local/state") / APP


def default_config_path() -> Path:
    return config_dir() / "config.yml"


def default_inventory_path() -> Path:
    return config_dir() / "inventory.yml"


def init_hint(option: str, path: Path) -> str:
    """How to write the missing config (``option`` ``-c``) or inventory (``-i``) ``path``:
    ``pc-switcher init -c PATH`` writes that file only (a plain ``init`` writes both, and refuses
    when the other one exists)."""
    what = "a default config" if option == "-c" else "an example inventory"
    return f"run `pc-switcher init {option} {shlex.quote(str(path))}` to write {what} there"


def logs_dir() -> Path:
    return state_dir() / "logs"


def runs_dir() -> Path:
    """One folder per run: ansible-runner private data dirs, the ssh control socket."""
    return state_dir() / "runs"


def lock_path() -> Path:
    return state_dir() / "sync.lock"


def project_root() -> Path:
    """The folder holding ``playbooks/`` and ``roles/``.

    ``PCSWITCHER_PROJECT_DIR`` overrides; otherwise the checkout this package was installed from.
    """
    override = os.environ.get("PCSWITCHER_PROJECT_DIR")
    root = Path(override) if override else Path(__file__).resolve().parent.parent
    if not (root / "playbooks").is_dir() or not (root / "roles").is_dir():
        from .errors import PcsError

        raise PcsError(
            f"pc-switcher's playbooks and roles are not in {root}",
            "install pc-switcher from its checkout (make bootstrap, or pip install -e .) "
            "or set PCSWITCHER_PROJECT_DIR to the checkout",
        )
    return root
