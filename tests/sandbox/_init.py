"""PID 1 of a sandbox machine (runs inside the new PID/mount/UTS namespaces).

Started by ``unshare ... -- python3 -I _init.py CONFIG.json``. Standard library only. It

1. sets the hostname, mounts private tmpfs on /tmp and /run (keeping the checkout visible at its own
   path even when it lies under a directory the machine overmounts),
2. mounts the machine's btrfs image (``mount -o loop``, so the loop device auto-clears when the last
   mount is gone), creates the ``home`` and ``root`` subvolumes (and any extra ones) and mounts them
   over /home and /root (and the extra dirs); with ``private_etc``, a copy of the host's /etc on the
   subvolume ``etc`` mounted over /etc (this machine's name added to its ``hosts``), so that users
   and sudoers rules can be added to this machine alone,
3. starts ``sshd -D -e -f CONFIG`` with its log in the state dir,
4. writes ``ready`` (or ``error: ...``) to the status file and then reaps every child forever
   (orphans of ssh sessions are reparented to it).

With ``root`` in its config (a root machine, see :mod:`tests.sandbox.rootfs`) step 2 differs: the
image is a copy of the cached Debian root; the subvolume ``rootfs`` (a writable snapshot of the
read-only ``base``) becomes the machine's ``/`` by ``pivot_root``, with ``home`` and ``root`` on
/home and /root, ``proc`` (its ``/proc/sys`` read-only), the host's ``/dev`` and ``/sys`` (recursive
binds, ``/sys`` read-only: the kernel's settings are the host's), tmpfs on /tmp and /run,
the btrfs top level on ``btrfs_top``, and at their own paths the checkout and the sandbox dir
(read-write) and the ``ro_binds`` (read-only). sshd is then the machine's own ``/usr/sbin/sshd``.

It is stopped from outside with SIGKILL, which ends the whole PID namespace.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv!r} failed with rc {proc.returncode}: {proc.stderr.strip()}")


def _write_status(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def _hidden(path: str, mounts: list[str]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def _setup(cfg: dict[str, Any]) -> None:
    socket.sethostname(cfg["name"])
    os.chdir("/")
    # paths that the private mounts below would hide (a checkout under /tmp or /root): hold them by
    # a bind mount in the state dir now, and bind them back at the same path afterwards
    overlays: list[str] = cfg.get("overlays", [])
    overmounted = ["/tmp", "/run", *overlays, *(target for target, _ in cfg["subvolumes"])]
    held: list[tuple[str, str]] = []
    for index, path in enumerate(cfg.get("keep_visible", [])):
        if _hidden(path, overmounted):
            hold = os.path.join(cfg["hold_dir"], str(index))
            os.makedirs(hold, exist_ok=True)
            _run(["mount", "--bind", path, hold])
            held.append((hold, path))
    _run(["mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", "/tmp"])
    _run(["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs", "/run"])
    os.mkdir("/run/sshd", 0o755)
    top = cfg["btrfs_top"]
    os.makedirs(top, mode=0o700, exist_ok=True)
    _run(["mount", "-t", "btrfs", "-o", "loop,subvolid=5", cfg["image"], top])
    dev = subprocess.run(
        ["findmnt", "-n", "-v", "-o", "SOURCE", "--mountpoint", top],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not dev.startswith("/dev/loop"):
        raise RuntimeError(f"unexpected source of {top}: {dev!r}")
    for target, sub in cfg["subvolumes"]:
        if not os.path.isdir(os.path.join(top, sub)):
            _run(["btrfs", "-q", "subvolume", "create", os.path.join(top, sub)])
        os.chmod(os.path.join(top, sub), stat.S_IMODE(os.stat(target).st_mode))  # the host dir's
        _run(["mount", "-t", "btrfs", "-o", f"subvol=/{sub}", dev, target])
    if cfg.get("private_etc"):
        _private_etc(cfg["name"], top, dev)
    for path in overlays:
        _private_overlay(top, path)
    for hold, path in held:
        os.makedirs(path, exist_ok=True)
        _run(["mount", "--bind", hold, path])


def _private_etc(name: str, top: str, dev: str) -> None:
    """The host's /etc copied (owners, modes, links, ACLs, xattrs) onto the subvolume ``etc`` and
    mounted over /etc in this mount namespace only: the host's /etc is never written."""
    sub = os.path.join(top, "etc")
    if not os.path.isdir(sub):
        _run(["btrfs", "-q", "subvolume", "create", sub])
        _run(["cp", "-a", "--", "/etc/.", sub])
        with open(os.path.join(sub, "hosts"), "a") as hosts:
            hosts.write(f"127.0.1.1 {name}\n")  # sudo resolves the host name (else a warning per call)
    _run(["mount", "-t", "btrfs", "-o", "subvol=/etc", dev, "/etc"])


def _private_overlay(top: str, path: str) -> None:
    """An overlay over the host dir ``path`` in this mount namespace: the host's content visible
    (read-only lower layer), every write in ``overlay/<name>/upper`` on this machine's btrfs, gone
    with its image at teardown. The host's dir is never written."""
    base = os.path.join(top, "overlay", path.strip("/").replace("/", "_"))
    upper, work = os.path.join(base, "upper"), os.path.join(base, "work")
    os.makedirs(upper, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    os.chmod(upper, stat.S_IMODE(os.stat(path).st_mode))  # the host dir's mode, as for subvolumes
    _run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={path},upperdir={upper},workdir={work}", path]
    )


