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

validate, snapshot, list and cleanup are the code of ``module_utils/pcswitcher_agent.py`` (a link to
pcswitcher/remote/agent.py): the agents of a sync run the same functions through their ``snapshots``
command, so a hand run of this role and a sync check, take and prune snapshots the same way. The
rollback is this module's own (only a hand run or `pc-switcher rollback` rolls back).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pcswitcher_agent import (
    SESSION_RE,
    SnapshotProblem,
    btrfs_fsid,
    cleanup_sessions,
    existing_ancestor,
    is_subvolume,
    last_line,
    run_tool,
    scan_sessions,
    snapshots,
    stamp,
    subvol_name,
    write_meta,
)

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


class Locked(SnapshotProblem):
    """The target's lock is held (a sync runs)."""


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
                f"the target's lock {self.path} is held{holder}: a sync is running on {socket.gethostname()}"
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


def rsync_argv(
    source: str, dest: str, mount: str, exclude: list[str], checksum: bool, dry: bool
) -> list[str]:
    argv = [
        "rsync",
        "-aHAX",
        "--numeric-ids",
        "--modify-window=-1",
        "--delete",
        "--force",
        "--one-file-system",
        "--itemize-changes",
    ]
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


def _chosen_session(sessions: list[dict], wanted: str, location: str) -> dict:
    """The session to roll back to: ``wanted``, or the newest with pre-sync snapshots."""
    if wanted:
        chosen = next((s for s in sessions if s["id"] == wanted), None)
        if chosen is None:
            known = ", ".join(s["id"] for s in sessions[-5:]) or "none"
            raise SnapshotProblem(
                f"no session {wanted} in {location} (newest: {known}); see `pc-switcher snapshots list`"
            )
        return chosen
    with_pre = [s for s in sessions if any(x["phase"] == "pre" for x in s["snapshots"])]
    if not with_pre:
        raise SnapshotProblem(
            f"no pre-sync snapshot in {location} on {socket.gethostname()}: nothing to roll back to"
        )
    return with_pre[-1]


def _rollback_items(
    chosen: dict, phase: str, subvolumes: list[str], location: str, new_session: str
) -> list[dict]:
    """Per snapshot of ``phase`` in the session: its subvolume, live mount, path, and where the
    mount's current state is kept (``replaced``, in the new session)."""
    sources = [x for x in chosen["snapshots"] if x["phase"] == phase]
    if not sources:
        raise SnapshotProblem(f"session {chosen['id']} has no snapshot to roll back to")
    by_name = {subvol_name(m): m for m in subvolumes}
    items = []
    for snap in sources:
        mount = snap["mount"] or by_name.get(snap["subvolume"])
        if not mount:
            raise SnapshotProblem(f"which mount is snapshot {snap['name']} of? its session file is gone")
        if not is_subvolume(mount):
            raise SnapshotProblem(f"{mount} is not a btrfs subvolume on {socket.gethostname()} any more")
        replaced = f"{snap['subvolume']}@{new_session}-rollback-replaced-{stamp()}"
        items.append(
            {
                "subvolume": snap["subvolume"],
                "mount": mount,
                "snapshot": snap["path"],
                "replaced": os.path.join(location, new_session, replaced),
            }
        )
    return items


def _copy_back(
    items: list[dict], excluded: list[str], checksum: bool, new_session: str, *, dry: bool
) -> None:
    """rsync each item's snapshot into its live mount (``dry``: a preview); sets ``changes`` (the
    preview's) or ``changed`` (the copy's itemized lines) of each item."""
    for done, item in enumerate(items):
        argv = rsync_argv(item["snapshot"], item["mount"], item["mount"], excluded, checksum, dry=dry)
        rc, out, err = run_tool(argv)
        reason = last_line(err) or f"exit code {rc}"
        if rc != 0 and dry:
            raise SnapshotProblem(f"rsync preview of {item['mount']} failed: {reason}")
        if rc != 0:
            raise SnapshotProblem(
                f"rsync of {item['snapshot']} into {item['mount']} failed ({reason})"
                f" after {done} of {len(items)} subvolume(s); undo with --session {new_session}"
            )
        item["changes" if dry else "changed"] = len([line for line in out.splitlines() if line.strip()])


