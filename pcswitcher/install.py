"""``make install`` / ``make uninstall``: pc-switcher in ``PREFIX`` with a link in ``BINDIR``.

Layout (``PREFIX`` default ``/opt/pc-switcher``, ``BINDIR`` default ``/usr/local/bin``):

- ``PREFIX/app/``: an exact copy of the runtime tree of a checkout (:data:`RUNTIME`; no tests, no
  bench, no ``.git``, no caches);
- ``PREFIX/venv/``: a venv of the system ``python3`` with pc-switcher installed from ``PREFIX/app``
  (editable, so that the code finds ``roles/`` and ``playbooks/`` beside itself);
- ``PREFIX/install.json``: ``{"version", "python", "id"}`` (``id``: :func:`tree_id` of the app),
  written last and atomically: its presence means a complete install;
- ``BINDIR/pc-switcher``: a link to ``PREFIX/venv/bin/pc-switcher``.

Run as root by the Makefile (through ``sudo`` for a normal user) with the system ``python3 -I``:
standard library only, it imports nothing of pc-switcher. Every refusal is one ``error:`` line and
exit code 2; an install that fails half-way puts the previous install back.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# top-level entries of a checkout copied to PREFIX/app (those missing in a checkout are skipped,
# except the first four)
RUNTIME = (
    "pcswitcher",
    "roles",
    "playbooks",
    "pyproject.toml",
    "ansible.cfg",
    "inventory",
    "docs",
    "README.md",
)
_REQUIRED = RUNTIME[:4]
_SKIP_DIRS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
_SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".swp", "~")
INSTALL_JSON = "install.json"
# what PREFIX may hold: uninstall removes a PREFIX holding nothing else
_OURS = frozenset({"app", "venv", INSTALL_JSON, ".old", ".new"})
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+@/-]*")
_SYSTEM_DIRS = frozenset(
    [
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib64",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/usr/bin",
        "/usr/lib",
        "/usr/local",
        "/usr/local/bin",
        "/usr/local/lib",
        "/usr/sbin",
        "/usr/share",
        "/var",
    ]
)


class InstallError(Exception):
    """A refusal: the problem and the fix, printed as one ``error:`` line."""


def _checked_dir(value: str, what: str) -> Path:
    """An absolute, normalised path of safe characters (no spaces, quotes, newlines, ``..``)."""
    norm = os.path.normpath(value) if value else ""
    if not _SAFE_PATH.fullmatch(value or "") or norm != value.rstrip("/") or "//" in value:
        raise InstallError(
            f"{what} {value!r} is not a plain absolute path: "
            f"use letters, digits and . _ + @ - / only, e.g. {what}=/opt/pc-switcher"
        )
    return Path(norm)


def _skipped(name: str) -> bool:
    return name in _SKIP_DIRS or name.endswith(_SKIP_SUFFIXES) or name.startswith(".#")


def runtime_files(root: Path) -> list[str]:
    """Relative paths (sorted) of the runtime tree's files and links under ``root``.

    Only regular files and relative links that stay inside the copied tree; anything else (a
    device, a fifo, a link leaving the tree) is refused, naming it."""
    for name in _REQUIRED:
        if not (root / name).exists():
            raise InstallError(f"{root} is not a pc-switcher checkout (no {name}): run make install in one")
    found: list[str] = []
    for top in RUNTIME:
        if (root / top).is_symlink():
            raise InstallError(f"{root / top} is a link: make it the file or directory itself")
        if not (root / top).exists():
            continue
        found += [top] if (root / top).is_file() else _walk(root, top)
    allowed = frozenset(found)
    for rel in found:
        _check_entry(root, rel, allowed)
    return sorted(found)


def _walk(root: Path, top: str) -> list[str]:
    """The files and the links to directories under the directory ``root/top``, relative to ``root``
    (skipped names left out)."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root / top):
        dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
        found += [os.path.relpath(os.path.join(dirpath, n), root) for n in filenames if not _skipped(n)]
        found += [
            os.path.relpath(os.path.join(dirpath, d), root)
            for d in dirnames
            if os.path.islink(os.path.join(dirpath, d))
        ]
    return found


def _executable(path: Path) -> bool:
    return bool(path.stat().st_mode & 0o111)


def _check_entry(root: Path, rel: str, allowed: frozenset[str]) -> None:
    path = root / rel
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in rel):
        raise InstallError(f"{path!r} has a control character in its name: rename or remove it")
    if path.is_symlink():
        target = os.readlink(path)
        inside = os.path.normpath(os.path.join(os.path.dirname(rel), target))
        if os.path.isabs(target) or inside not in allowed or (root / inside).is_symlink():
            raise InstallError(
                f"{path} links to {target!r}, outside the files installed: replace it by a file"
            )
    elif not path.is_file():
        raise InstallError(f"{path} is not a regular file: remove it from the checkout")


