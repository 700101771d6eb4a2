"""Helpers of the folder_sync tests: trees with every kind of file, manifests, configs, results."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from typing import Any

from tests.integration.helpers import inventory_with, log_records, run_sync
from tests.sandbox import Machine, Sandbox

PYTHON = "/usr/bin/python3"

# Builds the awkward tree under $1 inside a machine (bash, run as root).
TREE_SCRIPT = r"""
set -euo pipefail
root=$1
mkdir -p "$root"
cd "$root"
printf 'hello\n' > plain.txt
: > empty-file
mkdir -p empty-dir 'dir with space' 'ünïcødé ✓' deep
printf 'space\n' > 'dir with space/file with space.txt'
printf 'unicode\n' > 'ünïcødé ✓/ñame ✓.txt'
printf 'newline\n' > $'name\nwith newline'
printf 'tab\n' > $'name\twith tab'
# hard links, across directories
printf 'linked content\n' > hl-a
mkdir -p links
ln hl-a links/hl-b
ln hl-a 'dir with space/hl-c'
# symlinks: relative, absolute, dangling, to a dir
ln -s plain.txt rel-link
ln -s "$root/plain.txt" abs-link
ln -s /does/not/exist dangling-link
ln -s 'dir with space' dir-link
# sparse file: 64 MiB apparent, a few KiB of data; a second link of it; a dense file that gains
# holes in CHANGE_SCRIPT (both over folder_sync's sparse threshold, 16 MiB: rsyncs of their own)
truncate -s 64M sparse.img
printf 'middle' | dd of=sparse.img bs=1 seek=$((32*1024*1024)) conv=notrunc status=none
ln sparse.img links/sparse-link.img
head -c 20971520 /dev/urandom > gains-holes.img
# ACLs and xattrs
printf 'acl\n' > acl-file
setfacl -m u:4242:rw,g:4343:r acl-file
setfacl -d -m u:4242:rwx 'dir with space'
printf 'xattr\n' > xattr-file
setfattr -n user.color -v blue xattr-file
setfattr -n user.bin -v 0x00ff00 xattr-file
setfattr -n user.dir -v yes 'ünïcødé ✓'
# numeric owners nobody knows, odd modes, a fifo
printf 'owned\n' > owned
chown 4242:4343 owned
chmod 0640 owned
printf '#!/bin/sh\n' > suid
chmod 4755 suid
mkfifo fifo
# deep path and a long name
d=deep
for i in $(seq 1 60); do d="$d/level$i"; done
mkdir -p "$d"
printf 'deep\n' > "$d/$(printf 'x%.0s' $(seq 1 200)).txt"
# a binary file of some size, and old mtimes
head -c 3000000 /dev/urandom > random.bin
touch -d '2001-02-03 04:05:06' plain.txt empty-dir
touch -h -d '2002-03-04 05:06:07' rel-link
"""

# Changes after a first sync: deletions, modifications, a new hard link, changed ACL/xattr/mode.
CHANGE_SCRIPT = r"""
set -euo pipefail
cd "$1"
rm -f links/hl-b $'name\nwith newline' random.bin
rm -rf 'ünïcødé ✓'
printf 'changed\n' >> plain.txt
setfacl -m u:4444:r acl-file
setfattr -n user.color -v red xattr-file
chmod 0600 owned
mkdir -p new-dir/sub
printf 'new\n' > new-dir/sub/new-file
# 18 MiB of the 20 MiB file become a hole (its mtime moves: the next sync sends it)
fallocate --punch-hole --offset 1048576 --length 18874368 gains-holes.img
ln new-dir/sub/new-file new-dir/new-link
"""

# A JSON manifest of a tree: every entry with type, mode, owner, size, mtime, link target, content
# hash, all xattrs (ACLs included: system.posix_acl_*), allocated blocks and hard-link groups.
MANIFEST_SCRIPT = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
out = {}
inodes = {}
def entry(path):
    st = os.lstat(path)
    rel = os.path.relpath(path, root)
    e = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "mtime": st.st_mtime_ns}
    if stat.S_ISREG(st.st_mode):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        e.update(size=st.st_size, sha256=h.hexdigest(), nlink=st.st_nlink, blocks=st.st_blocks)
        e["link_group"] = inodes.setdefault((st.st_dev, st.st_ino), rel)
    elif stat.S_ISLNK(st.st_mode):
        e["target"] = os.readlink(path)
    if not stat.S_ISLNK(st.st_mode):
        e["xattrs"] = {k: os.getxattr(path, k, follow_symlinks=False).hex()
                       for k in sorted(os.listxattr(path, follow_symlinks=False))}
    out[rel] = e
entry(root)
for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(dirnames + filenames):
        entry(os.path.join(dirpath, name))
print(json.dumps(out, sort_keys=True))
"""


def build_tree(machine: Machine, root: str) -> None:
    res = machine.run(["bash", "-c", TREE_SCRIPT, "tree", root])
    assert res.returncode == 0, res.stderr


def change_tree(machine: Machine, root: str) -> None:
    res = machine.run(["bash", "-c", CHANGE_SCRIPT, "change", root])
    assert res.returncode == 0, res.stderr


