"""The pc-switcher agent: one small stdlib-only program that runs on both machines of a sync.

It is the run's watchman on a machine. The driver starts one on the source (a child process with a
pipe) and one on the target (over ssh; that ssh process is also the run's ControlMaster), there as
``python3 -c <bootstrap> pcswitcher-agent monitor --run <run id> ...``: the bootstrap reads this
file from stdin first (session.py). They speak JSON lines: the driver writes commands to the
agent's stdin, the agent answers on stdout.

Commands (one per line):
    ping                 -> {"t": "hb", "time": ..., "disk": [...]} (and any new progress lines)
    drain                -> every progress line written so far, then {"t": "drained"}
    sweep [JID ...]      -> kill every process of the run now; {"t": "swept", "killed": [...]}
    history JSON         -> read or record this machine's sync history (see :func:`history`);
                            {"t": "history", "host": ..., "path": ..., "history": ..., ...}
    flush                -> flush the local filesystems (:func:`flush_local_filesystems`) in a
                            thread, answering pings meanwhile; when done
                            {"t": "flushed", "mounts": [...], "seconds": ...}
    carry JSON           -> what pc-switcher install and config this machine has, or write the
                            config and the inventory (see :func:`carry`); {"t": "carry", ...}
    snapshots JSON       -> validate, or take a sync's btrfs snapshots (and prune), in a thread
                            like flush (see :func:`snapshots`); when done
                            {"t": "snapshots", "host": ..., "problems"|"created"|..., "seconds": ...}
                            (a flush or snapshots while one runs: {"t": "busy", "command": ...})
    quit                 -> sweep, remove the run's directory, exit

Dead-man switch: when stdin reaches EOF (the driver died, its ssh died) or no command arrives for
``--timeout`` seconds (a frozen link), the agent sweeps the run's processes, removes the run's
directory and exits — as it does on ``quit``.

A process belongs to the run when its environment holds ``PCSWITCHER_RUN_ID=<run id>`` (the play
environment gives every module, async wrapper and their children this tag), or when its command
line names one of the run's async job ids, or when it descends from such a process. Nothing is ever
matched by process name. The agent never kills itself or its ancestors.

The same file is the ``module_utils/pcswitcher_agent.py`` of four roles (symlinks to this file): the
cleanup role's ``pcswitcher_sweep`` module sweeps with :func:`sweep`, the sync_history role's
``pcs_history`` module reads and records with :func:`history`, the btrfs_snapshots role's
``pcs_btrfs`` module checks, takes, lists and prunes snapshots with :func:`snapshots` and the
functions it uses, the carry role's ``pcs_carry`` reads and writes with :func:`carry` — what the
driver asks the agents to do during a sync is exactly what those playbooks do when run by hand. From a shell:
``pcswitcher_agent.py sweep --run ID [--jid J ...] [--remove]``; ``pcswitcher_agent.py disk -- PATH...``
prints the free space figure of each path, as the pings measure it (a job's space check may run it
on the target).
Python 3.8+ (the oldest ansible-core 2.19 manages) and the standard library only: it runs on any
target that Ansible can manage.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

TAG = "PCSWITCHER_RUN_ID"
RUN_ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # \Z: no trailing newline
RUN_DIR_PREFIX = "/tmp/pcswitcher-"
#: The target's agent runs as ``python3 -c <bootstrap> pcswitcher-agent ARGS`` (session.py)
AGENT_NAME = "pcswitcher-agent"


def run_dir(run_id: str) -> str:
    """The run's working directory on a machine (progress file, Ansible's remote tmp, async dir)."""
    return RUN_DIR_PREFIX + run_id


def _stat_field(pid: int, index: int) -> int:
    """Field ``index`` (0 = state, after the command name) of ``/proc/<pid>/stat``; 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2 :].split()[index])
    except (OSError, ValueError, IndexError):
        return 0


def _ppid(pid: int) -> int:
    return _stat_field(pid, 1)


