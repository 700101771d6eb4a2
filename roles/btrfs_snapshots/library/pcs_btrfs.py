#!/usr/bin/python
"""Ansible module of the role btrfs_snapshots: read-only btrfs snapshots grouped per session.

Layout on a machine (see docs/safety.md)::

    <location>/<session>/<subvol>@<session>-<phase>-<UTC timestamp>   read-only snapshots
    <location>/<session>/pc-switcher-session.json                     which mount each snapshot is of

``phase`` is ``pre``, ``post`` or ``rollback-replaced``. Actions:

validate   every subvolume exists and is a btrfs subvolume; the location (or its nearest existing
           parent) is on the same file system, writable, and not inside a snapshotted subvolume.
           Changes nothing; returns ``problems`` (the role fails on them, both machines at once).
snapshot   one read-only snapshot per subvolume (idempotent: an existing one for the session and
           phase is kept). All or nothing: a failure deletes what this call created. With
           ``prune`` (phase post) then the cleanup below, this session kept as the newest; what it
           cannot delete is reported in ``pruned`` (``msg``), not a failure.
list       the sessions and their snapshots.
cleanup    deletes whole sessions: those beyond the newest ``keep`` and those older than
           ``older_than`` seconds — never the newest session, never the newest session with
           pre-sync snapshots (a rollback's default), never ``session`` (the session of the sync
           that prunes: it counts as the newest, taken or not). Only what this module made is
           deleted (:func:`not_ours`); anything else in a doomed session is left and reported.
rollback   under the target lock: snapshots every subvolume of a session as it is now
           (``rollback-replaced``, new session), then copies the session's pre-sync snapshot back
           into the live subvolume with rsync (the mount stays; see docs/safety.md).

Check mode changes nothing and reports what would be done. Standard library + ansible only.
"""

from __future__ import annotations

import calendar
import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: pcs_btrfs
short_description: pc-switcher's btrfs session snapshots (validate, snapshot, list, cleanup, rollback)
description: See the module docstring and docs/safety.md.
options:
  action: {type: str, required: true, choices: [validate, snapshot, list, cleanup, rollback]}
  subvolumes: {type: list, elements: str, default: []}
  location: {type: path, required: true}
  session: {type: str, default: ""}
  phase: {type: str, default: pre, choices: [pre, post]}
  keep: {type: int, default: 10}
  older_than: {type: int, default: 0}
  rollback_session: {type: str, default: ""}
  lock_path: {type: path, default: ""}
  checksum: {type: bool, default: true}
  exclude: {type: list, elements: path, default: []}
  prune: {type: bool, default: false, description: "snapshot, phase post: then apply keep/older_than (see prune())"}
"""

BTRFS_IOC_FS_INFO = 0x8400941F  # _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args[1024])
BTRFS_IOC_SUBVOL_GETFLAGS = 0x80089419  # _IOR(0x94, 25, __u64)
BTRFS_IOC_GET_SUBVOL_INFO = 0x81F8943C  # _IOR(0x94, 60, struct btrfs_ioctl_get_subvol_info_args), 504 bytes
SUBVOL_INFO_SIZE = 504
PARENT_UUID = slice(8 + 256 + 8 * 4 + 16, 8 + 256 + 8 * 4 + 32)  # after treeid, name, 4 u64, uuid
BTRFS_SUBVOL_RDONLY = 1 << 1
SUBVOL_INO = 256  # the root directory of every btrfs subvolume
META = "pc-switcher-session.json"
SESSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SNAP_RE = re.compile(
    r"^(?P<sub>[A-Za-z0-9._-]+)@(?P<session>[A-Za-z0-9][A-Za-z0-9_.-]*)-"
    r"(?P<phase>pre|post|rollback-replaced)-(?P<ts>\d{8}T\d{6}Z)$"
)
STAMP = "%Y%m%dT%H%M%SZ"


class Problem(Exception):
    """A one-line reason the action cannot be done (becomes the task's msg)."""


class Locked(Problem):
    """The target's lock is held (a sync runs)."""


# -- btrfs facts ---------------------------------------------------------------------------------


def fsid(path: str) -> str | None:
    """The btrfs file system UUID of ``path`` (hex), or None when it is not on btrfs."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        buf = bytearray(1024)
        fcntl.ioctl(fd, BTRFS_IOC_FS_INFO, buf)
        return bytes(buf[16:32]).hex()
    except OSError:
        return None
    finally:
        os.close(fd)


def is_subvolume(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_ino == SUBVOL_INO and fsid(path) is not None


def is_readonly(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, buf)
        return bool(int.from_bytes(bytes(buf), "little") & BTRFS_SUBVOL_RDONLY)
    except OSError:
        return False
    finally:
        os.close(fd)


def parent_uuid(path: str) -> bytes | None:
    """The UUID of the subvolume ``path`` was snapshotted from (all zeros: not a snapshot), or None
    when the kernel cannot tell (not a subvolume, ioctl missing)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        buf = bytearray(SUBVOL_INFO_SIZE)
        fcntl.ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, buf)
        return bytes(buf[PARENT_UUID])
    except OSError:
        return None
    finally:
        os.close(fd)


def existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
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


def run(argv: list[str]) -> tuple[int, str, str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- sessions on disk ----------------------------------------------------------------------------


def read_meta(session_dir: str) -> dict:
    try:
        with open(os.path.join(session_dir, META)) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_meta(session_dir: str, data: dict) -> None:
    path = os.path.join(session_dir, META)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def session_time(session: str, snapshots: list[dict], session_dir: str) -> float:
    """When a session started: the UTC stamp its id starts with, else its oldest snapshot, else mtime."""
    head = session.split("-", 1)[0]
    parsed = parse_stamp(head)
    if parsed is not None:
        return parsed
    times = [s["time"] for s in snapshots if s.get("time") is not None]
    if times:
        return min(times)
    try:
        return os.stat(session_dir).st_mtime
    except OSError:
        return 0.0


def scan(location: str) -> list[dict]:
    """The sessions under ``location``, oldest first."""
    sessions: list[dict] = []
    if not os.path.isdir(location):
        return sessions
    for entry in sorted(os.listdir(location)):
        session_dir = os.path.join(location, entry)
        if not SESSION_RE.match(entry) or not os.path.isdir(session_dir) or os.path.islink(session_dir):
            continue
        meta = read_meta(session_dir)
        mounts = meta.get("subvolumes") if isinstance(meta.get("subvolumes"), dict) else {}
        snapshots = []
        for name in sorted(os.listdir(session_dir)):
            match = SNAP_RE.match(name)
            path = os.path.join(session_dir, name)
            if not match or match.group("session") != entry or os.path.islink(path) or not is_subvolume(path):
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


# -- actions -------------------------------------------------------------------------------------


# the fix named by every problem that means "this machine has no btrfs to snapshot"
OFF = "or set snapshots.enabled: false (no snapshots, no rollback)"


def validate(subvolumes: list[str], location: str) -> list[str]:
    host = socket.gethostname()
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append(f"btrfs snapshots need root on {host} (connect as root or set ansible_become)")
    if shutil.which("btrfs") is None:
        problems.append(f"btrfs not found on {host}: install btrfs-progs, {OFF}")
    if not subvolumes:
        problems.append(f"no subvolume configured for {host}")
    names: dict[str, str] = {}
    fsids: dict[str, str] = {}
    for mount in subvolumes:
        if not os.path.isabs(mount):
            problems.append(f"subvolume {mount!r} on {host} is not an absolute path")
            continue
        if not os.path.isdir(mount):
            problems.append(f"subvolume {mount} does not exist on {host}: create it or fix snapshots.subvolumes")
            continue
        fs = fsid(mount)
        if fs is None:
            problems.append(f"{mount} on {host} is not on btrfs: list btrfs subvolumes in snapshots.subvolumes, {OFF}")
            continue
        if os.stat(mount).st_ino != SUBVOL_INO:
            problems.append(
                f"{mount} on {host} is a directory, not a btrfs subvolume "
                "(see `btrfs subvolume list /`): fix snapshots.subvolumes"
            )
            continue
        name = subvol_name(mount)
        if name in names:
            problems.append(f"subvolumes {names[name]} and {mount} on {host} get the same snapshot name {name!r}")
        names[name] = mount
        fsids[mount] = fs
    if not os.path.isabs(location):
        problems.append(f"snapshot location {location!r} on {host} is not an absolute path")
        return problems
    anchor = existing_ancestor(location)
    if not os.path.isdir(anchor):
        problems.append(f"snapshot location {location} on {host}: {anchor} is not a directory")
        return problems
    loc_fs = fsid(anchor)
    if loc_fs is None:
        problems.append(
            f"snapshot location {location} on {host} is not on btrfs: set snapshots.location to a directory "
            f"on the subvolumes' btrfs, {OFF}"
        )
        return problems
    vfs = os.statvfs(anchor)
    if vfs.f_flag & os.ST_RDONLY or not os.access(anchor, os.W_OK | os.X_OK):
        problems.append(f"snapshot location {location} on {host} is not writable ({anchor})")
    anchor_dev = os.stat(anchor).st_dev
    for mount, fs in fsids.items():
        if fs != loc_fs:
            problems.append(
                f"snapshot location {location} on {host} is not on the same btrfs file system as {mount}: "
                "put it on that file system"
            )
        elif os.stat(mount).st_dev == anchor_dev:
            problems.append(
                f"snapshot location {location} on {host} is inside the snapshotted subvolume {mount}: "
                "use a location in another subvolume (e.g. `btrfs subvolume create` one for it)"
            )
    return problems


def snapshot(module: AnsibleModule, subvolumes: list[str], location: str, session: str, phase: str) -> dict:
    session_dir = os.path.join(location, session)
    ts = stamp()
    created: list[str] = []
    kept: list[str] = []
    planned: list[str] = []
    for mount in subvolumes:
        name = subvol_name(mount)
        prefix = f"{name}@{session}-{phase}-"
        existing = (
            [e for e in os.listdir(session_dir) if e.startswith(prefix) and SNAP_RE.match(e)]
            if os.path.isdir(session_dir)
            else []
        )
        if existing:
            kept.append(os.path.join(session_dir, sorted(existing)[0]))
        else:
            planned.append(mount)
    result = {"session": session, "phase": phase, "created": created, "kept": kept, "would_create": []}
    if module.check_mode:
        result["would_create"] = [
            os.path.join(session_dir, f"{subvol_name(m)}@{session}-{phase}-{ts}") for m in planned
        ]
        return result
    if not planned:
        return result
    try:
        os.makedirs(location, mode=0o700, exist_ok=True)
        os.makedirs(session_dir, mode=0o700, exist_ok=True)
        meta = read_meta(session_dir)
        meta.setdefault("session", session)
        meta.setdefault("kind", "sync")
        meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        meta["host"] = socket.gethostname()
        meta.setdefault("subvolumes", {}).update({subvol_name(m): m for m in subvolumes})
        write_meta(session_dir, meta)
        for mount in planned:
            dest = os.path.join(session_dir, f"{subvol_name(mount)}@{session}-{phase}-{ts}")
            rc, _, err = run(["btrfs", "subvolume", "snapshot", "-r", mount, dest])
            if rc != 0:
                raise Problem(f"btrfs snapshot of {mount} failed: {last_line(err) or f'exit code {rc}'}")
            created.append(dest)
    except (OSError, Problem) as exc:
        for path in created:
            run(["btrfs", "subvolume", "delete", path])
        del created[:]
        raise Problem(
            f"{phase}-sync snapshot on {socket.gethostname()} failed: {exc}; nothing was kept"
        ) from None
    return result


def delete_session(module: AnsibleModule, session: dict) -> list[str]:
    deleted = []
    for snap in session["snapshots"]:
        if not module.check_mode:
            rc, _, err = run(["btrfs", "subvolume", "delete", snap["path"]])
            if rc != 0:
                raise Problem(f"cannot delete snapshot {snap['path']}: {last_line(err) or f'exit code {rc}'}")
        deleted.append(snap["path"])
    if not module.check_mode:
        meta = os.path.join(session["path"], META)
        if os.path.exists(meta):
            os.unlink(meta)
        try:
            os.rmdir(session["path"])
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    return deleted


def not_ours(session: dict, location: str) -> str:
    """Why ``session`` is not something this module made and may delete ("" when it is).

    An allowlist: a session folder directly in ``location`` (no symlink) with its session file
    naming it; each snapshot a read-only btrfs snapshot (a parent UUID) on the location's file
    system, named ``<subvol>@<session>-<phase>-<stamp>`` after a subvolume of the session file."""
    session_dir = session["path"]
    parent = os.path.dirname(os.path.realpath(session_dir))
    if os.path.islink(session_dir) or parent != os.path.realpath(location):
        return "its folder is not directly in the snapshot location"
    meta = read_meta(session_dir)
    if meta.get("session") != session["id"]:
        return f"it has no {META} naming it"
    names = meta.get("subvolumes") if isinstance(meta.get("subvolumes"), dict) else {}
    home_fs = fsid(location)
    for snap in session["snapshots"]:
        path = snap["path"]
        if snap["subvolume"] not in names:
            return f"{snap['name']} is of no subvolume in {META}"
        if os.path.islink(path) or not is_subvolume(path) or fsid(path) != home_fs:
            return f"{snap['name']} is not a btrfs subvolume on the snapshot location's file system"
        if not is_readonly(path):
            return f"{snap['name']} is not read-only (changed since it was taken?)"
        origin = parent_uuid(path)
        if origin is None or not any(origin):
            return f"{snap['name']} is not a snapshot of another subvolume"
    return ""


def has_pre(session: dict) -> bool:
    return any(x["phase"] == "pre" for x in session["snapshots"])


def retention(sessions: list[dict], keep: int, older_than: int, current: str) -> tuple[list[dict], list[str]]:
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


def cleanup(module: AnsibleModule, location: str, keep: int, older_than: int, current: str) -> dict:
    doomed, kept = retention(scan(location), keep, older_than, current)
    deleted: list[str] = []
    gone: list[str] = []
    skipped: list[dict] = []
    errors: list[str] = []
    for session in doomed:
        reason = not_ours(session, location)
        if reason:
            skipped.append({"session": session["id"], "path": session["path"], "reason": reason})
            continue
        try:
            deleted += delete_session(module, session)
        except (OSError, Problem) as exc:
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
        "check": module.check_mode,
    }


