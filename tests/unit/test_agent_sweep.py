"""The agent's sweep leaves no parent of a run's process stuck: ``sudo`` (how the target's rsync runs
with ``ansible_become``) stops itself when its child is stopped, to pass job control on; the sweep
freezes the run's processes before it kills them, so without a SIGCONT such a parent, outside the
run, would stay stopped forever, holding the login session (seen with the real sudo in
tests/integration/test_become.py). Here a stand-in parent that behaves like sudo, and a real sweep."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time

import pytest

from pcswitcher.remote import agent


@pytest.fixture
def run_id() -> str:
    """A run tag of this test's own: tests run in parallel (-n auto), and a sweep ends every process
    of its tag, another test's too."""
    return f"20200101T000000Z-{secrets.token_hex(4)}"


# Like sudo without a terminal: runs the command, and when the command stops, stops itself with the
# same signal; continued, it continues the command; it exits when the command has ended.
SUDO_LIKE = """
import os, signal, sys
pid = os.fork()
if pid == 0:
    os.environ["PCSWITCHER_RUN_ID"] = sys.argv[1]
    os.execvp("sh", ["sh", "-c", 'trap "" TERM; echo ready; exec sleep 60'])
while True:
    _, status = os.waitpid(pid, os.WUNTRACED)
    if os.WIFSTOPPED(status):
        os.kill(os.getpid(), os.WSTOPSIG(status))
        os.kill(pid, signal.SIGCONT)
        continue
    sys.exit(0)
"""


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2 :][:1].decode()


def test_sweep_continues_a_parent_that_stopped_with_its_child(run_id: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", SUDO_LIKE, run_id], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline() == b"ready\n"
        (child,) = agent.find_run_processes(run_id)  # the tagged command only, not its parent
        result = agent.sweep(run_id)
        killed = result["killed"]
        assert isinstance(killed, list)
        assert [k["pid"] for k in killed] == [child]
        assert result["remaining"] == []
        assert parent.wait(timeout=10) == 0  # continued, it saw its command end, and exited
    finally:
        if parent.poll() is None:
            state = _state(parent.pid)
            parent.kill()
            parent.wait()
            raise AssertionError(f"the parent was left in state {state}")


def test_sweep_does_not_continue_a_stopped_process_outside_the_run(run_id: str) -> None:
    # a stopped process that is no parent of the run's processes stays as it was
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        other.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while _state(other.pid) != "T":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        parent = subprocess.Popen(
            [sys.executable, "-c", SUDO_LIKE, run_id], stdout=subprocess.PIPE, start_new_session=True
        )
        assert parent.stdout is not None
        assert parent.stdout.readline() == b"ready\n"
        agent.sweep(run_id)
        assert parent.wait(timeout=10) == 0
        assert _state(other.pid) == "T"
    finally:
        other.kill()
        other.wait()
