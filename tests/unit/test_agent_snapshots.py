"""The agent's ``snapshots`` command (pcswitcher/remote/agent.py :func:`snapshots`), without btrfs:
what a request may hold (an allowlist), the check's problems on a file system that is not btrfs, and
a real agent process that goes on answering pings while a snapshot works and whose sweep ends what
the snapshot started. The snapshots themselves are taken on sandbox machines' btrfs
(tests/integration/test_snapshots.py, test_safety_sync.py, test_prune.py)."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pcswitcher.remote import agent
from pcswitcher.remote.agent import snapshot_problems, snapshots
from tests.waiting import wait_for

GOOD: dict[str, Any] = {
    "action": "snapshot",
    "phase": "pre",
    "session": "20260101T000000Z-abcd",
    "subvolumes": ["/home"],
    "location": "/.snapshots/pc-switcher",
    "prune": False,
    "keep": 3,
    "older_than": 0,
    "check": True,
}


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"action": "rollback"}, "unknown snapshots action 'rollback'"),
        ({"action": None}, "unknown snapshots action None"),
        ({"subvolumes": "/home"}, "subvolumes must be a list of paths"),
        ({"subvolumes": ["/home", 7]}, "subvolumes must be a list of paths"),
        ({"subvolumes": [""]}, "subvolumes must be a list of paths"),
        ({"location": ""}, "a snapshot location is needed"),
        ({"location": ["/x"]}, "a snapshot location is needed"),
        ({"keep": "3"}, "keep must be int"),
        ({"keep": True}, "keep must be int"),
        ({"older_than": 1.5}, "older_than must be int"),
        ({"prune": "yes"}, "prune must be bool"),
        ({"check": 1}, "check must be bool"),
        ({"phase": "rollback-replaced"}, "phase must be pre or post"),
        ({"session": ""}, "is not a session id"),
        ({"session": "../../etc"}, "is not a session id"),
        ({"session": "a b"}, "is not a session id"),
        ({"session": "-rf"}, "is not a session id"),
        ({"session": "s\n"}, "is not a session id"),
        ({"session": "x" * 65}, "is not a session id"),
        ({"session": "s@pre"}, "is not a session id"),
        ({"location": "relative/dir"}, "snapshot paths must be absolute"),
        ({"subvolumes": ["home"]}, "snapshot paths must be absolute"),
    ],
)
def test_a_request_outside_the_allowlist_is_one_error_and_changes_nothing(
    change: dict[str, Any], error: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    reply = snapshots({**GOOD, "check": False, **change})
    assert error in str(reply.get("error")), reply
    assert reply["changed"] is False
    assert "\n" not in str(reply["error"])
    assert list(tmp_path.iterdir()) == []


def test_a_check_names_every_problem_of_a_machine_without_btrfs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    reply = snapshots(
        {
            **GOOD,
            "action": "validate",
            "subvolumes": [str(home), "/no/such"],
            "location": str(tmp_path / "snaps"),
        }
    )
    problems = [str(p) for p in reply["problems"]]  # type: ignore[attr-defined]
    assert reply["changed"] is False
    assert any(
        f"{home} on " in p and "is not on btrfs" in p and "snapshots.enabled: false" in p for p in problems
    )
    assert any("subvolume /no/such does not exist" in p for p in problems)
    assert any("snapshot location" in p and "is not on btrfs" in p for p in problems)
    assert not (tmp_path / "snaps").exists()


@pytest.mark.parametrize("kind", ["dangling symlink", "symlink to a directory", "file"])
def test_a_location_that_is_not_a_directory_is_a_problem(tmp_path: Path, kind: str) -> None:
    location = tmp_path / "snaps"
    if kind == "file":
        location.write_text("")
    else:
        (tmp_path / "real").mkdir()
        location.symlink_to(tmp_path / ("real" if kind == "symlink to a directory" else "gone"))
    problems = snapshot_problems([], str(location / "pc-switcher"))
    expected = "is not a directory" if kind == "file" else "is a symlink"
    assert any(f"{location} {expected}: set snapshots.location to a directory" in p for p in problems), (
        problems
    )


def test_the_agent_command_line_says_what_is_wrong() -> None:
    work = agent._snapshots_command("snapshots {broken")
    assert callable(work)
    assert "bad snapshots command" in json.dumps(_replies_of(work))
    assert "not a JSON object" in json.dumps(_replies_of(agent._snapshots_command("snapshots [1]")))


def _replies_of(
    work: object,
) -> list[dict[str, Any]]:
    said: list[dict[str, Any]] = []
    real = agent._emit
    agent._emit = said.append  # type: ignore[assignment]
    try:
        work()  # type: ignore[operator]
    finally:
        agent._emit = real
    return said


# A real agent whose snapshot work starts a process of its own (as `btrfs subvolume snapshot` is)
# and is held until the test releases it.
HELD_AGENT = """
import os, sys, time
sys.path.insert(0, sys.argv.pop(1))
release = sys.argv.pop(1)
import agent
def held(request):
    child = __import__("subprocess").Popen(["sleep", "300"])
    while not os.path.exists(release):
        time.sleep(0.01)
    child.kill()
    return {"host": "h", "changed": False, "problems": []}