def prune(module: AnsibleModule, location: str, keep: int, older_than: int, session: str) -> dict:
    """The cleanup after a sync's post snapshots, ``session`` kept as the newest. What it cannot do
    is reported (``errors``, ``msg``), never raised: the snapshots are taken, the sync is done."""
    host = socket.gethostname()
    try:
        if keep < 1:
            raise Problem("keep must be at least 1")
        result = cleanup(module, location, keep, older_than, session)
    except (OSError, Problem) as exc:
        result = {"deleted_sessions": [], "deleted": [], "skipped": [], "errors": [f"{exc}"]}
    result["host"] = host
    if result["errors"]:
        result["msg"] = f"cleanup on {host} could not delete " + "; ".join(result["errors"])
    return result


class TargetLock:
    """The target's lock (an flock; a sync holds it for its whole run). Held for the rollback."""

    def __init__(self, path: str, check: bool) -> None:
        self.path = path
        self.check = check
        self.fd: int | None = None

    def acquire(self, session: str) -> None:
        if not self.path:
            return
        if self.check and not os.path.exists(self.path):
            return  # nobody holds it, and a dry run creates nothing
        if not self.check:
            os.makedirs(os.path.dirname(self.path) or "/", mode=0o755, exist_ok=True)
        flags = os.O_RDONLY if self.check else os.O_RDWR | os.O_CREAT
        self.fd = os.open(self.path, flags | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder()
            os.close(self.fd)
            self.fd = None
            raise Locked(
                f"the target's lock {self.path} is held{holder}: a sync is running on "
                f"{socket.gethostname()}"
            ) from None
        if not self.check:
            info = {"pid": os.getpid(), "what": "rollback", "run_id": session, "started": stamp()}
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, json.dumps(info).encode(), 0)

    def holder(self) -> str:
        try:
            with open(self.path) as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return ""
        if not isinstance(data, dict):
            return ""
        parts = [f"{k} {data[k]}" for k in ("pid", "source", "run_id", "started") if data.get(k) is not None]
        return f" ({', '.join(parts)})" if parts else ""

    def release(self) -> None:
        if self.fd is not None:
            if not self.check:  # like every holder of this lock: remove the file, then unlock
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def nested_mounts() -> list[str]:
    """Every mount point of this mount namespace (rsync must neither delete under them nor set
    the attributes of the file system mounted there)."""
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            mnt = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if mnt != "/":
                found.append(mnt)
    return found


