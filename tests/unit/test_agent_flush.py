"""The agent's ``flush``: a real agent process (monitor mode) whose flush is slowed down to 2 s — as
gigabytes onto a slow disk would — goes on answering pings meanwhile, so that the driver does not
take a long flush for a lost link; then it reports the filesystems it flushed."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pcswitcher import agent

SLOW_AGENT = """
import sys, time
sys.path.insert(0, sys.argv.pop(1))
import agent
real = agent.flush_local_filesystems
def slow():
    time.sleep(2.0)
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


def test_the_agent_answers_pings_while_it_flushes(tmp_path: Path) -> None:
    run_id = f"flushtest{os.getpid()}"
    argv = [sys.executable, "-I", "-c", SLOW_AGENT, os.path.dirname(agent.__file__)]
    argv += ["monitor", "--run", run_id, "--timeout", "20", "--path", str(tmp_path)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        deadline = time.monotonic() + 10
        assert _read(proc, deadline)["t"] == "hello"
        started = time.monotonic()
        proc.stdin.write(b"flush\nping\n")
        proc.stdin.flush()
        seen: list[tuple[str, float, dict[str, object]]] = []
        while not seen or seen[-1][0] != "flushed":
            message = _read(proc, deadline)
            seen.append((str(message["t"]), time.monotonic() - started, message))
            if message["t"] == "hb" and len(seen) < 3:
                proc.stdin.write(b"ping\n")
                proc.stdin.flush()
        kinds = [kind for kind, _, _ in seen]
        assert kinds[0] == "hb", f"the first ping was answered only after the flush: {kinds}"
        assert kinds.count("hb") >= 2, kinds
        assert seen[-1][1] >= 2.0, "the flush took its 2 s"
        with open("/proc/self/mountinfo") as fh:
            assert seen[-1][2]["mounts"] == agent.local_mounts(fh.read())
        proc.stdin.write(b"quit\n")
        proc.stdin.flush()
        assert _read(proc, deadline)["t"] == "bye"
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(agent.run_dir(run_id), ignore_errors=True)  # quit removes it; a failure may not
