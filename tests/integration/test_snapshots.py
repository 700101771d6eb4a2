"""Snapshots, rollback and sync history on real sandbox machines (pcswitcher.run.safety, roles
btrfs_snapshots and sync_history). The Safety calls run inside the machine ``source``
(tests/integration/safety_probe.py); the CLI commands are the real ``pc-switcher``."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from tests.integration.helpers import PC_SWITCHER, REPO, write_config
from tests.sandbox import Machine, Sandbox

PYTHON = str(REPO / ".venv" / "bin" / "python")
ANSIBLE_PLAYBOOK = str(REPO / ".venv" / "bin" / "ansible-playbook")
LOCATION = "/run/pcs-btrfs/snapshots"  # the top level of each machine's btrfs: outside /home and /root
SUBVOLUMES = ["/home", "/root"]
HISTORY = "/root/.local/state/pc-switcher/history.json"
LOCK = "/root/.local/state/pc-switcher/sync.lock"  # the machine's sync lock (agent.default_lock_path)

SNAPSHOTS = {
    "source_subvolumes": SUBVOLUMES,
    "target_subvolumes": SUBVOLUMES,
    "source_location": LOCATION,
    "target_location": LOCATION,
}
CONFIG = {
    "jobs": {},
    "snapshots": {
        "subvolumes": {"source": SUBVOLUMES, "target": SUBVOLUMES},
        "location": {"source": LOCATION, "target": LOCATION},
    },
}

# A listing of a tree: path, type, mode, owner, size, mtime, link target, hard links, xattrs, sha256.
MANIFEST = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
skip = set(sys.argv[2:])
out = []
def entry(path):
    rel = os.path.relpath(path, root)
    if any(rel == x or rel.startswith(x + "/") for x in skip):
        return
    st = os.lstat(path)
    item = [rel, stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid]
    if stat.S_ISLNK(st.st_mode):
        item.append(os.readlink(path))
    elif stat.S_ISREG(st.st_mode):
        item += [st.st_size, st.st_mtime_ns, st.st_nlink, hashlib.sha256(open(path, "rb").read()).hexdigest()]
    names = sorted(os.listxattr(path, follow_symlinks=False))
    item.append({n: os.getxattr(path, n, follow_symlinks=False).hex() for n in names})
    out.append(item)
for top, dirs, files in os.walk(root):
    dirs.sort()
    entry(top)
    for name in sorted(files):
        entry(os.path.join(top, name))
    for name in list(dirs):
        sub = os.path.join(top, name)
        if os.path.ismount(sub) or os.lstat(sub).st_dev != os.lstat(root).st_dev:
            dirs.remove(name)
        elif os.path.islink(os.path.join(top, name)):
            entry(os.path.join(top, name))
            dirs.remove(name)
print(json.dumps(out))
"""


def sh(machine: Machine, script: str) -> str:
    res = machine.run(["bash", "-euo", "pipefail", "-c", script], timeout=120)
    assert res.returncode == 0, f"{script}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def manifest(machine: Machine, root: str, *skip: str) -> list[Any]:
    res = machine.run(["python3", "-c", MANIFEST, root, *skip], timeout=120)
    assert res.returncode == 0, res.stderr
    data: list[Any] = json.loads(res.stdout)
    return data