agent.snapshots = held
sys.exit(agent.main(sys.argv[1:]))
"""


def _read(proc: subprocess.Popen[bytes], deadline: float, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
        assert ready, "the agent said nothing in time"
        line = proc.stdout.readline()
        assert line, "the agent ended"
        message: dict[str, Any] = json.loads(line)
        if message["t"] not in skip:
            return message


def _say(proc: subprocess.Popen[bytes], text: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(text.encode())
    proc.stdin.flush()


def _held_agent(tmp_path: Path, run_id: str) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-I",
        "-c",
        HELD_AGENT,
        os.path.dirname(agent.__file__),
        str(tmp_path / "release"),
    ]
    argv += ["monitor", "--run", run_id, "--timeout", "20", "--path", str(tmp_path)]
    # unbuffered: select() must see every line that readline() has not consumed yet
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)


def _children(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (the snapshot's tool is a child of the worker thread)."""
    return [
        int(c)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for c in (task / "children").read_text().split()
    ]


def test_the_agent_answers_pings_while_a_snapshot_works_and_refuses_a_second(tmp_path: Path) -> None:
    run_id = f"snaptest{os.getpid()}"
    proc = _held_agent(tmp_path, run_id)
    try:
        deadline = time.monotonic() + 20  # ends a hang; no timing is checked
        assert _read(proc, deadline)["t"] == "hello"
        _say(proc, "snapshots " + json.dumps({**GOOD, "action": "validate"}) + "\nping\n")
        assert _read(proc, deadline)["t"] == "hb"
        _say(proc, "snapshots {}\nflush\nping\n")
        busy = [_read(proc, deadline), _read(proc, deadline)]
        assert [m.get("command") for m in busy] == ["snapshots", "flush"], busy
        assert _read(proc, deadline)["t"] == "hb"
        (tmp_path / "release").touch()
        reply = _read(proc, deadline, skip=("hb",))
        assert reply["t"] == "snapshots"
        assert reply["problems"] == []
        _say(proc, "quit\n")
        assert _read(proc, deadline)["t"] == "bye"
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(agent.run_dir(run_id), ignore_errors=True)


def test_a_sweep_during_a_snapshot_ends_what_it_started(tmp_path: Path) -> None:
    """The abort path's sweep (Ctrl+C in a snapshot phase) finds the snapshot's tool by the run tag."""
    run_id = f"snapsweep{os.getpid()}"
    proc = _held_agent(tmp_path, run_id)
    try:
        deadline = time.monotonic() + 20
        assert _read(proc, deadline)["t"] == "hello"
        _say(proc, "snapshots " + json.dumps({**GOOD, "action": "validate"}) + "\n")
        while not _children(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        (child,) = _children(proc.pid)
        tag = f"{agent.TAG}={run_id}".encode()
        # between its fork and its exec the child still shows the agent's environment (without the tag)
        assert wait_for(lambda: tag in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"), 10)
        _say(proc, "sweep\n")
        swept = _read(proc, deadline, skip=("hb",))
        assert swept["t"] == "swept"
        assert child in [k["pid"] for k in swept["killed"]], swept
        (tmp_path / "release").touch()
        _say(proc, "quit\n")
        _read(proc, deadline, skip=("hb", "snapshots"))
        assert proc.wait(5) == 0
        assert not Path(f"/proc/{child}").exists() or b"Z" in Path(f"/proc/{child}/stat").read_bytes()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(agent.run_dir(run_id), ignore_errors=True)
