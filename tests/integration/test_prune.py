"""Snapshot sessions are pruned after every successful sync (issue 12, "Snapshots must not fill the
disk"), on real sandbox machines with btrfs snapshots, through the real ``pc-switcher sync``.

``snapshots.keep``/``older_than`` apply on both machines after the post-sync snapshots, in the same
playbook run; never the session just taken, never the newest session with pre-sync snapshots (a
rollback's default); only what pc-switcher made (docs/safety.md#pruning).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.helpers import STATE, leftovers, sandbox_config, sync_argv, write_config
from tests.integration.test_snapshots import LOCATION, SUBVOLUMES, cli, sessions_of, sh
from tests.sandbox import Machine, Sandbox

DATA = "/home/user/data"
KEEP = 2


def config(keep: int = KEEP, **snapshots: Any) -> dict[str, Any]:
    # folder_sync alone: one small file per sync (a sync of dummy_success with 0 s loops took 4x as
    # long here), and data to check a rollback with
    return sandbox_config(
        {"folder_sync": True},
        folder_sync={"folders": [{"source": DATA}]},
        snapshots={
            "subvolumes": {"source": SUBVOLUMES, "target": SUBVOLUMES},
            "location": {"source": LOCATION, "target": LOCATION},
            "keep": keep,
            **snapshots,
        },
    )


def wipe_snapshots(machine: Machine) -> None:
    """Every snapshot and session folder of the location gone (a test's own start)."""
    top, name = LOCATION.rsplit("/", 1)
    sh(
        machine,
        f"mkdir -p {LOCATION}; chattr -R -i {LOCATION} 2>/dev/null || true; "
        f"btrfs subvolume list {top} | sed -n 's|.* path ||p' | {{ grep '^{name}/' || true; }} "
        f"| while read -r s; do btrfs -q subvolume delete {top}/$s; done; "
        f"find {LOCATION} -mindepth 1 -delete",
    )


@pytest.fixture(autouse=True)
def clean(sb: Sandbox) -> Iterator[None]:
    """Each test starts with no snapshot, no history, no data, and must leave no process or run dir."""
    for machine in (sb["source"], sb["target"]):
        wipe_snapshots(machine)
        sh(machine, f"rm -rf {DATA} {STATE}/history.json; mkdir -p /home/user")
    assert leftovers(sb) == {}
    yield
    assert leftovers(sb) == {}


def sync(sb: Sandbox, *args: str, version: int | None = None) -> dict[str, Any]:
    """One successful ``pc-switcher sync --json`` (the source's DATA at ``version`` first)."""
    if version is not None:
        sh(sb["source"], f"mkdir -p {DATA} && printf 'version {version}\\n' > {DATA}/file")
    res = sb["source"].run(sync_argv(sb, "--json", *args), timeout=240, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    assert "Traceback" not in res.stdout + res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    data["stderr"] = res.stderr
    return data


def ids(sb: Sandbox) -> dict[str, list[str]]:
    return {side: [s["id"] for s in sessions] for side, sessions in sessions_of(sb).items()}


@pytest.mark.timeout(900)  # N+4 syncs and a rollback, on a shared 2-core machine
def test_syncs_keep_the_newest_sessions_on_both_machines_and_rollback_still_works(sb: Sandbox) -> None:
    write_config(sb["source"], config())
    runs: list[str] = []
    for version in range(KEEP + 3):
        data = sync(sb, version=version)
        runs.append(data["run_id"])
        newest = runs[-KEEP:]
        # after every sync: the newest KEEP sessions, the one just taken among them
        assert ids(sb) == {"target": newest, "source": newest}, version
        gone = runs[-KEEP - 1 : -KEEP] if len(runs) > KEEP else []
        for side in ("target", "source"):
            assert data["snapshots"]["post"][side]["pruned"]["deleted_sessions"] == gone, (version, side)
            for session in gone:
                assert f"{side}: pruned snapshot session {session}" in data["stderr"]
        if gone:
            assert "pruned 2 old snapshot session(s) (target 1, source 1; snapshots.keep 2)" in data["stderr"]
    # nothing of the pruned sessions is left: no folder, no subvolume
    for machine in (sb["source"], sb["target"]):
        listing = sh(machine, f"ls -A {LOCATION}; btrfs subvolume list -o /run/pcs-btrfs")
        for session in runs[:-KEEP]:
            assert session not in listing, machine.name
    # the log file of a run has the deleted sessions (INFO) too
    log = sb["source"].path(f"{STATE}/logs/{runs[-1]}.jsonl").read_text()
    records = [json.loads(line) for line in log.splitlines()]
    assert {(r.get("level"), r.get("pruned_session")) for r in records if r.get("pruned_session")} == {
        ("INFO", runs[-KEEP - 1])
    }
    # a rollback without --session goes back to the newest pre-sync session: the last sync's
    assert sb["target"].path(f"{DATA}/file").read_text() == f"version {KEEP + 2}\n"
    res = cli(sb, "rollback", "target", "-i", str(sb.inventory_path), "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"to session {runs[-1]} (pre snapshots)" in res.stdout
    assert sb["target"].path(f"{DATA}/file").read_text() == f"version {KEEP + 1}\n"
    # the rollback's session (no pre snapshot) is now the newest: the next sync keeps the session
    # it takes and prunes the oldest; the replaced state of the rollback goes with keep 2
    data = sync(sb, version=9)
    target = sessions_of(sb)["target"]
    assert [s["id"] for s in target][-1] == data["run_id"]
    assert len(target) == KEEP
    assert ids(sb)["source"] == [runs[-1], data["run_id"]]


@pytest.mark.timeout(900)
def test_pruning_off_keeps_every_session(sb: Sandbox) -> None:
    write_config(sb["source"], config(prune=False))
    results = [sync(sb, version=v) for v in range(KEEP + 3)]
    runs = [data["run_id"] for data in results]
    assert ids(sb) == {"target": runs, "source": runs}
    for data in results:
        assert "prune" not in data["stderr"]
        for side in ("target", "source"):
            assert "pruned" not in data["snapshots"]["post"][side]


@pytest.mark.timeout(600)
def test_dry_run_prunes_nothing_and_tells_what_it_would(sb: Sandbox) -> None:
    write_config(sb["source"], config(keep=KEEP + 3))
    runs = [sync(sb, version=v)["run_id"] for v in range(KEEP + 1)]
    write_config(sb["source"], config(keep=1))
    before = {m.name: sh(m, f"ls -lAR --time-style=+%s {LOCATION}") for m in (sb["source"], sb["target"])}
    data = sync(sb, "--dry-run", version=8)
    assert ids(sb) == {"target": runs, "source": runs}
    after = {m.name: sh(m, f"ls -lAR --time-style=+%s {LOCATION}") for m in (sb["source"], sb["target"])}
    assert after == before
    # keep 1 is the session the dry run would have taken: every older one would go
    for side in ("target", "source"):
        assert data["snapshots"]["post"][side]["pruned"]["deleted_sessions"] == runs
        for session in runs:
            assert f"{side}: would prune (dry-run) snapshot session {session}" in data["stderr"]


# Things in the snapshot location that pc-switcher did not make, or that changed since: an old date
# each, so that the retention would pick them; none may be deleted.
FOREIGN = r"""
set -euo pipefail
L={loc}
top=/run/pcs-btrfs
meta() {{
  printf '{{"session": "%s", "kind": "sync", "subvolumes": {{"home": "/home"}}}}\n' "$1" \
    > "$L/$1/pc-switcher-session.json"
}}
# a writable snapshot (made writable after it was taken)
s=20000101T000000Z-0001; mkdir -p $L/$s; meta $s
btrfs -q subvolume snapshot /home $L/$s/home@$s-pre-20000101T000000Z
# a read-only snapshot without the session file
s=20000102T000000Z-0002; mkdir -p $L/$s
btrfs -q subvolume snapshot -r /home $L/$s/home@$s-pre-20000102T000000Z
# a read-only subvolume that is no snapshot, with a session file naming it
s=20000103T000000Z-0003; mkdir -p $L/$s; meta $s
btrfs -q subvolume create $L/$s/home@$s-pre-20000103T000000Z
touch $L/$s/home@$s-pre-20000103T000000Z/precious
btrfs property set -ts $L/$s/home@$s-pre-20000103T000000Z ro true
# a session folder that is a symlink to a victim elsewhere, with a valid-looking session inside
s=20000104T000000Z-0004; mkdir -p $top/victim/$s
printf '{{"session": "%s", "subvolumes": {{"home": "/home"}}}}\n' $s > $top/victim/$s/pc-switcher-session.json
btrfs -q subvolume snapshot -r /home $top/victim/$s/home@$s-pre-20000104T000000Z
ln -s $top/victim/$s $L/$s
# a snapshot of a subvolume the session file does not name
s=20000105T000000Z-0005; mkdir -p $L/$s; meta $s
btrfs -q subvolume snapshot -r /root $L/$s/root@$s-pre-20000105T000000Z
# an old valid session with a symlink beside its snapshot, to a read-only snapshot outside
s=20000106T000000Z-0006; mkdir -p $L/$s; meta $s
btrfs -q subvolume snapshot -r /home $L/$s/home@$s-pre-20000106T000000Z
btrfs -q subvolume snapshot -r /home $top/victim/outside
ln -s $top/victim/outside $L/$s/home@$s-post-20000106T000001Z
"""


def test_only_what_pc_switcher_made_is_pruned(sb: Sandbox) -> None:
    target = sb["target"]
    sh(target, f"rm -rf /run/pcs-btrfs/victim; mkdir -p {LOCATION}")
    sh(target, FOREIGN.format(loc=LOCATION))
    foreign = [f"2000010{day}T000000Z-000{day}" for day in (1, 2, 3, 5)]
    write_config(sb["source"], config(keep=1))
    data = sync(sb, version=1)
    info = data["snapshots"]["post"]["target"]["pruned"]
    # the valid old session went (its snapshot), the symlink beside it and what it points to stay
    assert info["deleted_sessions"] == ["20000106T000000Z-0006"]
    old = f"{LOCATION}/20000106T000000Z-0006"
    assert info["deleted"] == [f"{old}/home@20000106T000000Z-0006-pre-20000106T000000Z"]
    sh(target, f"test -L {old}/home@20000106T000000Z-0006-post-20000106T000001Z")
    sh(target, "btrfs subvolume show /run/pcs-btrfs/victim/outside >/dev/null")
    # the symlinked session is not even seen; its target is intact
    sh(target, "btrfs subvolume show /run/pcs-btrfs/victim/*/home@20000104T000000Z-0004-pre-* >/dev/null")
    # every other foreign thing is left, each with its reason in a warning
    skipped = {item["session"]: item["reason"] for item in info["skipped"]}
    assert set(skipped) == set(foreign), skipped
    assert "not read-only" in skipped["20000101T000000Z-0001"]
    assert "pc-switcher-session.json" in skipped["20000102T000000Z-0002"]
    assert "not a snapshot" in skipped["20000103T000000Z-0003"]
    assert "of no subvolume" in skipped["20000105T000000Z-0005"]
    for session in foreign:
        sh(target, f"ls {LOCATION}/{session}/ | grep -q @{session}-")
        assert f"snapshot session {LOCATION}/{session} left alone" in data["stderr"]
    sh(target, f"test -e {LOCATION}/20000103T000000Z-0003/home@*/precious")
    sh(target, "btrfs -q subvolume delete /run/pcs-btrfs/victim/outside /run/pcs-btrfs/victim/*/home@*")
    sh(target, "rm -rf /run/pcs-btrfs/victim")


def test_a_failed_prune_is_a_warning_not_a_failed_sync(sb: Sandbox) -> None:
    write_config(sb["source"], config(keep=1))
    first = sync(sb, version=1)["run_id"]
    stuck = f"{LOCATION}/{first}"
    sh(sb["target"], f"chattr +i {stuck}")  # its snapshots cannot be unlinked from it
    try:
        data = sync(sb, version=2)
        assert data["exit_code"] == 0
        assert data["outcome"] == "sync to target completed"
        lines = data["stderr"].splitlines()
        warning = next(line for line in lines if "pruning old snapshot sessions failed" in line)
        assert first in warning
        assert "the sync itself succeeded" in warning
        assert "`pc-switcher snapshots cleanup target`" in warning
        # the source pruned as usual; the target kept the stuck session
        assert ids(sb) == {"target": [first, data["run_id"]], "source": [data["run_id"]]}
        assert sb["target"].path(f"{DATA}/file").read_text() == "version 2\n"
    finally:
        sh(sb["target"], f"chattr -i {stuck}")
    # what the warning says works
    res = cli(sb, "snapshots", "cleanup", "target", "-i", str(sb.inventory_path), "--keep", "1")
    assert res.returncode == 0, res.stderr
    assert ids(sb)["target"] == [data["run_id"]]
