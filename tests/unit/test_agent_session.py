"""The target agent's command line, run here without ssh: a real agent process started as the target's
is (``python3 -c <bootstrap> pcswitcher-agent monitor --run ...``, its source sent first on stdin)
through a real :class:`AgentSession`."""

from __future__ import annotations

import os
import shutil
import sys
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
