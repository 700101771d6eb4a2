"""The target agent's command line, run here without ssh: a real agent process started as the target's
is (``python3 -c <bootstrap> pcswitcher-agent monitor --run ...``, its source sent first on stdin)
through a real :class:`AgentSession`."""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcswitcher.jobs.registry import Registry
from pcswitcher.remote import agent
from pcswitcher.remote.agent import AGENT_NAME
from pcswitcher.remote.inventory import Target
from pcswitcher.remote.session import AgentSession, remote_command

SOURCE_WORDS = (b"def sweep", b"find_run_processes", b"import argparse")


@pytest.fixture
def run_id() -> Iterator[str]:
    run = f"sessiontest{os.getpid()}"
    yield run
    shutil.rmtree(agent.run_dir(run), ignore_errors=True)  # quit removes it; a failure may not


def _session(run_id: str, tmp_path: Path) -> AgentSession:
    target = Target(name="t", address="127.0.0.9", python=sys.executable)
    remote, source = remote_command(target, run_id, [str(tmp_path)], 20.0)
    # without --lock SOURCE: this test must not take the sync lock of the machine it runs on
    lock = remote.index("--lock")
    argv = remote[:lock] + remote[lock + 2 :]
    return AgentSession("t", argv, Registry(run_id), "agent:target", preamble=source)


def test_the_agent_runs_from_stdin_with_a_short_command_line(run_id: str, tmp_path: Path) -> None:
    session = _session(run_id, tmp_path)
    session.spawn()
    try:
        assert session.ping()  # sent before the agent has read its source: it must not be swallowed
        hello = session.wait_ready()
        assert session.proc is not None
        assert hello["pid"] == session.proc.pid
        assert session.wait_for("hb", 20) is not None, "the ping sent right after the source was lost"
        assert [figure["path"] for figure in session.disk] == [str(tmp_path)]
        cmdline = Path(f"/proc/{hello['pid']}/cmdline").read_bytes()
        args = cmdline.split(b"\0")
        assert AGENT_NAME.encode() in args
        assert args[args.index(b"--run") + 1] == run_id.encode()
        assert not any(word in cmdline for word in SOURCE_WORDS), cmdline
        assert len(cmdline) < 200 + len(str(tmp_path)) + len(sys.executable), cmdline
        report = session.close()
        assert report is not None
        assert report["t"] == "bye"
        assert session.proc.returncode == 0
    finally:
        session.kill()


def test_without_its_whole_source_the_agent_exits_without_hello(run_id: str, tmp_path: Path) -> None:
    session = _session(run_id, tmp_path)
    session.preamble = session.preamble[:-10]
    session.spawn()
    try:
        session.detach()  # EOF before the whole source came
        assert session.wait_for_any(("hello", "locked"), 20) is None
        assert session.proc is not None
        assert session.proc.wait(20) == 1
        assert not Path(agent.run_dir(run_id)).exists()
    finally:
        session.kill()


def test_a_source_larger_than_a_pipe_does_not_hold_the_driver_while_nobody_reads_it(run_id: str) -> None:
    """ssh reads the agent's source only once its connection is up (a frozen sshd: never). The
    source is larger than a pipe's buffer, so spawning, sending and ending the session must not wait
    for that write (an abort while the agents connect takes its path at once)."""
    source = remote_command(Target(name="t", address="127.0.0.9"), run_id, ["/"], 20.0)[1]
    assert len(source) > 65536, "the agent's source fits a pipe: this test shows nothing"
    session = AgentSession("t", ["sleep", "60"], Registry(run_id), "agent:target", preamble=source)
    spawner = threading.Thread(target=session.spawn, daemon=True)  # a process that never reads stdin
    spawner.start()
    spawner.join(10)
    try:
        assert not spawner.is_alive(), "spawn() waits for the agent's source to be read"
        assert session.send("ping")  # queued behind the source
        assert session.wait_for_any(("hello",), 0.2) is None
        session.detach()  # the end of a session does not wait for the write either
    finally:
        session.kill()
    assert session.proc is not None
    assert session.proc.returncode is not None
