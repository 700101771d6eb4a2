"""The way people really connect: the target logged into as a normal user with passwordless sudo
(``ansible_user: alice``, ``ansible_become: true``, as inventory/example.yml suggests), with Debian's
real ``sudo`` — a full folder_sync of root-owned and other users' files, snapshots, history,
rollback and an interrupt, nothing left behind.

The target has a private /etc (tests/sandbox: a copy of the host's on its own btrfs), where the login
user and its sudoers rule live; the host's /etc is never written. pc-switcher itself runs as root on
the source (the source's side needs root to read every user's files and to take its snapshots).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.integration.folder_sync_helpers import (
    build_tree,
    change_tree,
    manifest,
    rsync_processes,
    sh,
)
from tests.integration.helpers import (
    assert_one_error_line,
    describe,
    inventory_with,
    leftovers,
    run_dirs,
    run_sync,
    sync_argv,
    tagged,
    write_config,
)
from tests.integration.test_snapshots import HISTORY, LOCATION, SUBVOLUMES, cli, sessions_of
from tests.sandbox import Machine, Sandbox, SandboxError
from tests.waiting import wait_for

USER = "alice"
UID = 1100  # 1000 is taken on some hosts: the user must not exist in the host's /etc either
SNAPSHOTS = {
    "subvolumes": {"source": SUBVOLUMES, "target": SUBVOLUMES},
    "location": {"source": LOCATION, "target": LOCATION},
}
DATA = "/home/user/data"
ROOT_DATA = "/root/data"

# Files only root may read or write, beside the awkward tree of folder_sync_helpers (other users'
# numeric owners, ACLs, user xattrs, hard links, suid, fifo, sparse): a root-only file and directory,
# a trusted.* xattr (only root reads or sets it), a file of the login user.
ROOT_FILES = r"""
set -euo pipefail
mkdir -p /root/data/private
printf 'root only\n' > /root/data/private/secret
chmod 0600 /root/data/private/secret && chmod 0700 /root/data/private
setfattr -n trusted.pcs -v root-xattr /root/data/private/secret
printf 'root-owned in a home\n' > /home/user/data/root-file
chown 0:0 /home/user/data/root-file && chmod 0400 /home/user/data/root-file
setfattr -n trusted.pcs -v x /home/user/data/root-file
mkdir -p /home/alice && printf 'mine\n' > /home/alice/notes && chown -R 1100:1100 /home/alice
chmod 0750 /home/alice
"""


@pytest.fixture(scope="module")
def bsb() -> Iterator[Sandbox]:
    """source (root login, as every sandbox) and target (private /etc, login user alice with sudo)."""
    with Sandbox() as sandbox:
        sandbox.add("source")
        sandbox.add("target", private_etc=True)
        sandbox["target"].add_login_user(USER, UID)
        yield sandbox


def become_inventory(sb: Sandbox) -> Path:
    return inventory_with(sb, "become", ansible_user=USER, ansible_become=True)


def config(folders: list[str], **extra: object) -> dict[str, object]:
    return {
        "jobs": {"folder_sync": True},
        "folder_sync": {"folders": [{"source": f} for f in folders]},
        "snapshots": SNAPSHOTS,
        **extra,
    }


def trees(machine: Machine) -> dict[str, object]:
    return {path: manifest(machine, path) for path in (DATA, ROOT_DATA, "/home/alice")}


def logins(machine: Machine, user: str) -> int:
    """How many ssh logins of ``user`` the machine's sshd accepted so far."""
    return machine.sshd_log.read_text().count(f"Accepted publickey for {user} ")


def no_leftovers(sb: Sandbox) -> None:
    assert leftovers(sb, 10) == {}
    for machine in (sb["source"], sb["target"]):
        assert describe(tagged(machine)) == []
        assert rsync_processes(machine) == []


