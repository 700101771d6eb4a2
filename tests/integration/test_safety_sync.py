"""Issue 4 through the real ``pc-switcher sync``: snapshots, rollback, locks, history questions,
dry-run, ``--json`` and the summary — on real sandbox machines.

Two sandboxes for the module: ``sb`` (conftest: source, target) for snapshots, rollback, dry-run and
the result; ``sb3`` (source, source2, target) for the lock contention of two sources and the history
questions.
Every test starts and ends with its machines clean (no process beyond the baseline, no
``/tmp/pcswitcher-*``).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.helpers import (
    HISTORY_FLAGS,
    PC_SWITCHER,
    REPO,
    STATE,
    assert_one_error_line,
    inventory_with,
    leftovers,
    log_records,
    sandbox_config,
    start_sync,
    sync_argv,
    wait_for_path,
    wait_until_clean,
    write_config,
)
from tests.integration.outcome import assert_log_ends
from tests.integration.test_snapshots import (
    HISTORY,
    LOCATION,
    LOCK,
    SUBVOLUMES,
    cli,
    full_manifest,
    manifest,
    sessions_of,
    sh,
)
from tests.sandbox import Machine, Sandbox

DATA = "/home/user/data"
CLI_DOC = REPO / "docs" / "cli.md"
SNAPSHOTS = {
    "subvolumes": {"source": SUBVOLUMES, "target": SUBVOLUMES},
    "location": {"source": LOCATION, "target": LOCATION},
}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
RESULT_KEYS = {
    "schema",
    "run_id",
    "source",
    "target",
    "dry_run",
    "exit_code",
    "outcome",
    "abort_cause",
    "jobs",
    "snapshots",
    "log",
}
JOB_KEYS = {"name", "status", "duration", "changed", "detail", "result"}

# The source's tree: content, modes, owners and xattrs the target does not have yet.
SOURCE_TREE = r"""
set -euo pipefail
rm -rf /home/user/data && mkdir -p /home/user/data/docs /home/user/data/bin
cd /home/user/data
printf 'new content\n' > docs/a.txt
printf 'kept\n' > docs/same.txt
head -c 50000 /dev/urandom > bin/blob
printf '#!/bin/sh\n' > bin/run
chmod 755 bin/run
chmod 600 docs/a.txt
chown 4242:4343 docs/a.txt bin/blob
setfattr -n user.color -v red docs/a.txt
touch -d '2020-01-02 03:04:05' docs/same.txt
"""
# The target's tree before the first sync: other content, files the source lacks, other modes,
# owners and xattrs.
TARGET_TREE = r"""
set -euo pipefail
rm -rf /home/user/data && mkdir -p /home/user/data/docs /home/user/data/old-dir /home/user/data/bin
cd /home/user/data
printf 'old content, longer than the new one\n' > docs/a.txt
printf 'kept\n' > docs/same.txt
printf 'only on the target\n' > docs/extra.txt
printf 'gone\n' > old-dir/f
printf '#!/bin/sh\n' > bin/run
chmod 644 bin/run docs/a.txt
chown 1000:1000 docs/a.txt
setfattr -n user.color -v blue docs/a.txt
setfattr -n user.tag -v old docs
touch -d '2020-01-02 03:04:05' docs/same.txt
"""


def text(value: str | bytes | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value or ""


def sync_on(
    sandbox: Sandbox,
    *args: str,
    machine: str = "source",
    target: str = "target",
    history_checks: bool = False,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """``pc-switcher sync TARGET ARGS`` run to its end inside ``machine`` (no terminal)."""
    argv = sync_argv(sandbox, *args, target=target, history_checks=history_checks)
    return sandbox[machine].run(argv, timeout=timeout, stdin=subprocess.DEVNULL)


def ok_run(res: subprocess.CompletedProcess[str], code: int = 0) -> None:
    assert res.returncode == code, f"exit {res.returncode}\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    assert "Traceback" not in res.stdout + res.stderr


def snapshot_subvolumes(machine: Machine) -> list[str]:
    """The paths of every snapshot below the location (``btrfs subvolume list`` of the machine's fs)."""
    out = sh(machine, "btrfs subvolume list /run/pcs-btrfs")
    return sorted(line.split(" path ", 1)[1] for line in out.splitlines() if "snapshots/" in line)


def of_session(paths: list[str], session: str) -> list[str]:
    return [p for p in paths if f"snapshots/{session}/" in p]


def summary_rows(output: str) -> dict[str, list[str]]:
    """The rows of the plain summary: job -> [status, duration, what changed]."""
    lines = output.splitlines()
    start = lines.index("Summary:")
    rows: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        match = re.fullmatch(r"  (\S+)\s+(succeeded|failed|skipped|not run|aborted)\s+(\S+)\s*(.*)", line)
        if not match:
            break
        rows[match[1]] = [match[2], match[3], match[4]]
    return rows


def check_result(data: dict[str, Any], *, run_id: str, dry_run: bool, exit_code: int) -> None:
    """The documented shape of ``sync --json`` (docs/cli.md)."""
    assert set(data) == RESULT_KEYS
    assert data["schema"] == "pc-switcher/sync-result/1"
    assert data["run_id"] == run_id
    assert data["source"] == "source"
    assert data["target"] == "target"
    assert data["dry_run"] is dry_run
    assert data["exit_code"] == exit_code
    assert isinstance(data["outcome"], str)
    assert data["outcome"]
    for job in data["jobs"]:
        assert set(job) == JOB_KEYS
        assert isinstance(job["duration"], int | float)
        assert isinstance(job["changed"], int)
        assert isinstance(job["result"], dict)
    assert isinstance(data["snapshots"], dict)
    if dry_run:
        assert data["log"] is None
    else:
        assert data["log"] == f"{STATE}/logs/{run_id}.jsonl"


def run_id_in(output: str) -> str:
    match = re.search(r"pc-switcher run (\d{8}T\d{6}Z-[0-9a-f]{4})", output)
    assert match, output[-2000:]
    return match[1]


# --------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def sb3() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        for name in ("source", "source2", "target"):
            sandbox.add(name)
        yield sandbox


@pytest.fixture(autouse=True)
def clean_machines(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts on clean machines and must leave them clean."""
    boxes = [request.getfixturevalue(n) for n in ("sb", "sb3") if n in request.fixturenames]
    for box in boxes:
        assert leftovers(box) == {}
    yield
    for box in boxes:
        assert leftovers(box) == {}


def folder_and_dummy(*, snapshots: dict[str, Any] = SNAPSHOTS) -> dict[str, Any]:
    return sandbox_config(
        {"folder_sync": True, "dummy_success": True},
        folder_sync={"folders": [{"source": DATA}]},
        dummy_success={"source_duration": 1, "target_duration": 1},
        snapshots=snapshots,
    )


@dataclass
class Synced:
    """The module's successful sync (folder_sync + dummy_success, snapshots on, ``--json``)."""

    res: subprocess.CompletedProcess[str]
    data: dict[str, Any]
    run_id: str
    pre: dict[str, Any]  # full_manifest of the target before the sync
    post: dict[str, Any]  # ... and right after it


@pytest.fixture(scope="module")
def synced(sb: Sandbox) -> Synced:
    source, target = sb["source"], sb["target"]
    sh(source, SOURCE_TREE)
    sh(target, TARGET_TREE)
    write_config(source, folder_and_dummy())
    pre = full_manifest(target)
    res = sync_on(sb, "--json")
    ok_run(res)
    data = json.loads(res.stdout)
    post = full_manifest(target)
    return Synced(res, data, data["run_id"], pre, post)


# --------------------------------------------------------------------------------------------------
# 1. snapshots


def test_success_takes_pre_and_post_snapshots_on_both_machines(sb: Sandbox, synced: Synced) -> None:
    session = synced.run_id
    machines = sessions_of(sb)
    assert set(machines) == {"source", "target"}
    for side, sessions in machines.items():
        (ours,) = [s for s in sessions if s["id"] == session]
        assert ours["kind"] == "sync"
        snaps = {(s["subvolume"], s["phase"], s["mount"], s["readonly"]) for s in ours["snapshots"]}
        assert snaps == {(n, p, f"/{n}", True) for n in ("home", "root") for p in ("pre", "post")}, side
        for snap in ours["snapshots"]:
            assert snap["name"].startswith(f"{snap['subvolume']}@{session}-{snap['phase']}-")
    for machine in (sb["source"], sb["target"]):
        paths = of_session(snapshot_subvolumes(machine), session)
        assert len(paths) == 4, paths
        assert sorted(p.split("-")[-2] for p in paths) == ["post", "post", "pre", "pre"]
    # the result names what was taken, per phase and machine
    for phase in ("pre", "post"):
        for side in ("source", "target"):
            assert len(synced.data["snapshots"][phase][side]["created"]) == 2, (phase, side)
    # the pre snapshot of the target holds the data as it was before the sync
    (ours,) = [s for s in machines["target"] if s["id"] == session]
    pre_home = next(s["path"] for s in ours["snapshots"] if s["subvolume"] == "home" and s["phase"] == "pre")
    assert manifest(sb["target"], pre_home) == synced.pre["/home"]


def test_success_result_as_json_and_summary(sb: Sandbox, synced: Synced) -> None:
    res, data = synced.res, synced.data
    check_result(data, run_id=synced.run_id, dry_run=False, exit_code=0)
    assert data["outcome"] == "sync to target completed"
    assert data["abort_cause"] is None
    jobs = {job["name"]: job for job in data["jobs"]}
    assert jobs["folder_sync"]["status"] == "succeeded"
    assert jobs["dummy_success"]["status"] == "succeeded"
    fs = jobs["folder_sync"]["result"]["folder_sync_result"]
    assert fs["files_transferred"] >= 2
    assert fs["deleted"] >= 3  # docs/extra.txt, old-dir/, old-dir/f
    assert fs["dry_run"] is False
    assert sb["source"].path(data["log"]).is_file()
    # stdout is the JSON document only; the display went to stderr
    assert res.stdout.lstrip().startswith("{")
    assert "Summary:" in res.stderr
    assert "Summary:" not in res.stdout
    # 7. the summary: job, status, duration, what changed
    rows = summary_rows(res.stderr)
    assert list(rows) == ["folder_sync", "dummy_success"]
    for job, (status, duration, _) in rows.items():
        assert status == "succeeded", job
        assert re.fullmatch(r"[\d.]+m?s|\d+m\d+s", duration), duration
    # in the job's words (its declaration), counts and sizes in the user's units
    changed = rows["folder_sync"][2]
    assert re.fullmatch(r"[\d,]+ files \((\d+ B|[\d,]+\.\d (KiB|MiB|GiB))\) sent, [\d,]+ deleted", changed), (
        changed
    )
    assert changed.startswith(f"{fs['files_transferred']:,} files (")
    assert changed.endswith(f") sent, {fs['deleted']:,} deleted")
    assert rows["dummy_success"][2] == "worked 1.0s on the source, 1.0s on the target"
    assert "changed" not in changed, "Ansible's count of changed tasks is for the log"
    # the snapshots' lines name the machine each was taken on
    records = log_records(sb["source"], synced.run_id)
    for side in ("source", "target"):
        taken = [r for r in records if str(r["message"]).startswith(f"{side} snapshot: ")]
        assert taken, f"no snapshot record for the {side}"
        assert {r["host"] for r in taken} == {side}, taken


def test_fields_in_the_docs_match_the_json_result(synced: Synced) -> None:
    """docs/cli.md documents every field of ``sync --json`` and no other (the doc cannot drift)."""
    doc = CLI_DOC.read_text()
    section = doc.split("<!-- sync-result-fields -->")[1].split("<!-- /sync-result-fields -->")[0]
    documented = re.findall(r"^\| `([a-z_\[\].]+)` \|", section, re.MULTILINE)
    top = {f for f in documented if "." not in f}
    job = {f.split(".", 1)[1] for f in documented if f.startswith("jobs[].")}
    assert top == set(synced.data)
    assert job == set(synced.data["jobs"][0])
    assert len(documented) == len(set(documented))
    # the example in the doc has the same shape
    example = json.loads(doc.split("<!-- sync-result-example -->")[1].split("```json")[1].split("```")[0])
    assert set(example) == set(synced.data)
    assert all(set(j) == JOB_KEYS for j in example["jobs"])
    assert example["schema"] == synced.data["schema"]


# --------------------------------------------------------------------------------------------------
# 2. rollback through the CLI


def without_own_state(full: dict[str, Any]) -> dict[str, Any]:
    """A full_manifest without the parents of ~/.local/state/pc-switcher (the lock's directory)."""
    return {**full, "/root": [e for e in full["/root"] if e[0] not in {".local", ".local/state"}]}


def test_rollback_after_a_real_sync_restores_the_target_byte_for_byte(sb: Sandbox, synced: Synced) -> None:
    target = sb["target"]
    inv = ["-i", str(sb.inventory_path)]
    assert synced.post != synced.pre
    assert full_manifest(target) == synced.post
    (session,) = [s for s in sessions_of(sb)["target"] if s["id"] == synced.run_id]
    pre_snap = {s["mount"]: s["path"] for s in session["snapshots"] if s["phase"] == "pre"}
    in_snapshot = {
        "/home": manifest(target, pre_snap["/home"]),
        "/root": manifest(target, pre_snap["/root"], ".local/state/pc-switcher"),
    }
    res = cli(sb, "rollback", "target", *inv, "--yes")
    ok_run(res)
    assert f"to session {synced.run_id} (pre snapshots)" in res.stdout
    rolled_back = full_manifest(target)
    assert rolled_back == in_snapshot
    # ... which is the state before the run, but for the directory of pc-switcher's own state, made
    # when the run took the target's lock (before the pre snapshot) and left alone by a rollback
    assert without_own_state(rolled_back) == without_own_state(synced.pre)
    # the replaced state is kept as a snapshot
    rollbacks = [s for s in sessions_of(sb)["target"] if s["kind"] == "rollback"]
    assert len(rollbacks) == 1, rollbacks
    rb = rollbacks[0]
    assert rb["rolled_back_to"] == synced.run_id
    assert {(s["subvolume"], s["phase"]) for s in rb["snapshots"]} == {
        ("home", "rollback-replaced"),
        ("root", "rollback-replaced"),
    }
    replaced_home = next(s["path"] for s in rb["snapshots"] if s["subvolume"] == "home")
    assert manifest(target, replaced_home) == synced.post["/home"]
    # the rollback of the rollback brings the synced state back
    res = cli(sb, "rollback", "target", *inv, "--session", rb["id"], "--yes")
    ok_run(res)
    assert full_manifest(target) == synced.post


# --------------------------------------------------------------------------------------------------
# 1. (cont.) a failed sync, a failed snapshot


def test_failed_sync_has_pre_snapshots_and_no_post(sb: Sandbox) -> None:
    source, target = sb["source"], sb["target"]
    write_config(
        source,
        sandbox_config({"dummy_fail": True}, dummy_fail={"fail_at": 1, "duration": 1}, snapshots=SNAPSHOTS),
    )
    history_before = target.path(HISTORY).read_text() if target.path(HISTORY).exists() else None
    res = sync_on(sb, "--json")
    ok_run(res, 1)
    data = json.loads(res.stdout)
    run_id = data["run_id"]
    check_result(data, run_id=run_id, dry_run=False, exit_code=1)
    assert data["abort_cause"] == "job_failed"
    assert "dummy_fail failed at 1 s as configured" in data["outcome"]
    jobs = {job["name"]: job for job in data["jobs"]}
    assert jobs["dummy_fail"]["status"] == "failed"
    assert "dummy_fail failed at 1 s as configured" in jobs["dummy_fail"]["detail"]
    assert set(data["snapshots"]) == {"pre"}
    for side, sessions in sessions_of(sb).items():
        (ours,) = [s for s in sessions if s["id"] == run_id]
        assert {s["phase"] for s in ours["snapshots"]} == {"pre"}, side
        assert len(ours["snapshots"]) == 2
    for machine in (source, target):
        paths = of_session(snapshot_subvolumes(machine), run_id)
        assert len(paths) == 2
        assert all("-pre-" in p for p in paths)
    # a failed sync records no history
    assert (target.path(HISTORY).read_text() if target.path(HISTORY).exists() else None) == history_before
    rows = summary_rows(res.stderr)
    assert rows["dummy_fail"][0] == "failed"


def untouched(machine: Machine) -> tuple[Any, ...]:
    """The synced tree, the snapshots and the history of a machine."""
    state = sh(machine, f"ls -la {LOCATION}; cat {HISTORY} || true")
    return manifest(machine, DATA), snapshot_subvolumes(machine), state


def test_snapshot_failure_aborts_before_any_change(sb: Sandbox) -> None:
    source, target = sb["source"], sb["target"]
    sh(source, SOURCE_TREE)
    sh(target, TARGET_TREE)  # folder_sync would have work to do
    bad = {**SNAPSHOTS, "subvolumes": {"source": SUBVOLUMES, "target": ["/home", "/home/nosuch"]}}
    write_config(source, folder_and_dummy(snapshots=bad))
    before = {m.name: untouched(m) for m in (source, target)}
    res = sync_on(sb)
    ok_run(res, 1)
    out = res.stdout
    critical = [line for line in out.splitlines() if " CRITICAL " in line]
    assert len(critical) == 1, critical
    assert "snapshot check failed: subvolume /home/nosuch does not exist on target" in critical[0]
    # nothing changed: no job's sync phase, no snapshot. The first job's checks run alongside the
    # snapshot check in its own playbook, held before its first change (the gate): it was stopped
    assert "(sync)" not in out
    assert "dummy_success (validate)" not in out
    run_id = run_id_in(out)
    rows = summary_rows(out)
    assert {job: row[0] for job, row in rows.items()} == {
        "folder_sync": "aborted",
        "dummy_success": "not run",
    }
    assert "snapshot check failed" in out.splitlines()[out.splitlines().index("Summary:") + 3]
    after = {m.name: untouched(m) for m in (source, target)}
    assert after == before
    for machine in (source, target):
        assert not machine.path(f"{LOCATION}/{run_id}").exists()


def test_a_snapshot_that_fails_after_the_check_fails_the_sync_before_any_change(sb: Sandbox) -> None:
    """The check passed, then the target's snapshot fails (here: another program took the session's
    path in the snapshot location while the run waited for its history question): the sync fails
    before the first job changes anything, and no snapshot of the session is left on either machine."""
    source, target = sb["source"], sb["target"]
    sh(source, SOURCE_TREE)
    sh(target, TARGET_TREE)  # folder_sync would have work to do
    write_config(source, folder_and_dummy())
    saved = read_histories(sb)
    restore_histories(sb, {name: None for name in sb.machines})  # the first-sync question holds the run
    sh(target, f"mkdir -p {LOCATION}")

    def state(machine: Machine) -> tuple[Any, ...]:
        names = (
            sorted(p.name for p in machine.path(LOCATION).iterdir())
            if machine.path(LOCATION).exists()
            else []
        )
        return manifest(machine, DATA), snapshot_subvolumes(machine), names

    before = {m.name: state(m) for m in (source, target)}
    blockers: list[str] = []

    def take_the_session_path(output: str) -> None:
        blocker = f"{LOCATION}/{run_id_in(output)}"
        sh(target, f"echo not-a-session > {blocker}")
        blockers.append(blocker)

    try:
        run = run_in_pty(source, sync_argv(sb, history_checks=True), "y", before_answer=take_the_session_path)
        (blocker,) = blockers
        assert (run.code, run.asked) == (1, 1), run.output[-3000:]
        # the log has the whole line (the terminal's display cuts it at its width)
        records = log_records(source, run_id_in(run.output))
        critical = [str(r["message"]) for r in records if r["level"] == "CRITICAL"]
        failed = "pre-sync snapshot failed: pre-sync snapshot on target failed: [Errno 17] File exists"
        assert critical == [f"{failed}: '{blocker}'; nothing was kept"], critical
        assert "snapshot check passed on both machines" in run.output
        assert "(sync)" not in run.output
        assert target.path(blocker).read_text() == "not-a-session\n"
        target.path(blocker).unlink()
        assert {m.name: state(m) for m in (source, target)} == before
        assert read_histories(sb) == {name: None for name in sb.machines}
    finally:
        for blocker in blockers:
            target.path(blocker).unlink(missing_ok=True)
        restore_histories(sb, saved)


def test_self_sync_is_refused(sb: Sandbox) -> None:
    write_config(sb["source"], sandbox_config({"dummy_success": True}))
    res = sync_on(sb, target="source")
    line = assert_one_error_line(res, 3)
    assert "cannot sync to itself" in line
    assert not sb["source"].path(LOCK).exists()
    assert_log_ends(log_records(sb["source"]), 3, "cannot sync to itself")


@pytest.mark.parametrize("how", ["inventory-name-is-this-host", "another-name-for-this-address"])
def test_self_sync_is_refused_when_the_lock_does_not_show_it(sb: Sandbox, how: str) -> None:
    """The source's state moved (XDG_STATE_HOME), so the target's agent does not meet the source's
    lock: the host name still tells (before the agents start, or from the target agent's hello)."""
    source = sb["source"]
    write_config(source, sandbox_config({"dummy_success": True}))
    if how == "inventory-name-is-this-host":
        argv = sync_argv(sb, target="source")
    else:
        inventory = inventory_with(sb, "self", ansible_host=source.address)
        argv = sync_argv(sb, target="target", inventory=inventory)
    res = source.run(
        ["env", "XDG_STATE_HOME=/root/moved-state", *argv], timeout=180, stdin=subprocess.DEVNULL
    )
    line = assert_one_error_line(res, 3)
    assert "is this machine (host name source)" in line, line
    assert "cannot sync to itself" in line
    assert not source.path(LOCK).exists()
    assert not source.path("/root/moved-state/pc-switcher/sync.lock").exists()
    assert wait_until_clean(source) == []


# --------------------------------------------------------------------------------------------------
# 5. + 6. dry-run: writes nothing, reports what it would do, --json

WORLD = r"""
set -uo pipefail
echo '## trees'
find /home /root -path "$CHECKOUT" -prune -o -printf '%p %y %s %m %U:%G %T@ %l\n' | LC_ALL=C sort
echo '## xattrs'
getfattr -R -h -d -m - --absolute-names /home /root 2>/dev/null \
  | LC_ALL=C awk -v c="# file: $CHECKOUT" 'BEGIN{RS="";ORS="\n\n"} index($0, c) != 1 {print}' | LC_ALL=C sort
echo '## snapshots'
# without the generations: reading files (rsync's preview) may update atimes, a metadata commit
btrfs subvolume list /run/pcs-btrfs | sed 's/ gen [0-9]*//'
find /run/pcs-btrfs/snapshots -maxdepth 2 -printf '%p %y %s %m %T@\n' 2>/dev/null | LC_ALL=C sort
echo '## state'
find /root/.local/state/pc-switcher /root/.config/pc-switcher -printf '%p %s %T@\n' 2>/dev/null \
  | LC_ALL=C sort
cat /root/.local/state/pc-switcher/history.json 2>/dev/null
test -e /root/.local/state/pc-switcher/sync.lock && echo 'LOCK FILE PRESENT'
echo '## tmp'
find /tmp -mindepth 1 -path "$CHECKOUT" -prune -o -printf '%p %y %s %m %T@\n' | LC_ALL=C sort
"""

# The lock file is created and removed by every run, dry or not (docs/architecture.md), with the
# directories it needs when they are missing: the mtimes of the directories on its path change. That
# nothing is left there shows in the entries, which are compared.
LOCK_PATH_DIRS = ("/root", "/root/.local", "/root/.local/state", LOCK.rsplit("/", 1)[0])


def world(machine: Machine) -> list[str]:
    # this checkout stays visible inside the machines at its own path (tests/sandbox): not part of
    # the machine's state, and pytest may write to it meanwhile
    res = machine.run(["env", f"CHECKOUT={REPO}", "bash", "-c", WORLD], timeout=120)
    assert "## tmp" in res.stdout, res.stderr
    out = []
    for line in res.stdout.splitlines():
        fields = line.split()
        if fields and fields[0] in LOCK_PATH_DIRS and len(fields) in (3, 6):
            line = " ".join(fields[:-1])  # without the directory's mtime  # noqa: PLW2901
        out.append(line)
    return out


def test_dry_run_writes_nothing_and_reports_what_it_would_change(sb: Sandbox) -> None:
    source, target = sb["source"], sb["target"]
    write_config(source, folder_and_dummy())
    sh(source, SOURCE_TREE)
    sh(target, TARGET_TREE)  # changes pending, and deletions: docs/extra.txt, old-dir/
    sh(source, "printf 'pending\\n' > /home/user/data/docs/pending.txt")
    before = {m.name: world(m) for m in (source, target)}
    assert any(line.startswith("/home/user/data/docs/extra.txt ") for line in before["target"])

    res = sync_on(sb, "--dry-run", "--json", history_checks=True)
    ok_run(res)
    after = {m.name: world(m) for m in (source, target)}
    for name, listing in before.items():
        assert after[name] == listing, name
    assert not [p for m in (source, target) for p in m.path("/tmp").glob("pcswitcher-*")]

    data = json.loads(res.stdout)
    check_result(data, run_id=data["run_id"], dry_run=True, exit_code=0)
    assert data["outcome"] == "sync to target completed (dry-run)"
    assert not source.path(f"{STATE}/logs/{data['run_id']}.jsonl").exists()
    fs = next(j for j in data["jobs"] if j["name"] == "folder_sync")["result"]["folder_sync_result"]
    assert fs["dry_run"] is True
    assert fs["files_transferred"] >= 2
    assert fs["deleted"] >= 3
    # the snapshots it would have taken, none taken
    for phase in ("pre", "post"):
        for side in ("source", "target"):
            snaps = data["snapshots"][phase][side]
            assert len(snaps["would_create"]) == 2, (phase, side)
            assert not snaps.get("created"), (phase, side)
    err = res.stderr
    # the history warning is logged and the dry-run goes on
    assert "(dry-run: continuing)" in err
    # each job says what it would change
    would = next(line for line in err.splitlines() if "Would transfer:" in line)
    for name in ("docs/a.txt", "docs/pending.txt", "bin/blob"):
        assert name in would, would
    for name in ("docs/extra.txt", "old-dir/f"):
        assert name in would.split("Would delete:")[1], would
    assert "would transfer" in err
    assert "Would run a 1 s loop on the source" in err
    assert "target snapshot (dry-run, not taken)" in err
    assert "source snapshot (dry-run, not taken)" in err
    assert "would take pre-sync snapshots" in err
    assert "dry-run: the sync history is not written" in err
    rows = summary_rows(err)
    assert re.fullmatch(
        r"would send [1-9][\d,]* files \(.+\), would delete [1-9][\d,]*", rows["folder_sync"][2]
    ), rows
    assert rows["dummy_success"][2] == "would work on the source and the target", rows


# --------------------------------------------------------------------------------------------------
# 3. locks: two sources at once, rollback while a sync runs


def test_second_source_and_rollback_meet_the_target_lock(sb3: Sandbox) -> None:
    source, source2, target = sb3["source"], sb3["source2"], sb3["target"]
    long = sandbox_config(
        {"dummy_success": True},
        dummy_success={"source_duration": 60, "target_duration": 1},
    )
    write_config(source, long)
    write_config(
        source2,
        sandbox_config(
            {"dummy_success": True},
            dummy_success={"source_duration": 0, "target_duration": 0},
            snapshots=SNAPSHOTS,
        ),
    )
    first = start_sync(sb3)
    try:
        wait_for_path(target, LOCK)
        holder = json.loads(target.path(LOCK).read_text())
        assert holder.get("host") == "target"
        second = sync_on(sb3, machine="source2", timeout=60)
        line = assert_one_error_line(second, 3)
        assert "target target is busy: another sync holds its lock" in line
        assert "role target, source source" in line, line  # the holder: the sync from source
        # a rollback, from either machine, is refused while the sync runs
        for machine in ("source2", "source"):
            if machine == "source":
                write_config(source, {**long, "snapshots": SNAPSHOTS}, path="/root/rollback-config.yml")
                extra = ["-c", "/root/rollback-config.yml"]
            else:
                extra = []
            res = sb3[machine].run(
                [PC_SWITCHER, "rollback", "target", "-i", str(sb3.inventory_path), "--yes", *extra],
                timeout=120,
            )
            assert res.returncode == 3, (machine, res.stdout[-2000:], res.stderr[-2000:])
            assert "is held" in res.stderr
            assert len([ln for ln in res.stderr.splitlines() if ln.strip()]) == 1, res.stderr
        assert first.handle.poll() is None, "the first sync was disturbed"
    finally:
        code, out = first.interrupt()
    assert code == 130, out[-3000:]
    assert not target.path(LOCK).exists()


# --------------------------------------------------------------------------------------------------
# 4. the history questions, with and without a terminal


def read_histories(sandbox: Sandbox) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in sandbox.machines:
        path = sandbox[name].path(HISTORY)
        out[name] = path.read_text() if path.exists() else None
    return out


def restore_histories(sandbox: Sandbox, saved: dict[str, str | None]) -> None:
    for name, content in saved.items():
        path = sandbox[name].path(HISTORY)
        if content is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(content)


def last_of(sandbox: Sandbox, machine: str) -> dict[str, Any]:
    last: dict[str, Any] = json.loads(sandbox[machine].path(HISTORY).read_text())["last"]
    return last


@dataclass
class PtyRun:
    code: int
    output: str  # without terminal escapes
    asked: int  # how many questions were asked


def run_in_pty(
    machine: Machine,
    argv: list[str],
    answer: str | None,
    timeout: float = 120,
    before_answer: Callable[[str], None] | None = None,
) -> PtyRun:
    """Run ``argv`` inside ``machine`` on a pseudo-terminal; answer each ``[y/N]`` question
    (``before_answer`` first gets the output so far: the run waits for the answer meanwhile)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        machine.exec_argv(argv),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "160", "LINES": "50"},
        start_new_session=True,
    )
    os.close(slave)
    raw = b""
    asked = 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every holder of the terminal is gone
                    break
                if not chunk:
                    break
                raw += chunk
                plain = ANSI.sub("", text(raw))
                if plain.count("[y/N]") > asked:
                    asked += 1
                    if before_answer is not None:
                        before_answer(plain)
                    if answer is not None:
                        os.write(master, answer.encode() + b"\r")
            elif proc.poll() is not None:
                break
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"no end after {timeout} s:\n{ANSI.sub('', text(raw))[-3000:]}")
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
    return PtyRun(code, ANSI.sub("", text(raw)).replace("\r", ""), asked)


@pytest.mark.parametrize(
    ("case", "flag", "message"),
    [
        ("first_sync", "--allow-first-sync", "target has never been synced"),
        ("other_peer", "--allow-out-of-order", "target last synced with source2"),
        ("repeat_push", "--allow-out-of-order", "source already pushed to target"),
    ],
)
def test_history_question(sb3: Sandbox, case: str, flag: str, message: str) -> None:
    quick = sandbox_config(
        {"dummy_success": True}, dummy_success={"source_duration": 0, "target_duration": 0}
    )
    saved = _history_case(sb3, case, message, quick)
    _asked_without_a_terminal(sb3, case, flag, message, saved)
    _asked_in_a_terminal(sb3, flag, message, saved, quick)


def _history_case(sb3: Sandbox, case: str, message: str, quick: dict[str, Any]) -> dict[str, Any]:
    """The machines' histories as ``case`` needs them (each case's run that makes it); returns them."""
    source, target = sb3["source"], sb3["target"]
    restore_histories(sb3, dict.fromkeys(sb3.machines))
    write_config(source, quick)
    write_config(sb3["source2"], quick)
    if case == "first_sync":
        # two machines that never ran pc-switcher: a dry-run leaves no trace, not even the
        # directory of the lock it held on each machine
        for machine in (source, target):
            sh(machine, "rm -rf /root/.local")
        res = sync_on(sb3, "--dry-run", history_checks=True)
        ok_run(res)
        assert f"{message}" in res.stdout
        assert "(dry-run: continuing)" in res.stdout
        for machine in (source, target):
            assert not machine.path("/root/.local").exists(), machine.name
    elif case == "other_peer":
        ok_run(sync_on(sb3, machine="source2"))
        assert last_of(sb3, "target")["peer"] == "source2"
    elif case == "repeat_push":
        ok_run(sync_on(sb3))
    return read_histories(sb3)


def _nothing_changed(sb3: Sandbox, saved: dict[str, Any]) -> None:
    assert read_histories(sb3) == saved
    assert not sb3["target"].path(LOCK).exists()
    assert not sb3["source"].path(LOCK).exists()


def _proceeded(sb3: Sandbox, saved: dict[str, Any], output: str) -> None:
    """The sync ran: both histories name its session; then the histories are put back."""
    session = run_id_in(output)
    assert last_of(sb3, "target") | {"time": None} == {
        "role": "target",
        "peer": "source",
        "session": session,
        "time": None,
    }
    assert last_of(sb3, "source")["session"] == session
    restore_histories(sb3, saved)


def _asked_without_a_terminal(
    sb3: Sandbox, case: str, flag: str, message: str, saved: dict[str, Any]
) -> None:
    # no terminal: refused with one line naming the flag, nothing done
    res = sync_on(sb3, history_checks=True)
    line = assert_one_error_line(res, 2)
    assert message in line
    assert flag in line
    assert "(validate)" not in res.stdout
    assert_log_ends(log_records(sb3["source"]), 2, message, flag)
    _nothing_changed(sb3, saved)
    if case == "first_sync":
        # no terminal: --yes does not answer these questions
        line = assert_one_error_line(sync_on(sb3, "--yes", history_checks=True), 2)
        assert flag in line
        _nothing_changed(sb3, saved)
    # no terminal, with the flag: proceeds
    res = sync_on(sb3, flag, history_checks=True)
    ok_run(res)
    assert f"(accepted by {flag})" in res.stdout
    _proceeded(sb3, saved, res.stdout)


def _asked_in_a_terminal(
    sb3: Sandbox, flag: str, message: str, saved: dict[str, Any], quick: dict[str, Any]
) -> None:
    source = sb3["source"]
    argv = sync_argv(sb3, history_checks=True)
    # a terminal: "n" refuses, nothing done
    run = run_in_pty(source, argv, "n")
    assert (run.code, run.asked) == (2, 1), run.output[-3000:]
    assert message in run.output
    assert "sync cancelled" in run.output
    assert flag in run.output
    assert "(validate)" not in run.output
    _nothing_changed(sb3, saved)
    # a terminal: "y" proceeds
    run = run_in_pty(source, argv, "y")
    assert (run.code, run.asked) == (0, 1), run.output[-3000:]
    assert "sync to target completed" in run.output
    _proceeded(sb3, saved, run.output)
    # a terminal and --yes: not asked, proceeds. Up to the next step only (a whole sync was shown
    # twice above): the snapshot check, which this config makes fail, before anything changes
    bad = {**SNAPSHOTS, "subvolumes": {"source": SUBVOLUMES, "target": ["/home/nosuch"]}}
    write_config(source, {**quick, "snapshots": bad})
    run = run_in_pty(source, [*argv, "--yes"], None)
    assert (run.code, run.asked) == (1, 0), run.output[-3000:]
    assert message in run.output
    assert "snapshot check failed: subvolume /home/nosuch does not exist on target" in run.output
    _nothing_changed(sb3, saved)


def test_the_targets_inventory_host_var_moves_its_history(sb: Sandbox) -> None:
    """The agents read and record the history at the target's ``pcswitcher_history_path``."""
    source, target = sb["source"], sb["target"]
    moved = "/root/elsewhere/history.json"
    path = inventory_with(sb, "moved-history", pcswitcher_history_path=moved)
    write_config(
        source,
        sandbox_config({"dummy_success": True}, dummy_success={"source_duration": 0, "target_duration": 0}),
    )
    default_before = read_histories(sb)["target"]
    argv = [PC_SWITCHER, "sync", "target", "-i", str(path), *HISTORY_FLAGS]
    res = source.run(argv, timeout=180, stdin=subprocess.DEVNULL)
    ok_run(res)
    session = run_id_in(res.stdout)
    last = json.loads(target.path(moved).read_text())["last"]
    assert (last["role"], last["peer"], last["session"]) == ("target", "source", session)
    assert read_histories(sb)["target"] == default_before, "the default path was written"
    assert json.loads(source.path(HISTORY).read_text())["last"]["session"] == session
    # the next sync reads it from there: a repeated push, not a first sync
    res = source.run([PC_SWITCHER, "sync", "target", "-i", str(path)], timeout=180, stdin=subprocess.DEVNULL)
    line = assert_one_error_line(res, 2)
    assert "source already pushed to target" in line


def test_the_targets_inventory_host_vars_move_its_snapshots(sb: Sandbox) -> None:
    """The agents take the target's snapshots of ``pcswitcher_snapshots_subvolumes`` in
    ``pcswitcher_snapshots_location`` (the inventory wins over the config); the source's follow the
    config."""
    source, target = sb["source"], sb["target"]
    moved = "/run/pcs-btrfs/moved-snapshots"  # the same btrfs, outside /home and /root
    path = inventory_with(
        sb, "moved-snapshots", pcswitcher_snapshots_location=moved, pcswitcher_snapshots_subvolumes=["/home"]
    )
    write_config(
        source,
        sandbox_config(
            {"dummy_success": True},
            dummy_success={"source_duration": 0, "target_duration": 0},
            snapshots=SNAPSHOTS,
        ),
    )
    try:
        res = source.run([PC_SWITCHER, "sync", "target", "-i", str(path), *HISTORY_FLAGS], timeout=180)
        ok_run(res)
        session = run_id_in(res.stdout)
        names = [p.name for p in target.path(f"{moved}/{session}").iterdir() if "@" in p.name]
        phases = sorted(n.split("@")[0] + " " + n.split(f"@{session}-")[1].split("-")[0] for n in names)
        assert phases == ["home post", "home pre"], names
        assert not target.path(f"{LOCATION}/{session}").exists()
        ours = of_session(snapshot_subvolumes(source), session)
        assert len(ours) == 4, ours  # /home and /root, pre and post, at the config's location
        assert all(p.startswith(f"snapshots/{session}/") for p in ours), ours
    finally:
        sh(target, f"btrfs -q subvolume delete {moved}/*/*@* 2>/dev/null; rm -rf {moved}")