def tree_id(root: Path, files: list[str] | None = None) -> str:
    """sha256 over the runtime tree: each entry's path, kind (file, executable, link) and content."""
    digest = hashlib.sha256()
    for rel in files if files is not None else runtime_files(root):
        path = root / rel
        if path.is_symlink():
            kind, data = b"l", os.readlink(path).encode()
        else:
            kind, data = (b"x" if _executable(path) else b"f"), path.read_bytes()
        digest.update(rel.encode() + b"\0" + kind + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def source_version(root: Path) -> str:
    text = (root / "pcswitcher" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([0-9A-Za-z.+-]+)"$', text, re.MULTILINE)
    if not match:
        raise InstallError(f"no __version__ in {root}/pcswitcher/__init__.py: fix the checkout")
    return match.group(1)


def read_install(prefix: Path) -> dict[str, str] | None:
    """``PREFIX/install.json`` when it is a complete install's record, else None."""
    try:
        data = json.loads((prefix / INSTALL_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), str) for k in ("version", "python", "id")
    ):
        return None
    return {k: data[k] for k in ("version", "python", "id")}


def _copy_tree(src: Path, dst: Path, files: list[str]) -> None:
    """The files (root-owned, no group/other write) and links of ``files`` from ``src`` to ``dst``
    (mode 0700 until the caller has checked the copy)."""
    dst.mkdir(mode=0o700)
    for rel in files:
        source, target = src / rel, dst / rel
        for parent in reversed(target.relative_to(dst).parents[:-1]):
            (dst / parent).mkdir(mode=0o755, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copyfile(source, target, follow_symlinks=False)
            target.chmod(0o755 if _executable(source) else 0o644)


def _python_minor(python: str) -> str:
    out = subprocess.run(
        [python, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0 or not re.fullmatch(r"3\.\d+", out.stdout.strip()):
        raise InstallError(f"{python} does not run: install python3 (3.11 or newer)")
    minor = out.stdout.strip()
    if tuple(int(p) for p in minor.split(".")) < (3, 11):
        raise InstallError(f"{python} is Python {minor}: pc-switcher needs 3.11 or newer")
    return minor


def _run(argv: list[str], what: str) -> None:
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        raise InstallError(
            f"{what} failed (exit code {res.returncode}, output above): fix that and run again"
        )


def _make_venv(prefix: Path, python: str) -> None:
    venv = prefix / "venv"
    _run([python, "-m", "venv", str(venv)], f"making the venv {venv}")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "-q", "--disable-pip-version-check"]
    _run([*pip, "install", "--root-user-action=ignore", "-e", str(prefix / "app")], "pip install")
    # .pyc files now: without them every start compiles its imports again (see make bootstrap)
    compiled = [str(venv / "lib"), str(prefix / "app" / "pcswitcher")]
    _run([str(venv / "bin" / "python"), "-m", "compileall", "-q", "-j0", *compiled], "compileall")
    _run([str(venv / "bin" / "pc-switcher"), "--version"], "the installed pc-switcher --version")


def _write_json_atomic(path: Path, data: dict[str, str]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".install.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _check_prefix(prefix: Path) -> None:
    if str(prefix) in _SYSTEM_DIRS or len(prefix.parts) < 3:
        raise InstallError(
            f"PREFIX={prefix} is a system directory or at the top level: "
            "give pc-switcher its own directory below one, e.g. /opt/pc-switcher"
        )
    if prefix.is_symlink() or (prefix.exists() and not prefix.is_dir()):
        raise InstallError(
            f"PREFIX={prefix} exists and is not a directory: remove it or choose another PREFIX"
        )
    if prefix.is_dir():
        strange = sorted(n for n in os.listdir(prefix) if n not in _OURS and not n.startswith(".install."))
        if strange:
            raise InstallError(
                f"PREFIX={prefix} holds {', '.join(strange[:3])}, not a pc-switcher install: "
                "choose an empty or new PREFIX"
            )


def _link_ok(link: Path, prefix: Path) -> bool:
    """True when ``link`` is absent or is our link to ``PREFIX/venv/bin/pc-switcher``."""
    if not link.is_symlink():
        return not link.exists()
    return os.readlink(link) == str(prefix / "venv" / "bin" / "pc-switcher")


def _set_link(link: Path, prefix: Path) -> None:
    if not _link_ok(link, prefix):
        raise InstallError(
            f"{link} exists and is not pc-switcher's link: remove it, or set BINDIR to another dir"
        )
    if link.is_symlink():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    os.symlink(prefix / "venv" / "bin" / "pc-switcher", tmp)
    os.replace(tmp, link)


def install(src: Path, prefix: Path, bindir: Path, python: str) -> str:
    """Install the checkout ``src``; returns what was done, for the user."""
    _check_prefix(prefix)
    link = bindir / "pc-switcher"
    if not _link_ok(link, prefix):
        raise InstallError(
            f"{link} exists and is not pc-switcher's link: remove it, or set BINDIR to another dir"
        )
    files = runtime_files(src)
    record = {"version": source_version(src), "python": _python_minor(python), "id": tree_id(src, files)}
    if read_install(prefix) == record and (prefix / "venv" / "bin" / "pc-switcher").exists():
        _set_link(link, prefix)
        return f"pc-switcher {record['version']} is installed in {prefix} already (same files): nothing to do"
    prefix.mkdir(mode=0o755, parents=True, exist_ok=True)
    for stale in (".new", ".old"):
        shutil.rmtree(prefix / stale, ignore_errors=True)
    _copy_tree(src, prefix / ".new", files)
    if tree_id(prefix / ".new", files) != record["id"]:
        shutil.rmtree(prefix / ".new")
        raise InstallError(f"{src} changed while it was copied: run make install again")
    (prefix / ".new").chmod(0o755)  # readable once it is known to be the checkout's runtime tree
    _swap_in(prefix, python, record)
    _set_link(link, prefix)
    return f"installed pc-switcher {record['version']} in {prefix}, command {link}"


def _swap_in(prefix: Path, python: str, record: dict[str, str]) -> None:
    """Old app and venv aside, the new ones in, install.json last; the old ones back on failure."""
    old, previous = prefix / ".old", read_install(prefix)
    (prefix / INSTALL_JSON).unlink(missing_ok=True)
    old.mkdir()
    for name in ("app", "venv"):
        if (prefix / name).exists():
            os.rename(prefix / name, old / name)
    try:
        os.rename(prefix / ".new", prefix / "app")
        _make_venv(prefix, python)
        _write_json_atomic(prefix / INSTALL_JSON, record)
    except BaseException:
        for name in ("app", "venv"):
            shutil.rmtree(prefix / name, ignore_errors=True)
            if (old / name).exists():
                os.rename(old / name, prefix / name)
        if previous is not None:
            _write_json_atomic(prefix / INSTALL_JSON, previous)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(prefix / ".new", ignore_errors=True)


def uninstall(prefix: Path, bindir: Path) -> str:
    _check_prefix(prefix)
    link = bindir / "pc-switcher"
    if link.is_symlink() and _link_ok(link, prefix):
        link.unlink()
    elif link.exists() or link.is_symlink():
        print(f"note: {link} is not a link to {prefix}: left as it is", file=sys.stderr)
    shutil.rmtree(prefix, ignore_errors=True)
    if prefix.exists():
        raise InstallError(f"could not remove {prefix}: check its permissions (lsattr -d) and run again")
    return f"removed {prefix} and {link}"


def kept_message() -> str:
    """Where the config and state dirs of root and of the user who ran ``sudo make uninstall`` are:
    uninstall keeps them."""
    homes = [Path(pwd.getpwuid(0).pw_dir)]
    with contextlib.suppress(KeyError):
        if os.environ.get("SUDO_USER"):
            homes.append(Path(pwd.getpwnam(os.environ["SUDO_USER"]).pw_dir))
    kept = [
        str(home / sub / "pc-switcher")
        for home in dict.fromkeys(homes)
        for sub in (".config", ".local/state")
        if (home / sub / "pc-switcher").is_dir()
    ]
    where = f" ({', '.join(kept)} here)" if kept else ""
    return (
        "kept: every user's config ~/.config/pc-switcher (config.yml, inventory.yml) and state dir "
        f"~/.local/state/pc-switcher (logs, runs){where}; remove them by hand to forget them"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="install.py", description="make install / make uninstall")
    parser.add_argument("action", choices=["install", "uninstall"])
    parser.add_argument("--prefix", default="/opt/pc-switcher")
    parser.add_argument("--bindir", default="/usr/local/bin")
    parser.add_argument("--source", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--python", default="/usr/bin/python3")
    args = parser.parse_args(argv)
    try:
        if os.geteuid() != 0:
            raise InstallError("make install needs root: run it as root or as a user with sudo")
        prefix = _checked_dir(args.prefix, "PREFIX")
        bindir = _checked_dir(args.bindir, "BINDIR")
        os.umask(0o022)
        if args.action == "install":
            print(install(Path(args.source).resolve(), prefix, bindir, args.python))
        else:
            print(uninstall(prefix, bindir))
            print(kept_message())
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