def _keep_current(items: list[dict], location: str, new_session: str, chosen: str) -> None:
    """A read-only snapshot of every live mount into the new session, all or nothing."""
    session_dir = os.path.join(location, new_session)
    os.makedirs(session_dir, mode=0o700, exist_ok=True)
    write_meta(
        session_dir,
        {
            "session": new_session,
            "kind": "rollback",
            "rolled_back_to": chosen,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": socket.gethostname(),
            "subvolumes": {i["subvolume"]: i["mount"] for i in items},
        },
    )
    made: list[str] = []
    for item in items:
        rc, _, err = run_tool(["btrfs", "subvolume", "snapshot", "-r", item["mount"], item["replaced"]])
        if rc != 0:
            for path in made:
                run_tool(["btrfs", "subvolume", "delete", path])
            raise SnapshotProblem(
                f"cannot keep the current state of {item['mount']}: {last_line(err) or f'exit code {rc}'}; "
                "nothing was rolled back"
            )
        made.append(item["replaced"])


def rollback(module: AnsibleModule, subvolumes: list[str], location: str, new_session: str) -> dict:
    """Under the target lock: the chosen session's snapshots previewed (the whole result in check
    mode), the live state kept (``rollback-replaced``), then each snapshot copied back."""
    p = module.params
    if shutil.which("rsync") is None:
        raise SnapshotProblem(f"rsync not found on {socket.gethostname()}: install it")
    lock = TargetLock(p["lock_path"], module.check_mode)
    lock.acquire(new_session)
    try:
        chosen = _chosen_session(scan_sessions(location), p["rollback_session"], location)
        phase = "pre" if any(x["phase"] == "pre" for x in chosen["snapshots"]) else "rollback-replaced"
        items = _rollback_items(chosen, phase, subvolumes, location, new_session)
        excluded = [*p["exclude"], location, *nested_mounts()] + ([p["lock_path"]] if p["lock_path"] else [])
        result = {
            "session": chosen["id"],
            "phase": phase,
            "new_session": new_session,
            "items": items,
            "check": module.check_mode,
        }
        _copy_back(items, excluded, p["checksum"], new_session, dry=True)  # what would change
        if module.check_mode:
            return result
        _keep_current(items, location, new_session, chosen["id"])
        _copy_back(items, excluded, p["checksum"], new_session, dry=False)
        return result
    finally:
        lock.release()


ARGUMENT_SPEC = {
    "action": {
        "type": "str",
        "required": True,
        "choices": ["validate", "snapshot", "list", "cleanup", "rollback"],
    },
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
}


def _run(module: AnsibleModule, action: str, location: str, subvolumes: list[str], host: str) -> None:
    """The action: exits the module with its result."""
    p = module.params
    if action in ("validate", "snapshot"):
        request = {**p, "action": action, "location": location, "subvolumes": subvolumes}
        result = snapshots({**request, "check": module.check_mode})
        if result.get("error"):
            raise SnapshotProblem(str(result.pop("error")))
        module.exit_json(**result)
    elif action == "list":
        on_btrfs = os.path.isabs(location) and btrfs_fsid(existing_ancestor(location)) is not None
        module.exit_json(
            changed=False, host=host, location=location, on_btrfs=on_btrfs, sessions=scan_sessions(location)
        )
    elif action == "cleanup":
        if p["keep"] < 1:
            raise SnapshotProblem("keep must be at least 1 (the newest session is always kept)")
        result = cleanup_sessions(location, p["keep"], p["older_than"], "", module.check_mode)
        changed = bool(result["deleted"])
        if result["errors"]:
            msg = f"cleanup on {host} could not delete " + "; ".join(result["errors"])
            module.fail_json(msg=msg, changed=changed, host=host, **result)
        module.exit_json(changed=changed, host=host, **result)
    else:
        if not p["session"]:
            raise SnapshotProblem("a rollback needs a new session id")
        result = rollback(module, subvolumes, location, p["session"])
        module.exit_json(changed=any(i.get("changes") for i in result["items"]), host=host, **result)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    action = p["action"]
    host = socket.gethostname()
    for key in ("session", "rollback_session"):
        if p[key] and (not SESSION_RE.match(p[key]) or "@" in p[key]):
            module.fail_json(msg=f"{key} {p[key]!r} is not a session id")
    try:
        _run(
            module,
            action,
            os.path.normpath(p["location"]),
            [os.path.normpath(s) for s in p["subvolumes"]],
            host,
        )
    except SnapshotProblem as exc:
        module.fail_json(msg=str(exc), host=host, locked=isinstance(exc, Locked))
    except OSError as exc:
        module.fail_json(msg=f"{action} on {host} failed: {exc}", host=host)


if __name__ == "__main__":
    main()