def probe(
    sb: Sandbox,
    calls: list[list[Any]],
    *,
    session: str,
    on: str = "source",
    target: str = "target",
    snapshots: dict[str, Any] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    request = {
        "inventory": str(sb.inventory_path),
        "target": target,
        "session": session,
        "dry_run": dry_run,
        "snapshots": SNAPSHOTS if snapshots is None else snapshots,
        "history": {"path": HISTORY},
        "lock_path": LOCK,
        "calls": calls,
    }
    res = sb[on].run(
        [PYTHON, "-m", "tests.integration.safety_probe", json.dumps(request)], cwd=str(REPO), timeout=300
    )
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    data: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return data


def ok(data: dict[str, Any]) -> list[Any]:
    assert data["error"] is None, data["error"]
    results: list[Any] = data["results"]
    return results


def cli(sb: Sandbox, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return sb["source"].run([PC_SWITCHER, *args], timeout=timeout)


def sessions_of(sb: Sandbox, target: str | None = "target") -> dict[str, list[dict[str, Any]]]:
    args = ["snapshots", "list", "--json"] + ([target, "-i", str(sb.inventory_path)] if target else [])
    res = cli(sb, *args)
    assert res.returncode == 0, res.stderr
    machines: dict[str, list[dict[str, Any]]] = json.loads(res.stdout)["machines"]
    return machines


def tree(machine: Machine, path: str) -> str:
    return machine.run(
        ["bash", "-c", f"ls -la --time-style=+%s {path} 2>&1; find {path} -maxdepth 2 2>&1"]
    ).stdout


def session_id(day: int | None = None) -> str:
    if day is None:
        return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{time.monotonic_ns() % 0xFFFF:04x}"
    return f"202001{day:02d}T000000Z-{day:04x}"


# --------------------------------------------------------------------------- snapshots


def test_pre_and_post_snapshots_on_both_machines(sandbox: Sandbox) -> None:
    write_config(sandbox["source"], CONFIG)
    session = session_id()
    results = ok(probe(sandbox, [["validate"], ["snapshot", "pre"], ["snapshot", "post"]], session=session))
    for side in ("target", "source"):
        assert len(results[1][side]["created"]) == 2
        assert len(results[2][side]["created"]) == 2
    machines = sessions_of(sandbox)
    assert set(machines) == {"target", "source"}
    for sessions in machines.values():
        (only,) = sessions
        assert only["id"] == session
        snaps = {(s["subvolume"], s["phase"], s["mount"], s["readonly"]) for s in only["snapshots"]}
        assert snaps == {(n, p, f"/{n}", True) for n in ("home", "root") for p in ("pre", "post")}
        for snap in only["snapshots"]:
            assert snap["name"].startswith(f"{snap['subvolume']}@{session}-{snap['phase']}-")
    # the same phase again keeps what is there (idempotent)
    again = ok(probe(sandbox, [["snapshot", "pre"]], session=session))[0]
    assert again["target"]["created"] == []
    assert len(again["target"]["kept"]) == 2
    # the snapshots hold the data: a file written before is in the pre snapshot
    sh(sandbox["target"], f"ls {LOCATION}/{session}/ | grep -c @ | grep -qx 4")


def test_snapshot_problems_fail_validation_before_any_change(sandbox: Sandbox) -> None:
    source, target = sandbox["source"], sandbox["target"]
    write_config(source, CONFIG)
    before = {m.name: tree(m, LOCATION) for m in (source, target)}
    bad = {
        **SNAPSHOTS,
        "target_subvolumes": ["/home", "/srv/missing"],
        "source_subvolumes": ["/home", "/etc"],
    }
    data = probe(sandbox, [["validate"], ["snapshot", "pre"]], session=session_id(), snapshots=bad)
    assert data["results"] == []
    error = data["error"]
    assert error["type"] == "SafetyError"
    assert error["exit_code"] == 1
    message = error["message"]
    assert "\n" not in message
    assert message.startswith("snapshot check failed: ")
    assert "subvolume /srv/missing does not exist on target" in message
    assert "/etc on source is not on btrfs" in message
    # a location inside a snapshotted subvolume, on the target only
    inside = {**SNAPSHOTS, "target_location": "/home/.snapshots"}
    data = probe(sandbox, [["validate"]], session=session_id(), snapshots=inside)
    assert "inside the snapshotted subvolume /home" in data["error"]["message"]
    assert {m.name: tree(m, LOCATION) for m in (source, target)} == before


def test_list_and_cleanup_retention_on_both_machines(sandbox: Sandbox) -> None:
    source = sandbox["source"]
    write_config(source, CONFIG)
    old = [session_id(day) for day in (1, 2, 3)]
    newest = session_id()
    for session in [*old, newest]:
        ok(probe(sandbox, [["snapshot", "pre"]], session=session))
    machines = sessions_of(sandbox)
    for sessions in machines.values():
        assert [s["id"] for s in sessions] == [*old, newest]
    # this machine only, without TARGET
    local = sessions_of(sandbox, target=None)
    assert list(local) == ["source"]
    assert [s["id"] for s in local["source"]] == [*old, newest]

    inv = ["-i", str(sandbox.inventory_path)]
    res = cli(sandbox, "snapshots", "cleanup", "target", *inv, "--keep", "2", "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    for side in ("target", "source"):
        assert report["machines"][side]["deleted_sessions"] == old[:2]
    assert sessions_of(sandbox) == machines  # a dry run deletes nothing

    res = cli(sandbox, "snapshots", "cleanup", "target", *inv, "--keep", "2")
    assert res.returncode == 0, res.stderr
    for sessions in sessions_of(sandbox).values():
        assert [s["id"] for s in sessions] == [old[2], newest]
    sh(sandbox["target"], f"test ! -e {LOCATION}/{old[0]}")

    res = cli(sandbox, "snapshots", "cleanup", "target", *inv, "--older-than", "7d")
    assert res.returncode == 0, res.stderr
    for sessions in sessions_of(sandbox).values():
        assert [s["id"] for s in sessions] == [newest]

    # only old sessions: the most recent one stays, whatever the rules say
    res = cli(sandbox, "snapshots", "cleanup", "target", *inv, "--keep", "1", "--older-than", "1s")
    assert res.returncode == 0, res.stderr
    for sessions in sessions_of(sandbox).values():
        assert [s["id"] for s in sessions] == [newest]
    for day in (4, 5):
        ok(probe(sandbox, [["snapshot", "pre"]], session=session_id(day)))
    sh(sandbox["target"], f"btrfs -q subvolume delete {LOCATION}/{newest}/*@* && rm -rf {LOCATION}/{newest}")
    sh(source, f"btrfs -q subvolume delete {LOCATION}/{newest}/*@* && rm -rf {LOCATION}/{newest}")
    res = cli(sandbox, "snapshots", "cleanup", "target", *inv, "--keep", "1", "--older-than", "1d")
    assert res.returncode == 0, res.stderr
    for sessions in sessions_of(sandbox).values():
        assert [s["id"] for s in sessions] == [session_id(5)]
    res = cli(sandbox, "snapshots", "cleanup", "target", *inv, "--keep", "0")
    assert res.returncode == 2
    assert "--keep must be at least 1" in res.stderr


# --------------------------------------------------------------------------- rollback

TREE = r"""
mkdir -p /home/user/docs/deep /home/user/gone-dir /root/notes
printf 'hello\n' > /home/user/docs/a.txt
head -c 200000 /dev/urandom > /home/user/docs/deep/blob.bin
printf 'keep me\n' > /home/user/docs/deep/delete-me
printf 'same size\n' > /home/user/docs/same-size
ln -s docs/a.txt /home/user/link
ln /home/user/docs/a.txt /home/user/hardlink
printf 'dir content\n' > /home/user/gone-dir/f
printf 'root note\n' > /root/notes/n
chmod 640 /home/user/docs/a.txt
chmod 700 /home/user/docs/deep
chown 1000:1000 /home/user/docs /home/user/docs/deep/blob.bin
setfattr -n user.color -v blue /home/user/docs/a.txt
setfattr -n user.tag -v x /home/user/docs
touch -d '2021-02-03 04:05:06' /home/user/docs/same-size
"""

CHANGE = r"""
printf 'changed\n' >> /home/user/docs/a.txt
rm /home/user/docs/deep/delete-me
rm -r /home/user/gone-dir
printf 'new\n' > /home/user/new-file
mkdir /home/user/new-dir && printf 'x\n' > /home/user/new-dir/y
chmod 600 /home/user/docs/deep/blob.bin
chmod 755 /home/user/docs/deep
chown 1234:4321 /home/user/docs/a.txt
setfattr -x user.color /home/user/docs/a.txt
setfattr -n user.other -v 1 /home/user/docs/deep/blob.bin
setfattr -n user.tag -v y /home/user/docs
printf 'SAME SIZE\n' > /home/user/docs/same-size
touch -d '2021-02-03 04:05:06' /home/user/docs/same-size
rm /home/user/link && ln -s elsewhere /home/user/link
printf 'root changed\n' > /root/notes/n
"""


def full_manifest(machine: Machine) -> dict[str, Any]:
    return {
        "/home": manifest(machine, "/home"),
        "/root": manifest(machine, "/root", ".local/state/pc-switcher"),
    }


def test_rollback_restores_the_pre_sync_state_byte_for_byte(sandbox: Sandbox) -> None:
    source, target = sandbox["source"], sandbox["target"]
    write_config(source, CONFIG)
    sh(target, TREE)
    session = session_id()
    ok(probe(sandbox, [["record_history"], ["snapshot", "pre"]], session=session))
    pre = full_manifest(target)
    history_before = target.path(HISTORY).read_text()

    sh(target, CHANGE)
    changed = full_manifest(target)
    assert changed != pre
    ok(probe(sandbox, [["record_history"]], session=session_id()))  # the history moves on after the snapshot
    history_now = target.path(HISTORY).read_text()
    assert history_now != history_before

    inv = ["-i", str(sandbox.inventory_path)]
    # a dry run shows the plan and changes nothing
    res = cli(sandbox, "rollback", "target", *inv, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert session in res.stdout
    assert "dry-run" in res.stdout
    assert full_manifest(target) == changed
    # no terminal and no --yes: refused
    res = cli(sandbox, "rollback", "target", *inv)
    assert res.returncode == 2
    assert "--yes" in res.stderr
    assert full_manifest(target) == changed

    res = cli(sandbox, "rollback", "target", *inv, "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert full_manifest(target) == pre
    assert target.path(HISTORY).read_text() == history_now  # the history is not rolled back

    rollbacks = [s for s in sessions_of(sandbox)["target"] if s["kind"] == "rollback"]
    (rb,) = rollbacks
    assert rb["rolled_back_to"] == session
    phases = {(s["subvolume"], s["phase"], s["readonly"]) for s in rb["snapshots"]}
    assert phases == {("home", "rollback-replaced", True), ("root", "rollback-replaced", True)}
    home_replaced = next(s["path"] for s in rb["snapshots"] if s["subvolume"] == "home")
    assert manifest(target, home_replaced) == changed["/home"]

    # a rollback of the rollback brings the replaced state back
    res = cli(sandbox, "rollback", "target", *inv, "--session", rb["id"], "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert full_manifest(target) == changed
    # the default session is still the newest sync session
    res = cli(sandbox, "rollback", "target", *inv, "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert full_manifest(target) == pre
    # no Ansible leftovers on the target (this checkout, kept visible by the sandbox, aside)
    assert not [p for p in target.path("/tmp").iterdir() if not f"{REPO}/".startswith(f"/tmp/{p.name}/")]


def test_rollback_refused_while_the_target_lock_is_held(sandbox: Sandbox) -> None:
    source, target = sandbox["source"], sandbox["target"]
    write_config(source, CONFIG)
    sh(target, "mkdir -p /home/user && echo one > /home/user/f")
    ok(probe(sandbox, [["snapshot", "pre"]], session=session_id()))
    sh(target, "echo two > /home/user/f")
    sh(target, f"mkdir -p {LOCK.rsplit('/', 1)[0]}")
    hold = f"import fcntl, time; f = open({LOCK!r}, 'a'); fcntl.flock(f, fcntl.LOCK_EX); time.sleep(120)"
    holder = target.popen(["python3", "-c", hold], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while target.run(["flock", "-n", "-x", LOCK, "true"]).returncode == 0:
            assert time.monotonic() < deadline, "the lock holder did not start"
            time.sleep(0.05)
        before = sessions_of(sandbox)
        res = cli(sandbox, "rollback", "target", "-i", str(sandbox.inventory_path), "--yes")
        assert res.returncode == 3, res.stdout + res.stderr
        assert "lock" in res.stderr
        assert "is held" in res.stderr
        assert target.path("/home/user/f").read_text() == "two\n"
        assert sessions_of(sandbox) == before
    finally:
        holder.kill()
        holder.wait()
    res = cli(sandbox, "rollback", "target", "-i", str(sandbox.inventory_path), "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert target.path("/home/user/f").read_text() == "one\n"


# --------------------------------------------------------------------------- history


def kinds(data: dict[str, Any]) -> list[str]:
    return [w["kind"] for w in ok(data)[0]]


def test_history_warnings_for_each_case(sandbox: Sandbox) -> None:
    sandbox.add("other")
    warn = [["history_warnings"]]
    record = [["record_history"]]
    # never synced: the first sync overwrites the target
    assert kinds(probe(sandbox, warn, session=session_id())) == ["first_sync"]
    # a dry run records nothing
    ok(probe(sandbox, record, session=session_id(), dry_run=True))
    assert not sandbox["target"].path(HISTORY).exists()
    assert not sandbox["source"].path(HISTORY).exists()
    ok(probe(sandbox, record, session=session_id()))
    target_history = json.loads(sandbox["target"].path(HISTORY).read_text())
    assert target_history["last"]["role"] == "target"
    assert target_history["last"]["peer"] == "source"
    source_history = json.loads(sandbox["source"].path(HISTORY).read_text())
    assert source_history["last"]["role"] == "source"
    assert source_history["last"]["peer"] == "target"
    # the same source pushes again without a sync back in between
    assert kinds(probe(sandbox, warn, session=session_id())) == ["repeat_push"]
    # the target syncs back to the source: then a push is in order again
    ok(probe(sandbox, record, session=session_id(), on="target", target="source"))
    assert kinds(probe(sandbox, warn, session=session_id())) == []
    # another machine syncs to the target: the target last synced with a different machine
    ok(probe(sandbox, record, session=session_id(), on="other", target="target"))
    data = probe(sandbox, warn, session=session_id())
    assert kinds(data) == ["other_peer"]
    assert "target last synced with other" in data["results"][0][0]["message"]
    # an unreadable history counts as never synced, and says why
    sandbox["target"].path(HISTORY).write_text("{not json")
    assert kinds(probe(sandbox, warn, session=session_id())) == ["unreadable"]


# --------------------------------------------------------------------------- idempotence, check mode


def playbook(sb: Sandbox, *extra: str, check: bool = False) -> str:
    argv = [
        ANSIBLE_PLAYBOOK,
        "-i",
        str(sb.inventory_path),
        "-l",
        "target",
        str(REPO / "playbooks" / "snapshots.yml"),
        "-e",
        json.dumps(
            {
                "btrfs_snapshots_subvolumes": SUBVOLUMES,
                "btrfs_snapshots_location": LOCATION,
                "btrfs_snapshots_source_subvolumes": SUBVOLUMES,
                "btrfs_snapshots_source_location": LOCATION,
                "btrfs_snapshots_session": "20250102T030405Z-beef",
            }
        ),
        *extra,
        *(["--check"] if check else []),
    ]
    res = sb["source"].run(
        argv, cwd=str(REPO), timeout=300, env={"PATH": "/usr/bin:/bin", "ANSIBLE_PIPELINING": "True"}
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_role_validate_is_idempotent_and_pre_in_check_mode_changes_nothing(sandbox: Sandbox) -> None:
    source, target = sandbox["source"], sandbox["target"]
    before = {m.name: tree(m, LOCATION) for m in (source, target)}
    for _ in range(2):
        out = playbook(sandbox, "-e", "btrfs_snapshots_action=validate")
        assert "changed=0" in out
        assert "failed=0" in out
    out = playbook(sandbox, "-e", "btrfs_snapshots_action=pre", check=True)
    assert "would take pre-sync snapshots" in out
    assert {m.name: tree(m, LOCATION) for m in (source, target)} == before
    # for real, then again: the second run changes nothing
    out = playbook(sandbox, "-e", "btrfs_snapshots_action=pre")
    assert "changed=2" in out  # the target's and the source's snapshots
    out = playbook(sandbox, "-e", "btrfs_snapshots_action=pre")
    assert "changed=0" in out
