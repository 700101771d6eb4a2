"""The agent's ``flush``: a real agent process (monitor mode) whose flush is held until the test
releases it — as gigabytes onto a slow disk would hold it — goes on answering pings meanwhile, so
that the driver does not take a long flush for a lost link; then it reports the filesystems it
flushed."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pcswitcher.remote import agent

SLOW_AGENT = """
import os, sys, time
sys.path.insert(0, sys.argv.pop(1))
release = sys.argv.pop(1)
import agent
real = agent.flush_local_filesystems
def slow():
    while not os.path.exists(release):  # held until the test creates the file
        time.sleep(0.01)
    return real()
agent.flush_local_filesystems = slow
sys.exit(agent.main(sys.argv[1:]))
"""


def _read(proc: subprocess.Popen[bytes], deadline: float) -> dict[str, object]:
    assert proc.stdout is not None
    remaining = deadline - time.monotonic()
    ready, _, _ = select.select([proc.stdout], [], [], max(remaining, 0))
    assert ready, "the agent said nothing in time"
    line = proc.stdout.readline()
    assert line, "the agent ended"
    message = json.loads(line)
    assert isinstance(message, dict)
    return message


def _say(proc: subprocess.Popen[bytes], text: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(text.encode())
    proc.stdin.flush()


def test_the_agent_answers_pings_while_it_flushes(tmp_path: Path) -> None:
    run_id = f"flushtest{os.getpid()}"
    release = tmp_path / "release"
    argv = [sys.executable, "-I", "-c", SLOW_AGENT, os.path.dirname(agent.__file__), str(release)]
    argv += ["monitor", "--run", run_id, "--timeout", "20", "--path", str(tmp_path)]
    # unbuffered: select() must see every line that readline() has not consumed yet
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    try:
        deadline = time.monotonic() + 20  # ends a hang; no timing is checked
        assert _read(proc, deadline)["t"] == "hello"
        _say(proc, "flush\nping\n")
        held = [_read(proc, deadline)]
        _say(proc, "ping\n")
        held.append(_read(proc, deadline))
        kinds = [str(message["t"]) for message in held]
        assert kinds == ["hb", "hb"], f"the pings were not answered while the flush was held: {kinds}"
        release.touch()
        flushed = _read(proc, deadline)
        assert flushed["t"] == "flushed", flushed
        with open("/proc/self/mountinfo") as fh:
            assert flushed["mounts"] == agent.local_mounts(fh.read())
        _say(proc, "quit\n")
        assert _read(proc, deadline)["t"] == "bye"
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(agent.run_dir(run_id), ignore_errors=True)  # quit removes it; a failure may not
