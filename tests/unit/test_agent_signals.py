"""A signal to the agent (the parent-death signal when the driver dies, a person's kill) ends its
session the way EOF does: the run's processes swept, its directory removed, ``bye`` said. A driver
that dies sends EOF and the signal at once; the signal must never cut the sweep short. (The handler
used to raise SystemExit: a signal landing in the few instructions between the end of the command
loop and the cleanup's SIG_IGN ended the agent without its sweep. These trials did not hit that
window on the old code; the handler now only notes the signal, so there is no window.)"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pcswitcher.remote import agent
from tests.unit.test_agent_flush import _read

TRIALS = 8


def _start(run_id: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """A monitor agent of ``run_id`` (its silence timeout far away) and a process of the run that
    ignores SIGTERM, so that the sweep needs its SIGKILL round."""
    argv = [sys.executable, "-I", agent.__file__, "monitor", "--run", run_id, "--timeout", "120"]
    proc = subprocess.Popen([*argv, "--path", str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    hello = _read(proc, time.monotonic() + 20)
    assert hello["t"] == "hello", hello
    assert os.path.isdir(agent.run_dir(run_id))
    child = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; echo ignoring; while :; do sleep 1; done"],
        env={**os.environ, agent.TAG: run_id},
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"ignoring\n"  # its trap is set: SIGTERM cannot end it
    return proc, child


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
@pytest.mark.parametrize("with_eof", [True, False], ids=["with EOF", "alone"])
def test_a_signal_ends_the_session_and_sweeps(tmp_path: Path, sig: signal.Signals, with_eof: bool) -> None:
    done = 0
    for trial in range(TRIALS):
        run_id = f"sigtest{os.getpid()}t{trial}"
        proc, child = _start(run_id, tmp_path)
        try:
            assert proc.stdin is not None
            proc.send_signal(sig)
            if with_eof:
                proc.stdin.close()  # as a dying driver: the signal and EOF at once
            deadline = time.monotonic() + 20
            while (message := _read(proc, deadline))["t"] != "bye":
                assert message["t"] != "timeout", message
            assert message["removed"] == [agent.run_dir(run_id)], message
            killed = message["killed"]
            assert isinstance(killed, list)
            assert child.pid in {k["pid"] for k in killed}, message
            assert proc.wait(10) == 0
            assert child.wait(10) == -signal.SIGKILL
            assert not os.path.exists(agent.run_dir(run_id))
            done += 1
        finally:
            for p in (proc, child):
                if p.poll() is None:
                    p.kill()
                    p.wait()
            shutil.rmtree(agent.run_dir(run_id), ignore_errors=True)
    assert done == TRIALS