def rsync_argv(source: str, dest: str, mount: str, exclude: list[str], checksum: bool, dry: bool) -> list[str]:
    argv = ["rsync", "-aHAX", "--numeric-ids", "--delete", "--force", "--one-file-system", "--itemize-changes"]
    if checksum:
        argv.append("--checksum")
    if dry:
        argv.append("--dry-run")
    root = os.path.normpath(mount)
    for path in exclude:
        path = os.path.normpath(path)
        if path != root and path.startswith(root.rstrip("/") + "/"):
            argv.append("--exclude=/" + os.path.relpath(path, root))
    return [*argv, source.rstrip("/") + "/", root.rstrip("/") + "/"]


def rollback(
    module: AnsibleModule,
    subvolumes: list[str],
    location: str,
    wanted: str,
    new_session: str,
    lock_path: str,
    exclude: list[str],
    checksum: bool,
) -> dict:
    check = module.check_mode
    if shutil.which("rsync") is None:
        raise Problem(f"rsync not found on {socket.gethostname()}: install it")
    lock = TargetLock(lock_path, check)
    lock.acquire(new_session)
    try:
        sessions = scan(location)
        if wanted:
            chosen = next((s for s in sessions if s["id"] == wanted), None)
            if chosen is None:
                known = ", ".join(s["id"] for s in sessions[-5:]) or "none"
                raise Problem(f"no session {wanted} in {location} (newest: {known}); see `pc-switcher snapshots list`")
        else:
            with_pre = [s for s in sessions if any(x["phase"] == "pre" for x in s["snapshots"])]
            if not with_pre:
                raise Problem(f"no pre-sync snapshot in {location} on {socket.gethostname()}: nothing to roll back to")
            chosen = with_pre[-1]
        phase = "pre" if any(x["phase"] == "pre" for x in chosen["snapshots"]) else "rollback-replaced"
        sources = [x for x in chosen["snapshots"] if x["phase"] == phase]
        if not sources:
            raise Problem(f"session {chosen['id']} has no snapshot to roll back to")
        by_name = {subvol_name(m): m for m in subvolumes}
        items = []
        for snap in sources:
            mount = snap["mount"] or by_name.get(snap["subvolume"])
            if not mount:
                raise Problem(f"which mount is snapshot {snap['name']} of? its session file is gone")
            if not is_subvolume(mount):
                raise Problem(f"{mount} is not a btrfs subvolume on {socket.gethostname()} any more")
            items.append(
                {
                    "subvolume": snap["subvolume"],
                    "mount": mount,
                    "snapshot": snap["path"],
                    "replaced": os.path.join(
                        location, new_session, f"{snap['subvolume']}@{new_session}-rollback-replaced-{stamp()}"
                    ),
                }
            )
        excluded = [*exclude, location, *nested_mounts()] + ([lock_path] if lock_path else [])
        result = {
            "session": chosen["id"],
            "phase": phase,
            "new_session": new_session,
            "items": items,
            "check": check,
        }
        # what would change, per subvolume (also the preview of a dry run)
        for item in items:
            argv = rsync_argv(item["snapshot"], item["mount"], item["mount"], excluded, checksum, dry=True)
            rc, out, err = run(argv)
            if rc != 0:
                raise Problem(f"rsync preview of {item['mount']} failed: {last_line(err) or f'exit code {rc}'}")
            item["changes"] = len([line for line in out.splitlines() if line.strip()])
        if check:
            return result
        # 1. keep the state being replaced: a read-only snapshot of every subvolume, all or nothing
        session_dir = os.path.join(location, new_session)
        os.makedirs(session_dir, mode=0o700, exist_ok=True)
        write_meta(
            session_dir,
            {
                "session": new_session,
                "kind": "rollback",
                "rolled_back_to": chosen["id"],
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "host": socket.gethostname(),
                "subvolumes": {i["subvolume"]: i["mount"] for i in items},
            },
        )
        made: list[str] = []
        for item in items:
            rc, _, err = run(["btrfs", "subvolume", "snapshot", "-r", item["mount"], item["replaced"]])
            if rc != 0:
                for path in made:
                    run(["btrfs", "subvolume", "delete", path])
                raise Problem(
                    f"cannot keep the current state of {item['mount']}: {last_line(err) or f'exit code {rc}'}; "
                    "nothing was rolled back"
                )
            made.append(item["replaced"])
        # 2. copy the snapshot back into the live subvolume (the mount stays in place)
        for done, item in enumerate(items):
            argv = rsync_argv(item["snapshot"], item["mount"], item["mount"], excluded, checksum, dry=False)
            rc, out, err = run(argv)
            if rc != 0:
                raise Problem(
                    f"rsync of {item['snapshot']} into {item['mount']} failed ({last_line(err) or f'exit code {rc}'})"
                    f" after {done} of {len(items)} subvolume(s); undo with --session {new_session}"
                )
            item["changed"] = len([line for line in out.splitlines() if line.strip()])
        return result
    finally:
        lock.release()


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "required": True, "choices": ["validate", "snapshot", "list", "cleanup", "rollback"]},
            "subvolumes": {"type": "list", "elements": "str", "default": []},
            "location": {"type": "path", "required": True},
            "session": {"type": "str", "default": ""},
            "phase": {"type": "str", "default": "pre", "choices": ["pre", "post"]},
            "keep": {"type": "int", "default": 10},
            "older_than": {"type": "int", "default": 0},
            "rollback_session": {"type": "str", "default": ""},
            "lock_path": {"type": "path", "default": ""},
            "checksum": {"type": "bool", "default": True},
            "exclude": {"type": "list", "elements": "path", "default": []},
            "prune": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    action = p["action"]
    location = os.path.normpath(p["location"])
    subvolumes = [os.path.normpath(s) for s in p["subvolumes"]]
    host = socket.gethostname()
    for key in ("session", "rollback_session"):
        if p[key] and (not SESSION_RE.match(p[key]) or "@" in p[key]):
            module.fail_json(msg=f"{key} {p[key]!r} is not a session id")
    try:
        if action == "validate":
            problems = validate(subvolumes, location)
            module.exit_json(changed=False, host=host, problems=problems)
        elif action == "snapshot":
            if not p["session"]:
                raise Problem("a snapshot needs a session id")
            result = snapshot(module, subvolumes, location, p["session"], p["phase"])
            changed = bool(result["created"] or result["would_create"])
            if p["prune"] and p["phase"] == "post":
                result["pruned"] = prune(module, location, p["keep"], p["older_than"], p["session"])
                changed = changed or bool(result["pruned"]["deleted"])
            module.exit_json(changed=changed, host=host, **result)
        elif action == "list":
            on_btrfs = os.path.isabs(location) and fsid(existing_ancestor(location)) is not None
            module.exit_json(changed=False, host=host, location=location, on_btrfs=on_btrfs, sessions=scan(location))
        elif action == "cleanup":
            if p["keep"] < 1:
                raise Problem("keep must be at least 1 (the newest session is always kept)")
            result = cleanup(module, location, p["keep"], p["older_than"], "")
            if result["errors"]:
                module.fail_json(
                    msg=f"cleanup on {host} could not delete " + "; ".join(result["errors"]),
                    changed=bool(result["deleted"]),
                    host=host,
                    **result,
                )
            module.exit_json(changed=bool(result["deleted"]), host=host, **result)
        else:
            if not p["session"]:
                raise Problem("a rollback needs a new session id")
            result = rollback(
                module,
                subvolumes,
                location,
                p["rollback_session"],
                p["session"],
                p["lock_path"],
                p["exclude"],
                p["checksum"],
            )
            changed = any(i.get("changes") for i in result["items"])
            module.exit_json(changed=changed, host=host, **result)
    except Problem as exc:
        module.fail_json(msg=str(exc), host=host, locked=isinstance(exc, Locked))
    except OSError as exc:
        module.fail_json(msg=f"{action} on {host} failed: {exc}", host=host)


if __name__ == "__main__":
    main()
