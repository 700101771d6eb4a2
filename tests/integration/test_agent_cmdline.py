"""The target's agent starts with a short command line that names it and its run, not its source code
(a user's ``pgrep -f``/``pkill -f`` pattern on the target must not match words inside the agent)."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import psutil

from pcswitcher.remote.agent import AGENT_NAME
from tests.integration.helpers import (
    ObservedSync,
    dummy_config,
    in_namespace_pid,
    leftovers,
    write_config,
)
from tests.sandbox import Sandbox

SOURCE_WORDS = (b"def sweep", b"find_run_processes", b"import argparse", b"PCSWITCHER_RUN_ID")


def _agents(sb: Sandbox) -> list[psutil.Process]:
    found = []
    for proc in sb.machines["target"].extra_processes():
        with contextlib.suppress(psutil.Error):
            if AGENT_NAME in proc.cmdline():
                found.append(proc)
    return found


def test_the_target_agents_command_line_is_short_and_names_it_and_the_run(sb: Sandbox) -> None:
    source, target = sb.machines["source"], sb.machines["target"]
    write_config(source, dummy_config(source_duration=0, target_duration=3))
    run = ObservedSync.start(sb)
    try:
        run.wait_task("Work on the target")  # mid-run: the agent serves the driver
        agents = _agents(sb)
        assert len(agents) == 1, [p.cmdline() for p in agents]
        cmdline = Path(f"/proc/{agents[0].pid}/cmdline").read_bytes()
        args = cmdline.split(b"\0")
        assert args[args.index(AGENT_NAME.encode()) + 1 : args.index(b"--run") + 2] == [
            b"monitor",
            b"--run",
            run.run_id.encode(),
        ]
        assert not any(word in cmdline for word in SOURCE_WORDS), cmdline
        # about 200 with the sandbox's interpreter path, disk paths and host name (the source: 36 KB)
        assert len(cmdline) < 256, cmdline
        # what a user on the target sees
        shown = target.run(
            ["ps", "-ww", "-o", "args=", "-p", str(in_namespace_pid(agents[0]))]
        ).stdout.strip()
        assert f"{AGENT_NAME} monitor --run {run.run_id} " in shown
        assert len(shown) < 256, shown
        assert run.wait() == 0, run.output()
    finally:
        if not run.exited():
            run.signal(signal.SIGINT)
            run.wait()
    assert not leftovers(sb)
