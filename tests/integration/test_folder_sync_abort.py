"""Random-moment Ctrl+C during the folder_sync job: exit 130 and nothing of the run left anywhere.

Each trial starts ``pc-switcher sync --only folder_sync`` (a 240 MB file pushed at 15 MB/s, so the
run takes ~18 s, longer than the latest interrupt at 16 s), sends SIGINT to the driver at a random
moment of its run (validation, rsync start-up, mid-transfer), and checks: exit code 130; on both
machines no process beyond the baseline (no rsync sender, no rsync receiver under the target's sshd,
no wrapper, no tagged process) and no ``/tmp/pcswitcher-*`` directory. The seed is printed
(``PCS_FOLDER_ABORT_SEED`` replays a set, ``PCS_FOLDER_ABORT_TRIALS`` sizes it, default 5).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator

import pytest

from tests import needs
from tests.integration.folder_sync_helpers import folder_config, rsync_processes, sh
from tests.integration.helpers import describe, start_sync, tagged, wait_until_clean, write_config
from tests.sandbox import Sandbox


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    needs.root("sandbox machines use namespaces, loop devices and mounts")
    with Sandbox(size="2G") as sandbox:
        sandbox.add("source")
        sandbox.add("target")
        sh(
            sandbox["source"],
            "mkdir -p /home/user/docs && head -c 240000000 /dev/urandom > /home/user/big"
            " && for i in $(seq 1 300); do echo $i > /home/user/docs/f$i; done",
        )
        write_config(sandbox["source"], folder_config([{"source": "/home"}], rsync_args=["--bwlimit=15m"]))
        yield sandbox


def test_random_ctrl_c_during_folder_sync(sb: Sandbox) -> None:
    trials = int(os.environ.get("PCS_FOLDER_ABORT_TRIALS") or 5)
    seed = int(os.environ.get("PCS_FOLDER_ABORT_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"\nfolder_sync abort trials: PCS_FOLDER_ABORT_SEED={seed} PCS_FOLDER_ABORT_TRIALS={trials}")
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    source, target = sb["source"], sb["target"]
    problems: list[str] = []
    for trial in range(trials):
        sh(target, "rm -rf /home/user")  # every trial transfers the whole file again
        delay = rng.uniform(0.5, 16.0)
        sync = start_sync(sb, "--only", "folder_sync")
        time.sleep(delay)  # the behaviour under test: Ctrl+C at a random moment of the sync
        rsync_seen = bool(rsync_processes(target))
        sync.signal(signal.SIGINT)
        rc, out = sync.wait(90)
        label = f"trial {trial} (delay {delay:.2f} s, target rsync running: {rsync_seen})"
        print(f"{label}: rc {rc}")
        if rc != 130:
            problems.append(f"{label}: exit code {rc}\n{out[-2000:]}")
        for machine in (source, target):
            left = wait_until_clean(machine, 10)
            if left:
                problems.append(f"{label}: {machine.name} has processes left: {left}")
            if rsync_processes(machine) or tagged(machine):
                problems.append(f"{label}: {machine.name} rsync/tagged: {describe(tagged(machine))}")
            dirs = sh(machine, "ls -d /tmp/pcswitcher-* 2>/dev/null || true").stdout.split()
            if dirs:
                problems.append(f"{label}: {machine.name} run dirs left: {dirs}")
    assert not problems, f"seed {seed}:\n" + "\n".join(problems)
