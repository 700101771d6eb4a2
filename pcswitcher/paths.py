"""Where pc-switcher keeps its files (XDG base directories) and where its playbooks live."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from pcswitcher.remote.agent import RUN_ID_FORMAT, RUN_ID_STAMP, RUN_ID_TIME, default_lock_path

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
    return f"run `pc-switcher init {option} {shell_quote(str(path))}` to write {what} there"


def shell_quote(text: str) -> str:
    """``text`` as one shell word that a shell turns back into ``text``: shlex's quoting, or bash's
    ``$'...'`` with escapes when ``text`` holds a character that is not printable (a newline)."""
    if text.isprintable():
        return shlex.quote(text)
    escaped = "".join(
        c
        if c.isprintable() and c not in "\\'"
        else f"\\x{ord(c):02x}"
        if ord(c) < 0x100
        else f"\\u{ord(c):04x}"
        for c in text
    )
    return f"$'{escaped}'"


def logs_dir() -> Path:
    return state_dir() / "logs"


def runs_dir() -> Path:
    """One folder per run: ansible-runner private data dirs, the ssh control socket."""
    return state_dir() / "runs"


#: How many run directories (``runs/<run id>``) the state directory keeps: the newest ones.
KEEP_RUN_DIRS = 20
#: The name of a run directory as pc-switcher makes them (a run or session id: its start in UTC).
_RUN_DIR_NAME = re.compile(RUN_ID_FORMAT)
_RUN_STAMP = re.compile(RUN_ID_STAMP)


def _age_key(path: Path) -> tuple[float, int, str]:
    try:
        mtime_ns = path.lstat().st_mtime_ns
    except OSError:
        mtime_ns = 0
    started = mtime_ns / 1e9
    stamp = _RUN_STAMP.match(path.name)
    if stamp:
        with contextlib.suppress(ValueError):  # 20261399T…: not a date
            started = datetime.strptime(stamp.group(), RUN_ID_TIME).replace(tzinfo=UTC).timestamp()
    return (started, mtime_ns, path.name)


def newest_first(entries: Iterable[Path]) -> list[Path]:
    """Run directories or logs, newest first: by the start second their name (a run id) begins
    with; runs started in the same second (the id's last part is random) by modification time; a
    name without a start by its modification time alone."""
    return sorted(entries, key=_age_key, reverse=True)


def prune_run_dirs(keep: int = KEEP_RUN_DIRS, spare: str | None = None) -> list[str]:
    """Remove the run directories of ``runs/`` but the ``keep`` newest, ``spare`` (the run starting
    now, if any) counted among them. Only directories named as pc-switcher names them: a symlink or
    anything else in ``runs/`` stays. The logs (``logs/``) are not touched. Returns the names removed,
    oldest first."""
    try:
        entries = list(os.scandir(runs_dir()))
    except OSError:
        return []
    runs = newest_first(
        Path(e.path)
        for e in entries
        if _RUN_DIR_NAME.fullmatch(e.name) and e.is_dir(follow_symlinks=False) and e.name != spare
    )
    doomed = [p.name for p in reversed(runs[max(keep - 1 if spare else keep, 0) :])]
    for name in doomed:
        shutil.rmtree(runs_dir() / name, ignore_errors=True)
    return doomed


def lock_path() -> Path:
    """This machine's sync lock: the same file its agent takes when it is a target."""
    return Path(default_lock_path())


def project_root() -> Path:
    """The folder holding ``playbooks/`` and ``roles/``.

    ``PCSWITCHER_PROJECT_DIR`` overrides; otherwise the checkout this package was installed from.
    """
    override = os.environ.get("PCSWITCHER_PROJECT_DIR")
    root = Path(override) if override else Path(__file__).resolve().parent.parent
    if not (root / "playbooks").is_dir() or not (root / "roles").is_dir():
        from pcswitcher.errors import PcsError

        raise PcsError(
            f"pc-switcher's playbooks and roles are not in {root}",
            "install pc-switcher from its checkout (make install) "
            "or set PCSWITCHER_PROJECT_DIR to the checkout",
        )
    return root