def test_sudo_is_real_and_the_user_exists_only_on_the_target(bsb: Sandbox) -> None:
    target = bsb["target"]
    login = target.ssh_argv(["sudo", "-n", "id", "-u"])
    login[login.index("root")] = USER
    res = subprocess.run(login, capture_output=True, text=True, timeout=60, check=False)
    assert (res.returncode, res.stdout.strip(), res.stderr) == (0, "0", "")
    assert target.run(["test", "-u", "/usr/bin/sudo"]).returncode == 0  # Debian's setuid sudo
    assert target.run(["getent", "passwd", USER]).returncode == 0
    assert bsb["source"].run(["getent", "passwd", USER]).returncode == 2
    assert USER not in Path("/etc/passwd").read_text().split(":")
    # a machine that shares the host's /etc gets no user: the host's files stay as they are
    host = {name: Path(name).read_bytes() for name in ("/etc/passwd", "/etc/group", "/etc/shadow")}
    with pytest.raises(SandboxError, match="no private /etc"):
        bsb["source"].add_login_user("mallory", 1199)
    assert {name: Path(name).read_bytes() for name in host} == host
    assert not list(Path("/etc/sudoers.d").glob("pcs-*"))


def test_full_sync_snapshots_history_rollback_as_a_sudo_user(bsb: Sandbox) -> None:
    source, target = bsb["source"], bsb["target"]
    inventory = become_inventory(bsb)
    build_tree(source, DATA)
    sh(source, ROOT_FILES)
    sh(target, "mkdir -p /home/user/data/stale && echo old > /home/user/data/stale/f && echo t > /root/t")
    write_config(source, config(["/home", ROOT_DATA]))

    root_logins = logins(target, "root")
    res = run_sync(bsb, inventory=inventory)
    assert res.returncode == 0, res.stdout + res.stderr
    assert logins(target, USER) > 0
    assert logins(target, "root") == root_logins  # every connection of the run was alice's
    assert trees(target) == trees(source)
    assert not target.path("/home/user/data/stale").exists()
    assert target.path("/root/t").read_text() == "t\n"  # /root itself is not a synced folder
    listed = cli(bsb, "snapshots", "list", "--json", "target", "-i", str(inventory))  # as alice too
    assert listed.returncode == 0, listed.stderr
    sessions = json.loads(listed.stdout)["machines"]["target"]
    assert sessions == sessions_of(bsb)["target"]  # the same as root sees them
    (first,) = [s for s in sessions if s["kind"] != "rollback"]
    assert {(s["subvolume"], s["phase"]) for s in first["snapshots"]} == {
        (n, p) for n in ("home", "root") for p in ("pre", "post")
    }
    assert first["id"] in target.path(HISTORY).read_text()
    no_leftovers(bsb)

    synced = trees(target)
    change_tree(source, DATA)
    sh(source, "printf 'changed\\n' > /root/data/private/secret")
    res = run_sync(bsb, inventory=inventory)
    assert res.returncode == 0, res.stdout + res.stderr
    assert trees(target) == trees(source)
    no_leftovers(bsb)

    # the rollback (as alice with sudo) puts the target back to the second sync's pre snapshots
    res = cli(bsb, "rollback", "target", "-i", str(inventory), "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert trees(target) == synced
    no_leftovers(bsb)


def files(machine: Machine) -> list[str]:
    """Where a run as alice could leave files on the machine: /tmp, alice's home, /root (the synced
    folders aside; directory sizes vary with their entries). /var/tmp is the host's, shared."""
    script = (
        "find /tmp /home/alice /root -path /root/big -prune -o -path /root/data -prune"
        " -o -type f -printf '%p f %m %U:%G %s\\n' -o -printf '%p %y %m %U:%G\\n' | LC_ALL=C sort"
    )
    res = machine.run(["bash", "-c", script])
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


def receiving_rsync(machine: Machine) -> list[psutil.Process]:
    """The rsync that receives the sync (``rsync --server``), not the short ``rsync --version`` of
    the job's checks, nor its wrapper before it execs rsync."""
    found = []
    for proc in machine.processes():
        with contextlib.suppress(psutil.Error):  # a process that just ended
            if proc.name() == "rsync" and "--server" in proc.cmdline():
                found.append(proc)
    return found


def test_interrupt_as_a_sudo_user_leaves_nothing(bsb: Sandbox) -> None:
    source, target = bsb["source"], bsb["target"]
    inventory = become_inventory(bsb)
    sh(source, "mkdir -p /root/big && head -c 200000000 /dev/urandom > /root/big/file")
    before = files(target)
    cfg = config(["/root/big"])
    cfg["folder_sync"] = {"folders": [{"source": "/root/big"}], "rsync_args": ["--bwlimit=20m"]}
    write_config(source, cfg)
    handle = source.popen(
        sync_argv(bsb, target="target", inventory=inventory), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    ours: list[psutil.Process] = []

    def sending_the_big_file() -> bool:
        """The rsync of the 200 MB file runs (its temporary file is on the target): the folder's
        first rsync, which skips the files over 16 MiB, is short and may be seen ending."""
        ours[:] = receiving_rsync(target)
        growing = list(target.path("/root/big").glob(".file.*"))
        return bool(ours) and bool(growing) and bool(rsync_processes(source))

    try:
        assert wait_for(sending_the_big_file, 120)
        # rsync runs as root on the target (sudo), started by alice's ssh session
        assert all(p.uids().effective == 0 for p in ours)
        driver = next(
            p
            for p in psutil.Process(handle.pid).children(recursive=True)
            if any(part.endswith("pc-switcher") for part in p.cmdline())
        )
        driver.send_signal(signal.SIGINT)
        out, _ = handle.communicate(timeout=90)
    finally:
        if handle.poll() is None:
            handle.kill()
    assert handle.returncode == 130, out
    no_leftovers(bsb)
    assert run_dirs(target) == run_dirs(source) == []
    assert files(target) == before
    # `pc-switcher cleanup` of that run as alice (through sudo) succeeds and leaves nothing
    res = cli(bsb, "cleanup", "target", "-i", str(inventory))
    assert res.returncode == 0, res.stdout + res.stderr
    no_leftovers(bsb)
    assert files(target) == before


@pytest.mark.parametrize(
    ("user", "uid", "rule"),
    [("bob", 1101, None), ("carol", 1102, "ALL=(ALL:ALL) ALL")],
    ids=["no-sudoers-rule", "sudo-asks-a-password"],
)
def test_become_without_passwordless_sudo_is_one_clear_error(
    bsb: Sandbox, user: str, uid: int, rule: str | None
) -> None:
    source, target = bsb["source"], bsb["target"]
    target.add_login_user(user, uid, sudo=rule)
    sh(source, "mkdir -p /home/user/data && echo x > /home/user/data/only-on-source")
    write_config(source, config(["/home/user/data"]))
    before = files(target)
    inventory = inventory_with(bsb, user, ansible_user=user, ansible_become=True)
    line = assert_one_error_line(run_sync(bsb, inventory=inventory), 1)
    assert "sudo: a password is required" in line, line
    assert "needs passwordless sudo for ansible_user on the target: add a NOPASSWD sudoers rule" in line
    no_leftovers(bsb)
    assert files(target) == before
    assert not target.path("/home/user/data/only-on-source").exists()


def test_a_symlink_in_a_root_only_directory_of_a_target_path_is_refused(bsb: Sandbox) -> None:
    """alice cannot look into /root (0700), rsync under sudo would follow a link there: the target
    check runs through sudo -n like the sync's rsync, so it sees the link and refuses it."""
    source, target = bsb["source"], bsb["target"]
    sh(source, "mkdir -p /root/mirror && echo x > /root/mirror/only-on-source")
    sh(target, "mkdir -p /home/victim && echo keep > /home/victim/keep && ln -sfn /home/victim /root/mirror")
    assert target.run(["su", USER, "-s", "/bin/sh", "-c", "test -L /root/mirror"]).returncode != 0
    write_config(
        source, {"jobs": {"folder_sync": True}, "folder_sync": {"folders": [{"source": "/root/mirror"}]}}
    )
    try:
        before = manifest(target, "/home/victim")
        res = run_sync(bsb, inventory=become_inventory(bsb))
        out = res.stdout + res.stderr
        assert res.returncode == 1, out
        assert "/root/mirror is a symlink (to /home/victim)" in out, out
        assert manifest(target, "/home/victim") == before
        no_leftovers(bsb)
    finally:
        sh(target, "rm -f /root/mirror && rm -rf /home/victim")