MNT_DETACH = 2
_OLD_ROOT = ".pcs-old-root"


def _bind(source: str, target: str, read_only: bool = False) -> None:
    """The dir ``source`` bound at ``target`` (created in the machine's tree when missing)."""
    os.makedirs(target, exist_ok=True)
    _run(["mount", "--bind", source, target])
    if read_only:
        _run(["mount", "-o", "remount,bind,ro", target])


def _first_start(top: str, name: str) -> None:
    """The machine's subvolumes made from the cached ``base`` (once: a restarted image keeps them)."""
    _run(["btrfs", "-q", "subvolume", "snapshot", os.path.join(top, "base"), os.path.join(top, "rootfs")])
    new = os.path.join(top, "rootfs")
    with open(os.path.join(new, "etc/hostname"), "w") as fh:
        fh.write(name + "\n")
    with open(os.path.join(new, "etc/hosts"), "a") as fh:
        fh.write(f"127.0.1.1\t{name}\n")  # sudo resolves the host name (else a warning per call)
    for sub in ("home", "root"):
        _run(["btrfs", "-q", "subvolume", "create", os.path.join(top, sub)])
        _run(["cp", "-a", "--", os.path.join(new, sub) + "/.", os.path.join(top, sub)])
        os.chmod(os.path.join(top, sub), stat.S_IMODE(os.stat(os.path.join(new, sub)).st_mode))


def _setup_root(cfg: dict[str, Any]) -> None:
    """Mount the machine's own Debian root (see the module docstring) and pivot into it."""
    socket.sethostname(cfg["name"])
    top, new = cfg["stage_top"], cfg["stage_root"]
    os.makedirs(top, mode=0o700, exist_ok=True)
    os.makedirs(new, mode=0o755, exist_ok=True)
    _run(["mount", "-t", "btrfs", "-o", "loop,subvolid=5", cfg["image"], top])
    _run(["btrfs", "filesystem", "resize", "max", top])
    if not os.path.isdir(os.path.join(top, "rootfs")):
        _first_start(top, cfg["name"])
    dev = _source_of(top)
    _run(["mount", "-t", "btrfs", "-o", "subvol=/rootfs", dev, new])
    for target, sub in cfg["subvolumes"]:
        _run(["mount", "-t", "btrfs", "-o", f"subvol=/{sub}", dev, new + target])
    _run(["mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", new + "/proc"])
    _run(["mount", "--rbind", "/dev", new + "/dev"])
    _run(["mount", "--rbind", "/sys", new + "/sys"])
    # the kernel's settings are this host's: a package's postinst running sysctl must not change them
    _run(["mount", "-o", "remount,bind,ro", new + "/sys"])
    _bind(new + "/proc/sys", new + "/proc/sys", read_only=True)
    _run(["mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", new + "/tmp"])
    _run(["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs", new + "/run"])
    os.mkdir(new + "/run/sshd", 0o755)
    os.makedirs(new + cfg["btrfs_top"], mode=0o700)
    _run(["mount", "-t", "btrfs", "-o", "subvolid=5", dev, new + cfg["btrfs_top"]])
    for path in cfg.get("keep_visible", []):
        _bind(path, new + path)
    for inside, host in cfg.get("ro_binds", []):
        _bind(host, new + inside, read_only=True)
    _pivot(new)


def _source_of(mountpoint: str) -> str:
    dev = subprocess.run(
        ["findmnt", "-n", "-v", "-o", "SOURCE", "--mountpoint", mountpoint],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not dev.startswith("/dev/loop"):
        raise RuntimeError(f"unexpected source of {mountpoint}: {dev!r}")
    return dev


def _pivot(new: str) -> None:
    """``new`` becomes ``/`` of this mount namespace (for every process in it, this one included);
    the host's tree is detached: nothing of it is reachable from inside but what was bound."""
    libc = ctypes.CDLL(None, use_errno=True)  # this process's symbols: the C library's umount2
    old = os.path.join(new, _OLD_ROOT)
    os.makedirs(old, exist_ok=True)
    _run([shutil.which("pivot_root") or "/sbin/pivot_root", new, old])
    os.chdir("/")
    if libc.umount2(("/" + _OLD_ROOT).encode(), MNT_DETACH) != 0:
        raise OSError(ctypes.get_errno(), "umount2 of the old root")
    os.rmdir("/" + _OLD_ROOT)


def _reap_forever() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    while True:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        signal.sigtimedwait([signal.SIGCHLD], 5.0)


def main() -> int:
    cfg: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text())
    status = Path(cfg["status_file"])
    try:
        if cfg.get("root"):
            _setup_root(cfg)
        else:
            _setup(cfg)
        _run(["/usr/sbin/sshd", "-t", "-f", cfg["sshd_config"]])
        with open(cfg["sshd_log"], "ab") as log:
            subprocess.Popen(
                ["/usr/sbin/sshd", "-D", "-e", "-f", cfg["sshd_config"]],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
            )
    except Exception as exc:
        traceback.print_exc()
        _write_status(status, f"error: {exc}")
        return 1
    _write_status(status, "ready")
    _reap_forever()
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