def start_ticks(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot (0 if gone): with the pid, a process's identity.

    Unlike a wall-clock start time (psutil's ``create_time()``, boot time + ticks), it does not move
    when the system clock is stepped, so a process recorded in one program is recognised in another."""
    return _stat_field(pid, 19)


def _ancestors(pid: int) -> set[int]:
    seen = {pid}
    while pid > 1:
        pid = _ppid(pid)
        seen.add(pid)
    return seen


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def find_run_processes(run_id: str, jids: list[str] | tuple[str, ...] = ()) -> dict[int, str]:
    """pid -> command line of every live process of the run (tag, async job id, or descendant)."""
    tag = f"{TAG}={run_id}".encode()
    jid_bytes = [j.encode() for j in jids if j]
    protected = _ancestors(os.getpid())
    parents: dict[int, int] = {}
    cmdlines: dict[int, str] = {}
    matched: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in protected:
            continue
        cmdline = _read(f"/proc/{pid}/cmdline")
        if not cmdline:  # kernel thread or zombie: nothing to kill
            continue
        parents[pid] = _ppid(pid)
        cmdlines[pid] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        if tag in _read(f"/proc/{pid}/environ").split(b"\0") or any(j in cmdline for j in jid_bytes):
            matched.add(pid)
    # descendants of matched processes belong to the run even if they cleared their environment
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if pid not in matched and ppid in matched:
                matched.add(pid)
                changed = True
    return {pid: cmdlines[pid] for pid in sorted(matched)}


def _signal_all(pids: object, sig: int) -> None:
    for pid in pids:  # type: ignore[attr-defined]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _release_parents(parents: set[int], killed: set[int], timeout: float = 1.0) -> None:
    """SIGCONT to the stopped ones of ``parents`` (outside the run; never the agent or its ancestors)
    until they reaped the killed children: a parent that stopped itself when the sweep froze its child
    (``sudo`` does, to pass job control on) would otherwise wait forever for the child it cannot reap."""
    waiting = parents - killed - _ancestors(os.getpid()) - {0, 1}
    deadline = time.monotonic() + timeout
    while waiting:
        for pid in waiting:
            stat = _read(f"/proc/{pid}/stat")
            if stat[stat.rfind(b")") + 2 :][:1] == b"T":
                _signal_all([pid], signal.SIGCONT)
        unreaped = [pid for pid in killed if _ppid(pid) in waiting]
        if not unreaped or time.monotonic() > deadline:
            return
        time.sleep(0.01)


#: rsync's temporary file beside the file it receives: ``.NAME.XXXXXX`` (mkstemp's six characters).
RSYNC_TEMP_RE = re.compile(r"\A\..+\.[A-Za-z0-9]{6}\Z", re.DOTALL)
if TYPE_CHECKING:  # (not at run time: Python 3.8 on a target cannot subscript tuple)
    #: A temporary file of a killed rsync: its (device, inode), path, its directory's (device, inode).
    Temp = tuple[tuple[int, int], str, tuple[int, int]]


def _fd_writes(pid: int, fd: str) -> bool:
    """Whether the process's ``fd`` is open for writing (the ``flags`` of its fdinfo, octal)."""
    for line in _read(f"/proc/{pid}/fdinfo/{fd}").splitlines():
        if line.startswith(b"flags:"):
            return int(line.split()[1], 8) & 0o3 != os.O_RDONLY  # O_ACCMODE (not in every Python's os)
    return False


def rsync_temps(procs: dict[int, str]) -> list[Temp]:
    """The temporary files the rsync processes among ``procs`` are writing: regular files open for
    writing, named as rsync names them. Read before they are killed (a killed receiver leaves its
    temporary file: rsync's signal handler sleeps 0.4 s before it cleans up, longer than the sweep's
    grace). A process this user cannot look into is skipped, and so is an rsync told to write into
    the real files (``--inplace``, ``--append``: what it has open is no temporary file)."""
    temps: list[Temp] = []
    for pid, cmd in procs.items():
        words = cmd.split(" ")
        into_real_files = any(w.startswith(("--inplace", "--append")) for w in words)
        if os.path.basename(words[0]) != "rsync" or into_real_files:
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError, ValueError):
                    path = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if not path.startswith("/") or not RSYNC_TEMP_RE.match(os.path.basename(path)):
                        continue  # a deleted file's link ends in " (deleted)"
                    st = os.stat(f"/proc/{pid}/fd/{fd}")
                    if stat.S_ISREG(st.st_mode) and _fd_writes(pid, fd):
                        parent = os.stat(os.path.dirname(path))
                        temps.append(((st.st_dev, st.st_ino), path, (parent.st_dev, parent.st_ino)))
    return temps


def remove_temps(temps: list[Temp]) -> list[str]:
    """Remove the temporary files of :func:`rsync_temps` once their writers are dead: a name is
    removed only when it is still that file (same inode, one link, a regular file) in that same
    directory (opened without following a symlink, same inode). Returns the paths removed."""
    removed = []
    for ident, path, parent in temps:
        head, name = os.path.split(path)
        with contextlib.suppress(OSError):
            dir_fd = os.open(head, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                d, st = os.fstat(dir_fd), os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                same = (d.st_dev, d.st_ino) == parent and (st.st_dev, st.st_ino) == ident
                if same and st.st_nlink == 1 and stat.S_ISREG(st.st_mode):
                    os.unlink(name, dir_fd=dir_fd)
                    removed.append(path)
            finally:
                os.close(dir_fd)
    return removed


def sweep(run_id: str, jids: list[str] | tuple[str, ...] = (), grace: float = 0.3) -> dict[str, object]:
    """Kill every process of the run: SIGTERM, a short grace, then freeze-and-SIGKILL until none is
    left; then remove the temporary files its rsync processes were writing (:func:`rsync_temps`)."""
    found = find_run_processes(run_id, jids)
    killed = dict(found)
    parents = {_ppid(pid) for pid in found}
    temps = rsync_temps(found)
    if found:
        _signal_all(found, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and find_run_processes(run_id, jids):
            time.sleep(0.02)
    for _ in range(50):
        found = find_run_processes(run_id, jids)
        if not found:
            break
        killed.update(found)
        parents.update(_ppid(pid) for pid in found)
        _signal_all(found, signal.SIGSTOP)  # frozen processes cannot fork new children
        again = find_run_processes(run_id, jids)
        killed.update(again)
        temps += rsync_temps({**found, **again})
        _signal_all(set(found) | set(again), signal.SIGKILL)
        time.sleep(0.02)
    _release_parents(parents, set(killed))
    remaining = find_run_processes(run_id, jids)
    return {
        "t": "swept",
        "killed": [{"pid": pid, "cmd": cmd[:200]} for pid, cmd in sorted(killed.items())],
        "remaining": sorted(remaining),
        "temps_removed": [] if remaining else remove_temps(temps),
    }


def remove_run_files(run_id: str, jids: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Remove the run's directory and the async status files of its jobs in the default async dir."""
    removed = []
    path = run_dir(run_id)
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    async_dir = os.path.expanduser("~/.ansible_async")
    for jid in jids:
        if RUN_ID_RE.match(jid):
            for name in (jid, f"{jid}.results"):
                status = os.path.join(async_dir, name)
                if os.path.exists(status):
                    os.remove(status)
                    removed.append(status)
    return removed


#: A run id as pc-switcher makes them (a sync's, and a snapshot session's): its start in UTC and
#: four random hex digits, ``20261127T235000Z-3f9a`` (:func:`new_run_id`). The one definition of
#: the format: the run and state directories, the logs and the snapshot sessions are named by it.
RUN_ID_TIME = "%Y%m%dT%H%M%SZ"
RUN_ID_STAMP = r"[0-9]{8}T[0-9]{6}Z"  # RUN_ID_TIME's text
RUN_ID_FORMAT = rf"{RUN_ID_STAMP}-[0-9a-f]{{4}}"


def new_run_id() -> str:
    return f"{time.strftime(RUN_ID_TIME, time.gmtime())}-{secrets.token_hex(2)}"


#: The name of a run's directory (:func:`run_dir`)
RUN_DIR_NAME_RE = re.compile(rf"^pcswitcher-{RUN_ID_FORMAT}$")


def live_run_ids() -> set[str]:
    """The run ids in the tags (``PCSWITCHER_RUN_ID=``) of the live processes this user can see."""
    prefix = f"{TAG}=".encode()
    found: set[str] = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            for item in _read(f"/proc/{name}/environ").split(b"\0"):
                if item.startswith(prefix):
                    found.add(item[len(prefix) :].decode(errors="replace"))
    return found


def remove_stale_run_dirs(current: str, parent: str = os.path.dirname(RUN_DIR_PREFIX)) -> list[str]:
    """Remove the run directories that killed runs left on this machine; returns their paths.

    Call it only while holding this machine's sync lock: then no other run of this machine (as
    source or target) is alive. Even so, a directory is removed only when its name is a run id's
    (``pcswitcher-20261127T235000Z-3f9a``), it is a directory itself (not a symlink), it belongs to
    this user, it is not ``current``'s, and no live process carries its run's tag. Nothing below it
    is followed (``shutil.rmtree`` works on file descriptors).
    """
    removed: list[str] = []
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return removed
    live: set[str] | None = None
    for name in names:
        run_id = name[len("pcswitcher-") :]
        if not RUN_DIR_NAME_RE.match(name) or run_id == current:
            continue
        path = os.path.join(parent, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        if live is None:
            live = live_run_ids()
        if run_id in live:
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            removed.append(path)
    return removed


def try_lock(path: str) -> tuple[int | None, dict[str, object]]:
    """Take the flock on ``path``: (fd, previous content) or (None, holder) when held.

    Retries when the file was replaced under us (a holder unlinks it on release), so that two
    processes can never both hold locks on different inodes of the same path.
    """
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None, read_holder(path)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, read_holder(path)
        os.close(fd)


def missing_dirs(path: str) -> list[str]:
    """``path`` and those of its parents that do not exist (deepest first): what try_lock creates."""
    missing: list[str] = []
    while path and not os.path.exists(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def remove_empty_dirs(paths: list[str]) -> None:
    """Remove the directories a lock created, deepest first, when nothing else was put in them."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.rmdir(path)


def describe_holder(holder: dict[str, object]) -> str:
    keys = ("host", "pid", "role", "target", "source", "run_id", "started")
    return ", ".join(f"{k} {holder[k]}" for k in keys if holder.get(k) is not None) or "unknown holder"


def write_holder(fd: int, record: dict[str, object]) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)


def unlock(fd: int, path: str) -> None:
    """Remove the file, then drop the lock (in this order: see try_lock)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_holder(path: str) -> dict[str, object]:
    try:
        with open(path) as f:
            data = json.loads(f.read() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


#: This machine's sync lock, below its state home (``$XDG_STATE_HOME``, ``~/.local/state``): the one
#: definition of its place (the driver takes it as source, see lock.py; the agent as target;
#: a rollback through safety.TARGET_LOCK_PATH)
LOCK_FILE = "pc-switcher/sync.lock"


def default_lock_path() -> str:
    """The sync lock of this machine: the file the driver takes as source (paths.lock_path) and the
    agent as target. ``$XDG_STATE_HOME`` counts only when absolute (the XDG rule, as paths.py reads it)."""
    state = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):
        state = os.path.expanduser("~/.local/state")
    return os.path.join(state, LOCK_FILE)


BTRFS_SYSFS = "/sys/fs/btrfs"


def btrfs_filesystem(fsid: int, sysfs: str = BTRFS_SYSFS) -> str:
    """The UUID of the mounted btrfs whose ``statvfs().f_fsid`` is ``fsid``, or "" (not btrfs).

    btrfs's statfs folds its UUID into ``f_fsid`` (fs/btrfs/super.c, btrfs_statfs): with the UUID as
    four big-endian 32-bit words w0..w3, the low half is ``w0 ^ w2 ^ (subvolume id >> 32)`` (the id is
    below 2**32, so ``w0 ^ w2``) and the high half ``w1 ^ w3 ^ (subvolume id & 0xffffffff)``. So every
    path of a btrfs — any subvolume — is matched to its ``/sys/fs/btrfs/<UUID>`` without opening it
    (no permission needed, unlike the BTRFS_IOC_FS_INFO ioctl). A C library that keeps only the low
    half gives a high half of 0, which is accepted too.
    """
    try:
        names = os.listdir(sysfs)
    except OSError:
        return ""
    low, high = fsid & 0xFFFFFFFF, fsid >> 32
    for name in names:
        try:
            raw = bytes.fromhex(name.replace("-", ""))
        except ValueError:
            continue
        if len(raw) != 16:
            continue
        w = [int.from_bytes(raw[i : i + 4], "big") for i in range(0, 16, 4)]
        subvolume = high ^ w[1] ^ w[3]
        if low == w[0] ^ w[2] and (high == 0 or subvolume == 5 or 256 <= subvolume < 1 << 32):
            return name
    return ""


def btrfs_unwritten(uuid: str, sysfs: str = BTRFS_SYSFS) -> int:
    """Bytes of data the btrfs ``uuid`` has promised to writes but ``statvfs`` does not count yet.

    btrfs's statvfs counts data extents once a transaction commits them (every 30 s by default); a
    write takes its space at once as a reservation: ``bytes_may_use`` (delayed allocation, data still
    in the page cache) and ``bytes_reserved`` (written back, not yet committed) of the data space
    (``mixed`` on a filesystem with mixed block groups). Measured on a 300 MiB btrfs: after writing
    50 MiB without sync, statvfs's free figure did not move and bytes_may_use rose by 50 MiB; after
    fdatasync the same bytes were in bytes_reserved; after the commit in bytes_used (statvfs).
    """
    for kind in ("data", "mixed"):
        base = os.path.join(sysfs, uuid, "allocation", kind)
        values = [_read(os.path.join(base, name)).strip() for name in ("bytes_may_use", "bytes_reserved")]
        if all(v.isdigit() for v in values):
            return sum(int(v) for v in values)
    return 0


def disk_figure(path: str) -> dict[str, object]:
    """Free and total bytes of the filesystem of ``path``.

    A path that does not exist (yet) is measured at its nearest existing parent: the filesystem
    that would hold it. ``free`` is what writes can still use: on btrfs, statvfs's figure minus the
    data written but not yet committed (``unwritten``, :func:`btrfs_unwritten`), so that it falls as
    soon as data is written, not at the next commit. ``fs`` names the filesystem (a btrfs by its
    UUID, whichever subvolume the path is on; else ``fsid:<f_fsid>``). ``total`` is 0 on a pseudo
    filesystem (/proc, ...).
    """
    probe = path
    while not os.path.exists(probe) and probe not in ("/", ""):
        probe = os.path.dirname(probe)
    try:
        st = os.statvfs(probe or "/")
    except OSError as exc:
        return {"path": path, "error": exc.strerror or str(exc)}
    uuid = btrfs_filesystem(st.f_fsid)
    unwritten = btrfs_unwritten(uuid) if uuid else 0
    return {
        "path": path,
        "free": max(0, st.f_bavail * st.f_frsize - unwritten),
        "total": st.f_blocks * st.f_frsize,
        "unwritten": unwritten,
        "fs": uuid or f"fsid:{st.f_fsid:x}",
    }


def disk_figures(paths: list[str]) -> list[dict[str, object]]:
    """:func:`disk_figure` of each path, once per filesystem, pseudo filesystems left out."""
    out: list[dict[str, object]] = []
    seen: set[object] = set()
    for path in paths:
        figure = disk_figure(path)
        if "error" not in figure and (figure["fs"] in seen or not figure["total"]):
            continue
        seen.add(figure.get("fs"))
        out.append(figure)
    return out


HISTORY_KEEP = 100


def history_read(path: str) -> tuple[dict[str, object] | None, str]:
    """The sync history in ``path`` (None when there is none) and a problem ("" when readable)."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None, ""
    except (OSError, ValueError) as exc:
        return None, f"history file {path} on {socket.gethostname()} is unreadable: {exc}"
    if not isinstance(data, dict):
        return None, f"history file {path} on {socket.gethostname()} is not a JSON object"
    return data, ""


def history_path_problem(path: str) -> str:
    """Why ``path`` cannot be a history file ("" when it can): it must be a regular file (a
    symlink to one is followed) or not exist yet. A directory, a FIFO (reading it would block) or a
    device (``/dev/zero`` never ends) is refused with the path and the fix."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return ""
    except OSError as exc:
        if exc.errno != errno.ENOTDIR:
            return ""  # unreadable: history_read() says so
        kind = "below a file, not a directory"
    else:
        if stat.S_ISREG(mode):
            return ""
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
    return (
        f"history path {path} on {socket.gethostname()} is {kind}: set history.path in the config "
        "(or the host var pcswitcher_history_path of the target) to the path of a file"
    )


def write_json_atomically(path: str, data: object) -> None:
    """Write ``data`` as JSON to ``path`` (mode 0600): a temp file beside it, fsynced, renamed over
    it. Whatever fails — the write (a full disk), the rename (``path`` is a directory), a signal —
    the temp file does not survive it."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _remove_old_temp_files(path)


def _remove_old_temp_files(path: str, min_age: float = 60.0) -> None:
    """Remove the temp files of writers of ``path`` that were killed mid-write (SIGKILL leaves
    ``<path>.tmp-<pid>``): regular files of this user by that name, untouched for ``min_age`` s
    (a concurrent writer's is fresh)."""
    directory, name = os.path.split(path)
    pattern = re.compile(re.escape(name) + r"\.tmp-[0-9]+")
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if not pattern.fullmatch(entry.name):
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                old = time.time() - st.st_mtime > min_age
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and old:
                    os.unlink(entry.path)


#: Filesystems on local disks: the ones :func:`flush_local_filesystems` flushes.
LOCAL_FILESYSTEMS = frozenset(
    {"btrfs", "ext2", "ext3", "ext4", "xfs", "f2fs", "bcachefs", "zfs", "jfs", "reiserfs", "nilfs2"}
    | {"vfat", "exfat", "ntfs3", "hfsplus"}
)


def local_mounts(mountinfo: str) -> list[str]:
    """The mount points of ``/proc/self/mountinfo`` text whose filesystem is on a local disk
    (:data:`LOCAL_FILESYSTEMS`), one per filesystem (a device mounted twice, or a btrfs with
    several subvolumes mounted, is listed once)."""
    seen: set[str] = set()
    out: list[str] = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        fstype = fields[fields.index("-", 6) + 1]
        device = fields[2]
        if fstype in LOCAL_FILESYSTEMS and device not in seen:
            seen.add(device)
            out.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return out


def flush_local_filesystems() -> list[str]:
    """syncfs(2) every filesystem on a local disk; returns their mount points.

    Like sync(2), but a network or FUSE mount — which can block a flush for as long as its server is
    away — is left alone. Falls back to sync(2), and returns [], when this cannot be done (no
    mountinfo, no syncfs in the C library, a mount point that cannot be opened).
    """
    import ctypes  # only here: the agent's start-up does not need it

    try:
        with open("/proc/self/mountinfo") as fh:
            mounts = local_mounts(fh.read())
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
        for mount in mounts:
            fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                if syncfs(fd) != 0:
                    raise OSError(ctypes.get_errno(), f"syncfs {mount}")
            finally:
                os.close(fd)
    except (OSError, AttributeError):
        os.sync()
        return []
    return mounts


def _with_record(
    data: dict[str, object] | None, host: str, role: str, peer: str, session: str
) -> dict[str, object] | None:
    """The history ``data`` with a record of this sync appended and made ``last`` (None when the
    session is already the last record in this role)."""
    entries_value = (data or {}).get("entries")
    entries = entries_value if isinstance(entries_value, list) else []
    last_entry = entries[-1] if entries and isinstance(entries[-1], dict) else {}
    if last_entry.get("session") == session and last_entry.get("role") == role:
        return None
    record = {
        "role": role,
        "peer": peer,
        "session": session,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return {
        **(data or {}),
        "version": 1,
        "host": host,
        "last": record,
        "entries": [*entries, record][-HISTORY_KEEP:],
    }


def history(
    action: str,
    path: str,
    *,
    role: str = "",
    peer: str = "",
    session: str = "",
    check: bool = False,
    flushed: bool = False,
) -> dict[str, object]:
    """Read or record this machine's sync history file (docs/safety.md).

    The file (JSON, written atomically, mode 0600)::

        {"version": 1, "host": "<hostname>",
         "last": {"role": "source"|"target", "peer": "<hostname>", "session": "<id>", "time": "<UTC>"},
         "entries": [ ...the last 100 records, oldest first... ]}

    ``read`` never changes anything; ``record`` appends a record and makes it ``last`` (a session
    already recorded in this role is not recorded twice; ``check``: compute, write nothing). A
    target's record is written only after everything written on the machine is on disk (``flushed``:
    the caller has just flushed, with the agent's ``flush``, which answers pings meanwhile). Returns
    ``{"host", "path", "history", "problem", "changed"}``, plus ``"error"`` when it failed.
    """
    host = socket.gethostname()
    out: dict[str, object] = {"host": host, "path": path, "history": None, "problem": "", "changed": False}
    if not os.path.isabs(path):
        return {**out, "error": f"history path {path!r} on {host} is not absolute"}
    bad = history_path_problem(path)
    if bad:  # found when the history is read, before the sync changes anything
        return {**out, "error": bad, "bad_path": True}
    data, problem = history_read(path)
    if action == "read":
        return {**out, "history": data, "problem": problem}
    if action != "record":
        return {**out, "error": f"unknown history action {action!r}"}
    if not (role in ("source", "target") and peer and session):
        return {**out, "error": "recording a sync needs role (source or target), peer and session"}
    updated = _with_record(data, host, role, peer, session)
    if updated is None:
        return {**out, "history": data}  # already recorded
    error = "" if check else _write_history(path, updated, flush=role == "target" and not flushed)
    if error:
        return {**out, "error": error}
    return {**out, "history": updated, "changed": True}


def _write_history(path: str, data: dict[str, object], flush: bool) -> str:
    """Write the history file; "" or the error. ``flush``: flush the local filesystems first."""
    if flush:
        # The record says this session's changes reached this machine, so it must not reach the
        # disk before they do. After a large transfer this is where the run waits for the data
        # to be written; raw rsync returns with it still in the page cache.
        flush_local_filesystems()
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_json_atomically(path, data)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return f"cannot write the history file {path} on {socket.gethostname()}: {reason}"
    return ""


# -- btrfs snapshots -------------------------------------------------------------------------------
# One implementation of the snapshots before and after a sync: the agents' ``snapshots`` command
# (a sync) and the btrfs_snapshots role's module pcs_btrfs (hand runs, `pc-switcher snapshots`,
# rollback), which has this file as its module_utils. Layout on a machine (docs/safety.md)::
#
#     <location>/<session>/<subvol>@<session>-<phase>-<UTC stamp>   read-only snapshots
#     <location>/<session>/pc-switcher-session.json                  which mount each one is of

BTRFS_IOC_FS_INFO = 0x8400941F  # _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args[1024])
BTRFS_IOC_SUBVOL_GETFLAGS = 0x80089419  # _IOR(0x94, 25, __u64)
BTRFS_IOC_GET_SUBVOL_INFO = 0x81F8943C  # _IOR(0x94, 60, struct btrfs_ioctl_get_subvol_info_args), 504 bytes
SUBVOL_INFO_SIZE = 504
PARENT_UUID = slice(8 + 256 + 8 * 4 + 16, 8 + 256 + 8 * 4 + 32)  # after treeid, name, 4 u64, uuid
BTRFS_SUBVOL_RDONLY = 1 << 1
SUBVOL_INO = 256  # the root directory of every btrfs subvolume
SNAPSHOT_META = "pc-switcher-session.json"
SESSION_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
SNAP_RE = re.compile(
    r"^(?P<sub>[A-Za-z0-9._-]+)@(?P<session>[A-Za-z0-9][A-Za-z0-9_.-]*)-"
    r"(?P<phase>pre|post|rollback-replaced)-(?P<ts>\d{8}T\d{6}Z)$"
)
STAMP = "%Y%m%dT%H%M%SZ"
#: the fix named by every problem that means "this machine has no btrfs to snapshot"
SNAPSHOTS_OFF = "or set snapshots.enabled: false (no snapshots, no rollback)"


class SnapshotProblem(Exception):
    """A one-line reason a snapshot action cannot be done."""


def _btrfs_ioctl(path: str, request: int, size: int, flags: int = os.O_RDONLY) -> bytes | None:
    """The ``size`` bytes a btrfs ioctl fills for ``path``, or None (no such path, not btrfs)."""
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        buf = bytearray(size)
        fcntl.ioctl(fd, request, buf)
        return bytes(buf)
    except OSError:
        return None
    finally:
        os.close(fd)


def btrfs_fsid(path: str) -> str | None:
    """The btrfs file system UUID of ``path`` (hex), or None when it is not on btrfs."""
    raw = _btrfs_ioctl(path, BTRFS_IOC_FS_INFO, 1024)
    return raw[16:32].hex() if raw is not None else None


def is_subvolume(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_ino == SUBVOL_INO and btrfs_fsid(path) is not None


def is_readonly(path: str) -> bool:
    raw = _btrfs_ioctl(path, BTRFS_IOC_SUBVOL_GETFLAGS, 8)
    return raw is not None and bool(int.from_bytes(raw, "little") & BTRFS_SUBVOL_RDONLY)


def parent_uuid(path: str) -> bytes | None:
    """The UUID of the subvolume ``path`` was snapshotted from (all zeros: not a snapshot), or None
    when the kernel cannot tell (not a subvolume, ioctl missing)."""
    raw = _btrfs_ioctl(
        path, BTRFS_IOC_GET_SUBVOL_INFO, SUBVOL_INFO_SIZE, os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY
    )
    return raw[PARENT_UUID] if raw is not None else None


def existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def subvol_name(mount: str) -> str:
    """``/home`` -> ``home``, ``/`` -> ``rootfs``, ``/var/lib/x`` -> ``var_lib_x``."""
    stripped = os.path.normpath(mount).strip("/")
    return re.sub(r"[^A-Za-z0-9._-]", "_", stripped.replace("/", "_")) if stripped else "rootfs"


def stamp(epoch: float | None = None) -> str:
    return time.strftime(STAMP, time.gmtime(epoch))


def parse_stamp(text: str) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(text, STAMP)))
    except ValueError:
        return None


def run_tool(argv: list[str]) -> tuple[int, str, str]:
    """Run a tool (no shell); its exit code, output and errors. Not found: 127."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    except OSError as exc:
        return 127, "", f"{argv[0]}: {exc.strerror or exc}"
    return proc.returncode, proc.stdout, proc.stderr


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def read_meta(session_dir: str) -> dict[str, Any]:
    try:
        with open(os.path.join(session_dir, SNAPSHOT_META)) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_meta(session_dir: str, data: dict[str, Any]) -> None:
    path = os.path.join(session_dir, SNAPSHOT_META)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def session_time(session: str, snapshots: list[dict[str, Any]], session_dir: str) -> float:
    """When a session started: the UTC stamp its id starts with, else its oldest snapshot, else mtime."""
    parsed = parse_stamp(session.split("-", 1)[0])
    if parsed is not None:
        return parsed
    times = [float(s["time"]) for s in snapshots if s.get("time") is not None]
    if times:
        return min(times)
    try:
        return os.stat(session_dir).st_mtime
    except OSError:
        return 0.0


def _session_snapshots(session_dir: str, session: str, mounts: dict[str, Any]) -> list[dict[str, Any]]:
    """The snapshots of one session folder: subvolumes named after the session, no symlinks."""
    snapshots = []
    for name in sorted(os.listdir(session_dir)):
        match = SNAP_RE.match(name)
        path = os.path.join(session_dir, name)
        if not match or match.group("session") != session or os.path.islink(path) or not is_subvolume(path):
            continue
        snapshots.append(
            {
                "name": name,
                "path": path,
                "subvolume": match.group("sub"),
                "mount": mounts.get(match.group("sub")),
                "phase": match.group("phase"),
                "time": parse_stamp(match.group("ts")),
                "readonly": is_readonly(path),
            }
        )
    return snapshots


def scan_sessions(location: str) -> list[dict[str, Any]]:
    """The sessions under ``location``, oldest first."""
    sessions: list[dict[str, Any]] = []
    if not os.path.isdir(location):
        return sessions
    for entry in sorted(os.listdir(location)):
        session_dir = os.path.join(location, entry)
        if not SESSION_RE.match(entry) or not os.path.isdir(session_dir) or os.path.islink(session_dir):
            continue
        meta = read_meta(session_dir)
        mounts = meta.get("subvolumes")
        snapshots = _session_snapshots(session_dir, entry, mounts if isinstance(mounts, dict) else {})
        if not snapshots and not meta:
            continue  # not ours
        when = session_time(entry, snapshots, session_dir)
        sessions.append(
            {
                "id": entry,
                "path": session_dir,
                "time": when,
                "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
                "kind": meta.get("kind", "sync"),
                "rolled_back_to": meta.get("rolled_back_to"),
                "snapshots": snapshots,
            }
        )
    sessions.sort(key=lambda s: (s["time"], s["id"]))
    return sessions


def _subvolume_problems(subvolumes: list[str], host: str) -> tuple[list[str], dict[str, str]]:
    """The problems of the configured subvolumes, and the btrfs of each good one."""
    problems: list[str] = []
    names: dict[str, str] = {}
    fsids: dict[str, str] = {}
    for mount in subvolumes:
        if not os.path.isabs(mount):
            problems.append(f"subvolume {mount!r} on {host} is not an absolute path")
            continue
        if not os.path.isdir(mount):
            problems.append(
                f"subvolume {mount} does not exist on {host}: create it or fix snapshots.subvolumes"
            )
            continue
        fs = btrfs_fsid(mount)
        if fs is None:
            problems.append(
                f"{mount} on {host} is not on btrfs: list btrfs subvolumes in snapshots.subvolumes, "
                + SNAPSHOTS_OFF
            )
            continue
        if os.stat(mount).st_ino != SUBVOL_INO:
            problems.append(
                f"{mount} on {host} is a directory, not a btrfs subvolume "
                "(see `btrfs subvolume list /`): fix snapshots.subvolumes"
            )
            continue
        name = subvol_name(mount)
        if name in names:
            problems.append(
                f"subvolumes {names[name]} and {mount} on {host} get the same snapshot name {name!r}"
            )
        names[name] = mount
        fsids[mount] = fs
    return problems, fsids


def _location_problems(location: str, fsids: dict[str, str], host: str) -> list[str]:
    """The problems of the snapshot location: a directory (or not there yet, below one) of the
    subvolumes' btrfs, writable, in none of them."""
    where = f"snapshot location {location} on {host}"
    if not os.path.isabs(location):
        return [f"snapshot location {location!r} on {host} is not an absolute path"]
    anchor = existing_ancestor(location)
    if os.path.islink(anchor) or not os.path.isdir(anchor):
        kind = "a symlink" if os.path.islink(anchor) else "not a directory"
        return [f"{where}: {anchor} is {kind}: set snapshots.location to a directory"]
    loc_fs = btrfs_fsid(anchor)
    if loc_fs is None:
        return [
            f"{where} is not on btrfs: set snapshots.location to a directory on the subvolumes' btrfs, "
            + SNAPSHOTS_OFF
        ]
    problems = []
    vfs = os.statvfs(anchor)
    if vfs.f_flag & os.ST_RDONLY or not os.access(anchor, os.W_OK | os.X_OK):
        problems.append(f"{where} is not writable ({anchor})")
    anchor_dev = os.stat(anchor).st_dev
    for mount, fs in fsids.items():
        if fs != loc_fs:
            problems.append(
                f"{where} is not on the same btrfs file system as {mount}: put it on that file system"
            )
        elif os.stat(mount).st_dev == anchor_dev:
            problems.append(
                f"{where} is inside the snapshotted subvolume {mount}: "
                "use a location in another subvolume (e.g. `btrfs subvolume create` one for it)"
            )
    return problems


def snapshot_problems(subvolumes: list[str], location: str) -> list[str]:
    """Why the snapshots of ``subvolumes`` cannot be taken in ``location`` on this machine ([]: they
    can): root, btrfs-progs, each subvolume a btrfs subvolume, the location (:func:`_location_problems`).
    Changes nothing."""
    host = socket.gethostname()
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append(f"btrfs snapshots need root on {host} (connect as root or set ansible_become)")
    if shutil.which("btrfs") is None:
        problems.append(f"btrfs not found on {host}: install btrfs-progs, {SNAPSHOTS_OFF}")
    if not subvolumes:
        problems.append(f"no subvolume configured for {host}")
    found, fsids = _subvolume_problems(subvolumes, host)
    return problems + found + _location_problems(location, fsids, host)


def _open_session(location: str, session: str, subvolumes: list[str]) -> str:
    """The session's folder (made, 0700) with its session file naming the subvolumes."""
    session_dir = os.path.join(location, session)
    os.makedirs(location, mode=0o700, exist_ok=True)
    os.makedirs(session_dir, mode=0o700, exist_ok=True)
    meta = read_meta(session_dir)
    meta.setdefault("session", session)
    meta.setdefault("kind", "sync")
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    meta["host"] = socket.gethostname()
    meta.setdefault("subvolumes", {}).update({subvol_name(m): m for m in subvolumes})
    write_meta(session_dir, meta)
    return session_dir


def take_snapshots(
    subvolumes: list[str], location: str, session: str, phase: str, check: bool
) -> dict[str, Any]:
    """One read-only snapshot per subvolume for ``session`` and ``phase``; one already there is kept
    (idempotent). All or nothing: a failure deletes what this call created and raises
    :class:`SnapshotProblem`. ``check``: only name them (``would_create``)."""
    session_dir = os.path.join(location, session)
    ts = stamp()
    kept: list[str] = []
    planned: list[str] = []
    present = os.listdir(session_dir) if os.path.isdir(session_dir) else []
    for mount in subvolumes:
        prefix = f"{subvol_name(mount)}@{session}-{phase}-"
        existing = sorted(e for e in present if e.startswith(prefix) and SNAP_RE.match(e))
        if existing:
            kept.append(os.path.join(session_dir, existing[0]))
        else:
            planned.append(mount)
    paths = [os.path.join(session_dir, f"{subvol_name(m)}@{session}-{phase}-{ts}") for m in planned]
    result = {"session": session, "phase": phase, "created": [], "kept": kept, "would_create": []}
    if check or not planned:
        result["would_create"] = paths if check else []
        return result
    created: list[str] = []
    try:
        _open_session(location, session, subvolumes)
        for mount, dest in zip(planned, paths):  # noqa: B905 (Python 3.8 on a target: no strict=)
            rc, _, err = run_tool(["btrfs", "subvolume", "snapshot", "-r", mount, dest])
            if rc != 0:
                raise SnapshotProblem(
                    f"btrfs snapshot of {mount} failed: {last_line(err) or f'exit code {rc}'}"
                )
            created.append(dest)
    except (OSError, SnapshotProblem) as exc:
        for path in created:
            run_tool(["btrfs", "subvolume", "delete", path])
        raise SnapshotProblem(
            f"{phase}-sync snapshot on {socket.gethostname()} failed: {exc}; nothing was kept"
        ) from None
    result["created"] = created
    return result


def delete_session(session: dict[str, Any], check: bool) -> list[str]:
    """Delete a session's snapshots, its session file and its folder (``check``: only list them)."""
    deleted = []
    for snap in session["snapshots"]:
        if not check:
            rc, _, err = run_tool(["btrfs", "subvolume", "delete", snap["path"]])
            if rc != 0:
                raise SnapshotProblem(
                    f"cannot delete snapshot {snap['path']}: {last_line(err) or f'exit code {rc}'}"
                )
        deleted.append(snap["path"])
    if not check:
        meta = os.path.join(session["path"], SNAPSHOT_META)
        if os.path.exists(meta):
            os.unlink(meta)
        try:
            os.rmdir(session["path"])
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    return deleted


def not_ours(session: dict[str, Any], location: str) -> str:
    """Why ``session`` is not something pc-switcher made and may delete ("" when it is).

    An allowlist: a session folder directly in ``location`` (no symlink) with its session file
    naming it; each snapshot a read-only btrfs snapshot (a parent UUID) on the location's file
    system, named ``<subvol>@<session>-<phase>-<stamp>`` after a subvolume of the session file."""
    session_dir = session["path"]
    parent = os.path.dirname(os.path.realpath(session_dir))
    if os.path.islink(session_dir) or parent != os.path.realpath(location):
        return "its folder is not directly in the snapshot location"
    meta = read_meta(session_dir)
    if meta.get("session") != session["id"]:
        return f"it has no {SNAPSHOT_META} naming it"
    names = meta.get("subvolumes")
    names = names if isinstance(names, dict) else {}
    home_fs = btrfs_fsid(location)
    for snap in session["snapshots"]:
        path = snap["path"]
        if snap["subvolume"] not in names:
            return f"{snap['name']} is of no subvolume in {SNAPSHOT_META}"
        if os.path.islink(path) or not is_subvolume(path) or btrfs_fsid(path) != home_fs:
            return f"{snap['name']} is not a btrfs subvolume on the snapshot location's file system"
        if not is_readonly(path):
            return f"{snap['name']} is not read-only (changed since it was taken?)"
        origin = parent_uuid(path)
        if origin is None or not any(origin):
            return f"{snap['name']} is not a snapshot of another subvolume"
    return ""


def has_pre(session: dict[str, Any]) -> bool:
    return any(x["phase"] == "pre" for x in session["snapshots"])


def retention(
    sessions: list[dict[str, Any]], keep: int, older_than: int, current: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """The sessions to delete (oldest first) and the ids kept.

    ``current`` is the session of the sync that prunes: it counts as the newest session, with
    pre-sync snapshots, whether it is on disk yet or not (a dry run takes none). Never deleted: the
    newest session and the newest session with pre-sync snapshots (a rollback's default)."""
    newest_first = list(reversed(sessions))
    mine = next((s for s in sessions if s["id"] == current), None) if current else None
    others = [s for s in newest_first if s["id"] != current]
    protected = {current} if current else {s["id"] for s in others[:1]}
    if not current or (mine is not None and not has_pre(mine)):
        protected |= {s["id"] for s in [x for x in newest_first if has_pre(x)][:1]}
    now = time.time()
    doomed, kept = [], [current] if current else []
    for index, session in enumerate(others, start=1 if current else 0):
        too_many = index >= keep
        too_old = older_than > 0 and now - session["time"] > older_than
        if session["id"] not in protected and (too_many or too_old):
            doomed.append(session)
        else:
            kept.append(session["id"])
    doomed.reverse()
    return doomed, kept


def cleanup_sessions(location: str, keep: int, older_than: int, current: str, check: bool) -> dict[str, Any]:
    """Delete the sessions :func:`retention` dooms, only those :func:`not_ours` vouches for."""
    doomed, kept = retention(scan_sessions(location), keep, older_than, current)
    deleted: list[str] = []
    gone: list[str] = []
    skipped: list[dict[str, Any]] = []
    errors: list[str] = []
    for session in doomed:
        reason = not_ours(session, location)
        if reason:
            skipped.append({"session": session["id"], "path": session["path"], "reason": reason})
            continue
        try:
            deleted += delete_session(session, check)
        except (OSError, SnapshotProblem) as exc:
            errors.append(f"session {session['id']}: {exc}")
            continue
        gone.append(session["id"])
    return {
        "deleted_sessions": gone,
        "deleted": deleted,
        "kept_sessions": sorted(kept + [s["session"] for s in skipped]),
        "skipped": skipped,
        "errors": errors,
        "location": location,
        "check": check,
    }


def prune_sessions(location: str, keep: int, older_than: int, session: str, check: bool) -> dict[str, Any]:
    """The cleanup after a sync's post snapshots, ``session`` kept as the newest. What it cannot do
    is reported (``errors``, ``msg``), never raised: the snapshots are taken, the sync is done."""
    host = socket.gethostname()
    try:
        if keep < 1:
            raise SnapshotProblem("keep must be at least 1")
        result = cleanup_sessions(location, keep, older_than, session, check)
    except (OSError, SnapshotProblem) as exc:
        result = {"deleted_sessions": [], "deleted": [], "skipped": [], "errors": [f"{exc}"]}
    result["host"] = host
    if result["errors"]:
        result["msg"] = f"cleanup on {host} could not delete " + "; ".join(result["errors"])
    return result


def _snapshot_request(request: dict[str, Any]) -> tuple[str, list[str], str]:
    """The action, subvolumes and location of a ``snapshots`` request, or SnapshotProblem: an
    allowlist of types and values (the request crosses a pipe; nothing in it reaches a shell)."""
    action = request.get("action")
    subvolumes = request.get("subvolumes", [])
    location = request.get("location")
    if action not in ("validate", "snapshot"):
        raise SnapshotProblem(f"unknown snapshots action {action!r}")
    if not isinstance(subvolumes, list) or not all(isinstance(s, str) and s for s in subvolumes):
        raise SnapshotProblem("subvolumes must be a list of paths")
    if not isinstance(location, str) or not location:
        raise SnapshotProblem("a snapshot location is needed")
    for key, kind in (("keep", int), ("older_than", int), ("prune", bool), ("check", bool)):
        value = request.get(key)
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise SnapshotProblem(f"{key} must be {kind.__name__}, not {value!r}")
    if request.get("phase", "pre") not in ("pre", "post"):
        raise SnapshotProblem(f"phase must be pre or post, not {request.get('phase')!r}")
    session = request.get("session", "")
    if action == "snapshot" and not (isinstance(session, str) and SESSION_RE.match(session)):
        raise SnapshotProblem(f"session {session!r} is not a session id")
    return action, [os.path.normpath(s) for s in subvolumes], os.path.normpath(location)


def snapshots(request: dict[str, Any]) -> dict[str, object]:
    """A sync's snapshot action on this machine (the agents' ``snapshots`` command, pcs_btrfs's
    ``validate`` and ``snapshot``): ``validate`` -> ``problems`` (changes nothing); ``snapshot`` ->
    :func:`take_snapshots` of ``phase`` for ``session``, with ``prune`` (phase post) then
    :func:`prune_sessions` in ``pruned``. ``check``: change nothing, say what would be done.
    Returns ``{"host", ...}``, with ``"error"`` (one line) when it failed."""
    host = socket.gethostname()
    try:
        action, subvolumes, location = _snapshot_request(request)
        if action == "validate":
            return {"host": host, "changed": False, "problems": snapshot_problems(subvolumes, location)}
        if not (os.path.isabs(location) and all(os.path.isabs(s) for s in subvolumes)):
            raise SnapshotProblem("snapshot paths must be absolute")
        phase, session, check = request.get("phase", "pre"), request["session"], request.get("check") is True
        result: dict[str, object] = {
            "host": host,
            **take_snapshots(subvolumes, location, session, phase, check),
        }
        changed = bool(result["created"] or result["would_create"])
        if request.get("prune") is True and phase == "post":
            keep, older = request.get("keep", 10), request.get("older_than", 0)
            pruned = prune_sessions(location, keep, older, session, check)
            result["pruned"] = pruned
            changed = changed or bool(pruned["deleted"])
        return {**result, "changed": changed}
    except (SnapshotProblem, OSError) as exc:
        return {"host": host, "changed": False, "error": str(exc)}


# -- the carry: which pc-switcher install and config a machine has ----------------------------------
# One implementation for the carry role's module pcs_carry (hand runs, the copy of an install) and
# the driver, which reads this machine in-process and the target through its agent's ``carry``
# command during a sync. The install layout (README, `make install`)::
#
#     PREFIX/app/           the runtime tree (pcswitcher/, roles/, playbooks/, ansible.cfg, ...)
#     PREFIX/venv/          a venv of the system python3, pc-switcher installed from PREFIX/app
#     PREFIX/install.json   {"version": ..., "python": "3.11", "id": <sha256 of the app tree>}, written last
#     BINDIR/pc-switcher -> PREFIX/venv/bin/pc-switcher

INSTALL_JSON = "install.json"
VERSION_RE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)
CONFIG_NAMES = ("config.yml", "inventory.yml")
#: what PREFIX of an install may hold (the same list as `make uninstall`'s)
INSTALL_NAMES = frozenset({"app", "venv", INSTALL_JSON, ".old", ".new"})


def read_install(prefix: str) -> dict[str, str] | None:
    """The install record of PREFIX, or None when it is not a complete install."""
    path = os.path.join(prefix, INSTALL_JSON)
    if os.path.islink(path) or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    record = {key: data.get(key) for key in ("version", "python", "id")}
    if not all(isinstance(value, str) and value for value in record.values()):
        return None
    return {key: str(value) for key, value in record.items()}


def venv_home(prefix: str) -> str:
    """pyvenv.cfg's ``home`` of PREFIX/venv (the directory of the python3 it was made with)."""
    try:
        with open(os.path.join(prefix, "venv", "pyvenv.cfg"), encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition("=")
                if key.strip() == "home":
                    return value.strip()
    except OSError:
        pass
    return ""


def tree_size(root: str) -> tuple[int, int]:
    files = size = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            try:
                size += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
            files += 1
    return files, size


def source_info(app_dir: str) -> dict[str, Any]:
    """The pc-switcher this machine runs from ``app_dir`` (the dir holding pcswitcher/): ``installed``
    when PREFIX/install.json (PREFIX = parent of app_dir) is a complete install; then its ``prefix``,
    ``version``, ``id``, ``python``, ``python_home`` (pyvenv.cfg ``home``: where the venv's python3
    must be on the target), ``files``/``bytes`` (what a carry copies)."""
    app_dir = os.path.realpath(app_dir)
    prefix = os.path.dirname(app_dir)
    version = ""
    try:
        with open(os.path.join(app_dir, "pcswitcher", "__init__.py"), encoding="utf-8") as handle:
            found = VERSION_RE.search(handle.read())
            version = found.group(1) if found else ""
    except OSError:
        pass
    result: dict[str, Any] = {"app_dir": app_dir, "prefix": prefix, "version": version, "installed": False}
    record = read_install(prefix)
    if record is None or os.path.basename(app_dir) != "app":
        return result
    files, size = tree_size(prefix)
    result.update(record)
    result.update(installed=True, python_home=venv_home(prefix), files=files, bytes=size)
    return result


def python_minor(home: str) -> str:
    """major.minor of HOME/python3, "" when there is none that runs."""
    if not home or not os.path.isabs(home):
        return ""
    exe = os.path.join(home, "python3")
    if not os.access(exe, os.X_OK):
        return ""
    try:
        out = subprocess.run(
            [exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.decode("ascii", "replace").strip()


def prefix_state(prefix: str) -> tuple[str, dict[str, str] | None]:
    """What PREFIX on this machine is: absent, install, incomplete, symlink or foreign."""
    if os.path.islink(prefix):
        return "symlink", None
    if not os.path.lexists(prefix):
        return "absent", None
    if not os.path.isdir(prefix):
        return "foreign", None
    record = read_install(prefix)
    if record is not None:
        return "install", record
    # a carry or `make install` that was interrupted: our layout without its last file (.old, .new
    # and .install.* are make install's own, while it works)
    names = {n for n in os.listdir(prefix) if not n.startswith(".install.")}
    if names and names <= INSTALL_NAMES and os.path.isdir(os.path.join(prefix, "app", "pcswitcher")):
        return "incomplete", None
    return ("absent", None) if not os.listdir(prefix) else ("foreign", None)


def link_state(link: str) -> tuple[str, dict[str, str] | None, str]:
    """What BINDIR/pc-switcher is: absent, a symlink into a pc-switcher install, or something else."""
    if not os.path.lexists(link):
        return "absent", None, ""
    if not os.path.islink(link):
        return "foreign", None, ""
    dest = os.path.realpath(link)
    # PREFIX/venv/bin/pc-switcher (the venv's script, not followed further)
    raw = os.readlink(link)
    raw = os.path.normpath(raw if os.path.isabs(raw) else os.path.join(os.path.dirname(link), raw))
    parts = raw.split(os.sep)
    if parts[-3:] == ["venv", "bin", "pc-switcher"]:
        prefix = os.sep.join(parts[:-3]) or os.sep
        record = read_install(prefix)
        if record is not None:
            return "install", record, prefix
    return "foreign", None, dest


def config_dir() -> str:
    """The login user's pc-switcher config dir: $XDG_CONFIG_HOME/pc-switcher or ~/.config/pc-switcher."""
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "pc-switcher")


def file_sha256(path: str) -> str:
    """The sha256 of a regular file ("" when it is none or unreadable)."""
    if not os.path.isfile(path):
        return ""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 16), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def target_info(prefix: str, link: str, home: str) -> dict[str, Any]:
    """What the target has: ``prefix_state`` with the ``install`` record, ``link_state`` with
    ``link_install``, ``python`` (major.minor of HOME/python3), ``config_dir`` and ``config_files``
    (the sha256 of config.yml and inventory.yml there, "" when absent). Read-only."""
    state, record = prefix_state(prefix) if prefix else ("absent", None)
    lstate, lrecord, lprefix = link_state(link)
    cdir = config_dir()
    return {
        "prefix": prefix,
        "prefix_state": state,
        "install": record or {},
        "link": link,
        "link_state": lstate,
        "link_install": lrecord or {},
        "link_prefix": lprefix,
        "python": python_minor(home),
        "config_dir": cdir,
        "config_dir_exists": os.path.isdir(cdir),
        "config_files": {name: file_sha256(os.path.join(cdir, name)) for name in CONFIG_NAMES},
    }


def _write_private_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (a temp file beside it, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=".pcswitcher-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_files(folder: str, files: list[dict[str, str]], check: bool) -> tuple[list[str], list[str]]:
    """Write each of ``files`` (``name``: config.yml or inventory.yml, ``content``) whose content
    differs into ``folder`` (0600, atomically; the folder made 0700), the previous one kept as
    NAME.bak; ``check``: write nothing. The names written and backed up; ValueError names a problem."""
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise ValueError(f"{folder} is not a directory: move it away so that the config can be written")
    written, backups = [], []
    for item in files:
        name, data = item["name"], item["content"].encode("utf-8")
        if name not in CONFIG_NAMES:
            raise ValueError(f"{name!r} is not a file pc-switcher writes ({', '.join(CONFIG_NAMES)})")
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            raise ValueError(f"{path} is a directory: move it away so that the {name} can be written")
        if os.path.isfile(path) and file_sha256(path) == hashlib.sha256(data).hexdigest():
            continue
        written.append(name)
        had = os.path.isfile(path)
        if had:
            backups.append(name)
        if check:
            continue
        if not os.path.isdir(folder):
            os.makedirs(folder, mode=0o700)
        if had:
            with open(path, "rb") as handle:
                _write_private_file(path + ".bak", handle.read())
        _write_private_file(path, data)
    return written, backups


def carry(request: dict[str, Any]) -> dict[str, Any]:
    """The target's part of a carry (the agents' ``carry`` command, pcs_carry's ``target`` and
    ``write``): ``target`` -> :func:`target_info` of ``prefix``, ``link`` and ``python_home``
    (absolute paths or ""); ``write`` -> :func:`write_files` of ``files`` into ``config_dir``
    (``check``: write nothing) -> ``written``, ``backups``. ``"error"`` (one line) when it failed."""
    action = request.get("action")
    try:
        if action == "target":
            paths = [request.get(key, "") for key in ("prefix", "link", "python_home")]
            for key, value in zip(("prefix", "link", "python_home"), paths):  # noqa: B905 (Python 3.8)
                if not isinstance(value, str) or (value and not os.path.isabs(value)):
                    return {"error": f"{key} must be an absolute path, not {value!r}"}
            return target_info(*paths)
        if action == "write":
            folder, files = request.get("config_dir"), request.get("files")
            if not isinstance(folder, str) or not os.path.isabs(folder):
                return {"error": f"config_dir must be an absolute path, not {folder!r}"}
            if not isinstance(files, list) or not all(
                isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("content"), str)
                for f in files
            ):
                return {"error": "files must be a list of {name, content} texts"}
            written, backups = write_files(folder, files, request.get("check") is True)
            return {"changed": bool(written), "written": written, "backups": backups}
    except (OSError, ValueError) as exc:
        return {"error": f"writing the config to {request.get('config_dir')} failed: {exc}"}
    return {"error": f"unknown carry action {action!r}"}


class _ProgressTail:
    """Follows the run's progress file (JSON lines appended by long-running tasks)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def read(self) -> list[object]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(1 << 20)
        except OSError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        out: list[object] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"message": line.decode(errors="replace"), "level": "INFO"})
        return out


_EMIT_LOCK = threading.Lock()


def _emit(obj: dict[str, object]) -> None:
    with _EMIT_LOCK:  # the flush thread answers too
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def _in_thread(running: list[threading.Thread], name: str, work: object) -> None:
    """Run ``work`` (it emits its own reply) in a thread, so that the agent goes on answering pings
    meanwhile: a flush can take minutes (gigabytes onto a slow disk), a snapshot waits for btrfs's
    transaction commit. One at a time: while one runs, the next is refused with a ``busy`` reply."""
    if any(t.is_alive() for t in running):
        _emit({"t": "busy", "command": name})
        return
    thread = threading.Thread(target=work, name=name, daemon=True)  # type: ignore[arg-type]
    running[:] = [thread]
    thread.start()


def _flush() -> None:
    started = time.monotonic()
    mounts = flush_local_filesystems()
    _emit({"t": "flushed", "mounts": mounts, "seconds": round(time.monotonic() - started, 3)})


def _snapshots_command(line: str) -> object:
    """``snapshots JSON`` (the request of :func:`snapshots`) -> the work that answers it."""
    try:
        request = json.loads(line.split(None, 1)[1])
        if not isinstance(request, dict):
            raise ValueError("not a JSON object")
    except (IndexError, ValueError) as exc:
        reply: dict[str, object] = {"t": "snapshots", "error": f"bad snapshots command: {exc}"}
        return lambda: _emit(reply)

    def work() -> None:
        started = time.monotonic()
        result = snapshots(request)
        _emit({"t": "snapshots", **result, "seconds": round(time.monotonic() - started, 3)})

    return work


class _Signals:
    """SIGINT, SIGTERM and SIGHUP end the session the way EOF does. The handler only notes the
    signal: raising from it could end the session's sweep half-way (a driver that dies sends EOF and
    the parent-death signal at once, and the signal may land when the sweep has just begun). The
    command loop's ``select`` wakes at once through the wakeup pipe."""

    def __init__(self) -> None:
        self.caught = False
        self.wake, write = os.pipe()
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write)
        _on_signals(self._note)

    def _note(self, signum: int, frame: object) -> None:
        self.caught = True


def _history_command(line: str) -> dict[str, object]:
    """``history {"action": ..., "path": ..., "role": ..., "peer": ..., "session": ..., "flushed": ...}``"""
    try:
        request = json.loads(line.split(None, 1)[1])
        return history(
            str(request["action"]),
            os.path.expanduser(str(request["path"])),
            role=str(request.get("role", "")),
            peer=str(request.get("peer", "")),
            session=str(request.get("session", "")),
            flushed=request.get("flushed") is True,
        )
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        return {"error": f"bad history command: {exc}"}


def _json_command(line: str, work: Any) -> dict[str, Any]:
    """``COMMAND JSON`` -> ``work(request)``; a request that is no JSON object is an ``error``."""
    try:
        request = json.loads(line.split(None, 1)[1])
    except (IndexError, ValueError) as exc:
        return {"error": f"bad {line.split(maxsplit=1)[0]} command: {exc}"}
    if not isinstance(request, dict):
        return {"error": f"bad {line.split(maxsplit=1)[0]} command: not a JSON object"}
    result: dict[str, Any] = work(request)
    return result


def _take_target_lock(lock: str, run_id: str, peer: str) -> tuple[int | None, list[str]]:
    """This machine's sync lock for the session, as the target of ``peer``: its fd (None, after a
    ``locked`` message naming the holder, when another sync has it) and the directories made for it
    (removed again at the end: a dry-run leaves no trace, docs/safety.md)."""
    made = missing_dirs(os.path.dirname(lock))
    lock_fd, holder = try_lock(lock)
    if lock_fd is None:
        _emit({"t": "locked", "host": socket.gethostname(), "path": lock, "holder": holder})
        return None, made
    write_holder(
        lock_fd,
        {
            "role": "target",
            "source": peer,
            "run_id": run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    return lock_fd, made


def _answer_ping(command: str, tail: _ProgressTail, paths: list[str]) -> None:
    """``ping`` -> the heartbeat with the disk figures; ``drain`` -> ``drained``. Either comes after
    every progress line written before the command (the driver's barrier before a job's result)."""
    for line in tail.read():
        _emit({"t": "progress", "line": line})
    if command == "ping":
        _emit({"t": "hb", "time": time.time(), "disk": disk_figures(paths)})
    else:
        _emit({"t": "drained"})


def _on_signals(handler: object) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)  # type: ignore[arg-type]


class _Server:
    """The commands of one monitor session, read from stdin (the module docstring lists them)."""

    def __init__(
        self, run_id: str, paths: list[str], timeout: float, tail: _ProgressTail, signals: _Signals
    ) -> None:
        self.signals = signals
        self.run_id = run_id
        self.paths = paths
        self.timeout = timeout
        self.tail = tail
        self.jids: list[str] = []
        self.working: list[threading.Thread] = []  # a flush or snapshots (_in_thread)

    def serve(self) -> None:
        """Answer commands until quit, EOF (the driver is gone), a signal or ``timeout`` s without one."""
        last_command = time.monotonic()
        buffer = b""
        stdin = sys.stdin.fileno()
        while not self.signals.caught:
            for line in self.tail.read():
                _emit({"t": "progress", "line": line})
            ready, _, _ = select.select([stdin, self.signals.wake], [], [], 0.2)
            if self.signals.caught:
                return
            if not ready:
                if time.monotonic() - last_command > self.timeout:
                    _emit({"t": "timeout"})
                    return
                continue
            chunk = os.read(stdin, 65536)
            if not chunk:
                return
            last_command = time.monotonic()
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                if not self.answer(raw.decode(errors="replace")):
                    return

    def answer(self, line: str) -> bool:
        """Answer one command line; False on ``quit``."""
        words = line.split()
        if not words:
            return True
        if words[0] in ("ping", "drain"):
            _answer_ping(words[0], self.tail, self.paths)
        elif words[0] == "sweep":
            self.jids.extend(w for w in words[1:] if w not in self.jids)
            _emit(sweep(self.run_id, self.jids))
        elif words[0] == "history":
            _emit({"t": "history", **_history_command(line)})
        elif words[0] == "flush":
            _in_thread(self.working, "flush", _flush)
        elif words[0] == "carry":
            _emit({"t": "carry", **_json_command(line, carry)})
        elif words[0] == "snapshots":
            _in_thread(self.working, "snapshots", _snapshots_command(line))
        return words[0] != "quit"


def monitor(run_id: str, paths: list[str], timeout: float, lock: str | None = None, peer: str = "") -> int:
    """Serve the driver until quit, EOF or silence; always sweep the run on the way out.

    With ``lock``, hold this machine's sync lock for the session (the target lock): exit 3 with a
    ``locked`` message naming the holder when another sync has it.
    """
    signals = _Signals()
    os.environ[TAG] = run_id  # what it starts (btrfs, sync) is the run's: a sweep ends it
    lock_fd, made = _take_target_lock(lock, run_id, peer) if lock else (None, [])
    if lock and lock_fd is None:
        return 3
    # holding the machine's lock, no other run of it is alive: what a killed run left goes now
    stale = remove_stale_run_dirs(run_id) if lock_fd is not None else []
    directory = run_dir(run_id)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    server = _Server(
        run_id, paths, timeout, _ProgressTail(os.path.join(directory, "progress.jsonl")), signals
    )
    _emit(
        {"t": "hello", "pid": os.getpid(), "host": socket.gethostname(), "run_dir": directory, "stale": stale}
    )
    try:
        server.serve()
    except (BrokenPipeError, OSError):
        pass
    finally:
        # quit, EOF, a signal or silence: the run is over on this machine either way (a driver that
        # died or lost its link has aborted); leave none of its processes and none of its files. No
        # signal interrupts this (_Signals only notes them; it is bounded: see sweep()).
        _on_signals(signal.SIG_IGN)
        report = sweep(run_id, server.jids)
        report["removed"] = remove_run_files(run_id, server.jids)
        if lock_fd is not None:
            unlock(lock_fd, lock)  # type: ignore[arg-type]
            remove_empty_dirs(made)
        with contextlib.suppress(OSError):
            _emit({**report, "t": "bye"})
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pcswitcher_agent", description="pc-switcher agent")
    sub = parser.add_subparsers(dest="command", required=True)
    p_sweep = sub.add_parser("sweep", help="kill every process of a run, now")
    p_sweep.add_argument("--run", required=True)
    p_sweep.add_argument("--jid", action="append", default=[])
    p_sweep.add_argument("--remove", action="store_true", help="also remove the run's files")
    p_sweep.add_argument("--check", action="store_true", help="only list what would be killed")
    p_mon = sub.add_parser("monitor", help="serve the driver (heartbeat, disk, progress, dead-man)")
    p_mon.add_argument("--run", required=True)
    p_mon.add_argument("--timeout", type=float, default=5.0)
    p_mon.add_argument("--path", action="append", default=[])
    p_mon.add_argument(
        "--lock", metavar="SOURCE", help="hold this machine's sync lock as the target of SOURCE (a host name)"
    )
    p_disk = sub.add_parser("disk", help="free space of the filesystem of each path (see disk_figure)")
    p_disk.add_argument("paths", nargs="*", metavar="PATH")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "disk":
        _emit({"t": "disk", "disk": [disk_figure(path) for path in args.paths]})
        return 0
    if not RUN_ID_RE.match(args.run):
        parser.error(f"invalid run id {args.run!r}")
    if args.command == "monitor":
        lock = default_lock_path() if args.lock else None
        return monitor(args.run, args.path or ["/"], args.timeout, lock, args.lock or "")
    if args.check:
        found = find_run_processes(args.run, args.jid)
        report: dict[str, object] = {
            "t": "check",
            "would_kill": [{"pid": p, "cmd": c} for p, c in found.items()],
        }
    else:
        report = sweep(args.run, args.jid)
        if args.remove:
            report["removed"] = remove_run_files(args.run, args.jid)
    _emit(report)
    return 0


if __name__ == "__main__":
    ARGS = sys.argv[1:]
    sys.exit(main(ARGS[1:] if ARGS[:1] == [AGENT_NAME] else ARGS))