def manifest(machine: Machine, root: str) -> dict[str, Any]:
    res = machine.run([PYTHON, "-c", MANIFEST_SCRIPT, root])
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def sh(machine: Machine, script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = machine.run(["bash", "-c", script, "sh", *args])
    if check:
        assert res.returncode == 0, f"{script!r}: rc {res.returncode}: {res.stderr}"
    return res


def ssh_command(sb: Sandbox) -> str:
    """The ssh command (for rsync -e) that reaches the target from inside the source machine."""
    return (
        f"ssh -F /dev/null -i {sb.client_key} -o IdentitiesOnly=yes -o UserKnownHostsFile={sb.known_hosts} "
        f"-o StrictHostKeyChecking=yes -o BatchMode=yes -p {sb['target'].port} -l root"
    )


def itemize_pass(sb: Sandbox, path: str, *extra: str) -> list[str]:
    """A second ``rsync -aHAXS --dry-run --itemize-changes --delete`` pass source -> target of ``path``."""
    argv = [
        "rsync",
        "-aHAXS",
        "--numeric-ids",
        "--dry-run",
        "--itemize-changes",
        "--delete",
        *extra,
        "-e",
        ssh_command(sb),
        f"{path.rstrip('/')}/",
        f"{sb['target'].address}:{path.rstrip('/')}/",
    ]
    res = sb["source"].run(argv, timeout=120)
    assert res.returncode == 0, res.stderr
    return [line for line in res.stdout.splitlines() if line.strip()]


def folder_config(folders: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    return {"jobs": {"folder_sync": True}, "folder_sync": {"folders": folders, **options}}


def last_result(source: Machine) -> dict[str, Any]:
    """The ``folder_sync_result`` of the newest run (from the run's final log record)."""
    for record in reversed(log_records(source)):
        jobs = record.get("jobs")
        for job in jobs if isinstance(jobs, list) else []:
            if isinstance(job, dict) and job.get("name") == "folder_sync":
                result: dict[str, Any] = (job.get("result") or {}).get("folder_sync_result") or {}
                return result
    raise AssertionError("no folder_sync result in the log")


def rsync_processes(machine: Machine) -> list[str]:
    found = []
    for proc in machine.processes():
        try:
            if proc.name() == "rsync" or "folder_sync_start" in " ".join(proc.cmdline()):
                found.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        except Exception:  # noqa: S112 - a process that just ended
            continue
    return found


# A login user of the target machine only: the sandbox machines share the host's /etc, so the user is
# added to a copy of /etc/passwd bind-mounted over it in the target's own mount namespace (sshd and
# everything on the target see it; the host does not). The sandbox's sshd takes the same client key
# for every user (one AuthorizedKeysFile).
LOGIN_USER = "pcs-user"
LOGIN_UID = 4711


@contextlib.contextmanager
def bind_mount(machine: Machine, source: str, target: str) -> Iterator[None]:
    """``mount --bind SOURCE TARGET`` inside the machine (its own mount namespace) for the block."""
    sh(machine, 'mount --bind "$1" "$2"', source, target)
    try:
        yield
    finally:
        sh(machine, 'umount "$1"', target)


@contextlib.contextmanager
def login_user(machine: Machine) -> Iterator[str]:
    """:data:`LOGIN_USER` on the machine, with its home ``/home/pcs-user``; yields the name."""
    sh(
        machine,
        'cp /etc/passwd /root/pcs-passwd && printf "%s\\n" "$1:x:$2:$2::/home/$1:/bin/sh" >> /root/pcs-passwd'
        ' && mkdir -p "/home/$1" && chown "$2:$2" "/home/$1"',
        LOGIN_USER,
        str(LOGIN_UID),
    )
    with bind_mount(machine, "/root/pcs-passwd", "/etc/passwd"):
        yield LOGIN_USER


@contextlib.contextmanager
def without_rsync(machine: Machine) -> Iterator[None]:
    """rsync missing on the machine: an empty, non-executable file over /usr/bin/rsync (``/bin`` is
    a link to ``/usr/bin``), so that ``sh``'s ``command -v rsync`` finds none and running it fails."""
    sh(machine, "rm -f /root/no-rsync && : > /root/no-rsync && chmod 0644 /root/no-rsync")
    with bind_mount(machine, "/root/no-rsync", "/usr/bin/rsync"):
        yield


@contextlib.contextmanager
def stand_in_sudo(machine: Machine) -> Iterator[None]:
    """A ``sudo`` on the machine's PATH that drops its options and runs the command as the caller
    (this target shares the host's /etc, where no sudoers rule may be added): enough to see what
    validation checks when ``ansible_become`` is set. The real sudo, with a sudoers rule in a
    private /etc, runs whole syncs in tests/integration/test_become.py.
    It is the only file of /usr/local/bin on the machine for the block."""
    sh(
        machine,
        "mkdir -p /root/pcs-bin && chmod 0755 /root/pcs-bin && printf '%s\\n' '#!/bin/sh'"
        " 'while [ $# -gt 0 ]; do case $1 in --) shift; break;; -*) shift;; *) break;; esac; done'"
        " 'exec \"$@\"' > /root/pcs-bin/sudo && chmod 0755 /root/pcs-bin/sudo",
    )
    with bind_mount(machine, "/root/pcs-bin", "/usr/local/bin"):
        yield


def sync_as(sb: Sandbox, user: str, *args: str, become: bool = False) -> subprocess.CompletedProcess[str]:
    """``pc-switcher sync target`` with an inventory where the target's ``ansible_user`` is ``user``."""
    extra = {"ansible_become": True} if become else {}
    path = inventory_with(sb, f"{user}{'-become' if become else ''}", ansible_user=user, **extra)
    return run_sync(sb, *args, inventory=path)
