"""Commands that only read leave nothing in the state directory; ``snapshots list`` on a machine
without btrfs says why there are no snapshots and what to set; the commands that change snapshots
prune old run directories. On sandbox machines: their ``/`` is the host's (not btrfs), their
``/root`` a fresh btrfs with no state directory."""

from __future__ import annotations

import json
import subprocess

import yaml

from tests.integration.helpers import CONFIG, STATE, run_cli, write_config
from tests.sandbox import Sandbox

#: The default snapshot settings: /.snapshots/pc-switcher, on the host's (not btrfs) file system.
DEFAULTS = "jobs:\n  dummy_success: true\n"
DISABLED = DEFAULTS + "snapshots:\n  enabled: false\n"


def state_entries(sb: Sandbox) -> list[str]:
    root = sb["source"].path(STATE)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def test_read_only_commands_leave_no_state(sb: Sandbox) -> None:
    write_config(sb["source"], DEFAULTS)
    assert not sb["source"].path(STATE).exists()
    inventory = str(sb.inventory_path)
    for args, code in [
        ([], 0),
        (["--help"], 0),
        (["--version"], 0),
        (["completion", "bash"], 0),
        (["logs"], 0),
        (["logs", "--last"], 2),
        (["logs", "20260101T000000Z-abcd"], 2),
        (["config", "check"], 0),
        (["config", "check", "-c", "/root/nope.yml"], 2),
        (["config", "reference"], 0),
        (["snapshots", "list"], 0),
        (["snapshots", "list", "--json"], 0),
        (["snapshots", "list", "target", "-i", inventory], 0),
        (["snapshots", "cleanup", "--dry-run"], 0),
        (["sync", "--help"], 0),
    ]:
        result = run_cli(sb, *args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr, args
        assert state_entries(sb) == [], args
        assert not sb["source"].path(STATE).exists(), args
        assert list(sb["source"].path("/tmp").glob("pcswitcher-*")) == [], args


def test_snapshots_list_without_btrfs_says_why_and_what_to_set(sb: Sandbox) -> None:
    write_config(sb["source"], DEFAULTS)
    result = ok(run_cli(sb, "snapshots", "list"))
    lines = [line.split(" ", 2)[2] if line[:4].isdigit() else line for line in result.stdout.splitlines()]
    assert lines[0] == "source: 0 session(s)", lines
    note = " ".join(" ".join(lines[1:]).split())
    assert "the snapshot location /.snapshots/pc-switcher on source is not on a btrfs file system" in note
    assert f"Set `snapshots.enabled: false` in {CONFIG}" in note
    assert "snapshots.location.source" in note
    # with TARGET: both machines, each naming its own setting
    listed = ok(run_cli(sb, "snapshots", "list", "target", "-i", str(sb.inventory_path), "--json"))
    report = json.loads(listed.stdout)
    assert report["machines"] == {"target": [], "source": []}
    assert "on target is not on a btrfs file system" in report["notes"]["target"]
    assert "snapshots.location.target" in report["notes"]["target"]
    assert "on source is not on a btrfs file system" in report["notes"]["source"]
    assert "snapshots.location.source" in report["notes"]["source"]


def test_snapshots_list_with_snapshots_disabled(sb: Sandbox) -> None:
    write_config(sb["source"], DISABLED)
    report = json.loads(ok(run_cli(sb, "snapshots", "list", "--json")).stdout)
    assert report["machines"] == {"source": []}
    assert report["notes"]["source"].startswith(
        f"none: snapshots are disabled (snapshots.enabled: false in {CONFIG})"
    )


def test_a_snapshot_cleanup_prunes_old_run_dirs(sb: Sandbox) -> None:
    """The state dir keeps the 20 newest run directories; the cleanup's own run is one of them."""
    config = yaml.safe_load(DEFAULTS)
    config["snapshots"] = {"location": {"source": "/root/snaps"}}  # on the machine's btrfs
    write_config(sb["source"], config)
    runs = sb["source"].path(STATE) / "runs"
    old = [f"202001{day:02d}T000000Z-abcd" for day in range(1, 26)]
    for name in old:
        (runs / name / "01-job-sync").mkdir(parents=True)
    (runs / "keep-me").mkdir()
    ok(run_cli(sb, "snapshots", "cleanup"))
    left = sorted(p.name for p in runs.iterdir())
    assert "keep-me" in left
    left.remove("keep-me")
    assert len(left) == 20
    assert left[:19] == old[6:]
    assert left[19] > old[-1]  # the cleanup's own session
