"""A target whose /home is not on btrfs: the sync stops in validation, in one line that names the
problem and ``snapshots.enabled: false`` as the fix; with that setting the same sync runs."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.integration.helpers import run_sync, write_config
from tests.sandbox import Sandbox

LOCATION = "/run/pcs-btrfs/snapshots"  # on each machine's own btrfs, outside /home
MARKER = "/home/pcs-no-btrfs-marker"


@pytest.fixture
def target_home_not_btrfs(sandbox: Sandbox) -> Sandbox:
    """The target's /home a tmpfs (in its mount namespace only: gone with the machine)."""
    res = sandbox["target"].run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/home"])
    assert res.returncode == 0, res.stderr
    fstype = sandbox["target"].run(["stat", "-f", "-c", "%T", "/home"]).stdout
    assert fstype.strip() == "tmpfs"  # the top mount: what the target's processes see
    return sandbox


def _config(enabled: bool) -> dict[str, object]:
    return {
        "jobs": {"folder_sync": True},
        "folder_sync": {"folders": [{"source": "/home"}]},
        "snapshots": {
            "enabled": enabled,
            "subvolumes": {"source": ["/home"], "target": ["/home"]},
            "location": {"source": LOCATION, "target": LOCATION},
        },
    }


def _problem_lines(res: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (res.stdout + res.stderr).splitlines() if "snapshot check failed:" in line]


def test_target_home_not_on_btrfs_names_snapshots_enabled_false(target_home_not_btrfs: Sandbox) -> None:
    sb = target_home_not_btrfs
    source, target = sb["source"], sb["target"]
    source.path(MARKER).write_text("from the source\n")
    write_config(source, _config(enabled=True))
    res = run_sync(sb)
    assert res.returncode == 1, (res.stdout[-2000:], res.stderr[-2000:])
    assert "Traceback" not in res.stdout + res.stderr
    lines = _problem_lines(res)
    assert lines, res.stdout[-3000:]
    for line in lines:  # the reason, one line each time it is shown: the problem, then the fix
        assert "snapshot check failed: /home on target is not on btrfs: " in line
        reason = re.sub(r", exit code 1$", "", line)  # the end record: `finished: <outcome>, exit code N`
        assert reason.endswith("or set snapshots.enabled: false (no snapshots, no rollback)"), line
        assert "on source" not in line  # the source's /home is btrfs: only the target is named
    assert not target.path(MARKER).exists()  # validation stopped it before any change
    assert target.run(["test", "-e", LOCATION]).returncode == 1
    # the fix it names works
    write_config(source, _config(enabled=False))
    res = run_sync(sb)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-2000:])
    assert target.path(MARKER).read_text() == "from the source\n"
