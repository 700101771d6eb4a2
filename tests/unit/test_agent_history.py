"""The sync history as the agents (and the role's module, same function) read and record it."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pcswitcher.remote import agent
from pcswitcher.remote.agent import HISTORY_KEEP, _history_command, history


def test_read_without_a_file_is_no_history(tmp_path: Path) -> None:
    result = history("read", str(tmp_path / "h.json"))
    assert result == {
        "host": socket.gethostname(),
        "path": str(tmp_path / "h.json"),
        "history": None,
        "problem": "",
        "changed": False,
    }
    assert not (tmp_path / "h.json").exists()


def test_record_writes_atomically_with_mode_0600_and_read_returns_it(tmp_path: Path) -> None:
    path = tmp_path / "state" / "h.json"
    result = history("record", str(path), role="target", peer="laptop", session="20261128T000000Z-aaaa")
    assert result["changed"] is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["h.json"]  # no temp file left
    data = json.loads(path.read_text())
    assert data["last"]["role"] == "target"
    assert data["last"]["peer"] == "laptop"
    assert data["host"] == socket.gethostname()
    assert history("read", str(path))["history"] == data


def test_a_target_record_waits_for_the_data_on_disk_a_source_record_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the flush does to the disk cannot be seen without a power cut; its order can: the
    # target's record must not be written before everything the sync wrote is on disk.
    path = tmp_path / "h.json"
    calls: list[bool] = []
    monkeypatch.setattr(agent, "flush_local_filesystems", lambda: calls.append(path.exists()))
    history("record", str(path), role="target", peer="laptop", session="20261128T000000Z-aaaa")
    assert calls == [False]
    history("record", str(path), role="target", peer="laptop", session="20261128T000000Z-bbbb", check=True)
    history(
        "record", str(tmp_path / "s.json"), role="source", peer="desktop", session="20261128T000000Z-aaaa"
    )
    assert calls == [False]  # neither a check nor a source's record waits
    # the driver has just flushed through the agent's flush command, which answers pings meanwhile
    request = {"action": "record", "path": str(tmp_path / "f.json"), "role": "target", "peer": "p"}
    _history_command("history " + json.dumps({**request, "session": "s1", "flushed": True}))
    assert calls == [False]
    _history_command("history " + json.dumps({**request, "session": "s2", "flushed": "yes"}))
    assert calls == [False, True], "only a JSON true counts"


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /proc rw,nosuid shared:2 - proc proc rw
24 22 0:40 /@home /home rw,relatime shared:3 - btrfs /dev/sdb1 rw,subvol=/@home
25 22 0:40 /@root /root rw,relatime shared:4 - btrfs /dev/sdb1 rw,subvol=/@root
26 22 0:52 / /mnt/nas rw,relatime shared:5 - nfs4 nas:/export rw,vers=4.2
27 22 0:53 / /home/me/remote rw,nosuid shared:6 - fuse.sshfs me@box: rw
28 22 8:33 / /media/my\\040stick rw,relatime - vfat /dev/sdc1 rw
29 22 0:26 / /tmp rw - tmpfs tmpfs rw
"""


def test_the_flush_covers_each_local_filesystem_once_and_no_network_or_fuse_mount() -> None:
    assert agent.local_mounts(MOUNTINFO) == ["/", "/home", "/media/my stick"]


def test_the_flush_of_this_machine_syncs_its_local_filesystems() -> None:
    with open("/proc/self/mountinfo") as fh:
        expected = agent.local_mounts(fh.read())
    assert agent.flush_local_filesystems() == expected  # not [], the sync(2) fallback, when it has any


def test_recording_the_same_session_twice_changes_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "h.json")
    history("record", path, role="source", peer="desk", session="s1")
    before = Path(path).read_text()
    again = history("record", path, role="source", peer="desk", session="s1")
    assert again["changed"] is False
    assert Path(path).read_text() == before
    # the same session in the other role is a new record (a machine synced to itself is refused
    # elsewhere; the file only keeps what it is told)
    assert history("record", path, role="target", peer="desk", session="s1")["changed"] is True


def test_keeps_the_last_entries_only(tmp_path: Path) -> None:
    path = str(tmp_path / "h.json")
    for n in range(HISTORY_KEEP + 5):
        history("record", path, role="source", peer="desk", session=f"s{n}")
    entries = json.loads(Path(path).read_text())["entries"]
    assert len(entries) == HISTORY_KEEP
    assert entries[-1]["session"] == f"s{HISTORY_KEEP + 4}"


def test_check_mode_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    result = history("record", str(path), role="source", peer="desk", session="s1", check=True)
    assert result["changed"] is True
    assert not path.exists()


def test_an_unreadable_file_is_a_problem_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    path.write_text("{not json")
    result = history("read", str(path))
    assert result["history"] is None
    assert "is unreadable" in str(result["problem"])
    assert "error" not in result


def test_bad_requests_are_errors(tmp_path: Path) -> None:
    assert "not absolute" in str(history("read", "relative/h.json")["error"])
    assert "needs role" in str(
        history("record", str(tmp_path / "h.json"), role="", peer="x", session="s")["error"]
    )
    assert "unknown history action" in str(history("drop", str(tmp_path / "h.json"))["error"])


def test_the_agent_command_line(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    request = {"action": "record", "path": str(path), "role": "target", "peer": "p", "session": "s"}
    assert _history_command("history " + json.dumps(request))["changed"] is True
    assert "bad history command" in str(_history_command("history {broken")["error"])
    assert "bad history command" in str(_history_command("history")["error"])


# ------------------------------------------------------------------ a history path that cannot be one


@pytest.mark.parametrize("kind", ["directory", "fifo", "device", "below a file"])
def test_a_history_path_that_is_no_file_is_refused_on_read_and_record_leaving_nothing(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "h.json"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # reading it would block the agent forever
    elif kind == "device":
        path.symlink_to("/dev/zero")  # reading it would never end
    else:
        path.parent.joinpath("file").write_text("x")
        path = tmp_path / "file" / "h.json"
    before = sorted(p.name for p in tmp_path.iterdir())
    for action in ("read", "record"):
        result = history(action, str(path), role="target", peer="laptop", session="20261128T000000Z-aaaa")
        error = str(result["error"])
        assert result["bad_path"] is True
        assert str(path) in error
        assert "set history.path" in error
        assert "pcswitcher_history_path" in error
        assert "\n" not in error
        assert result["changed"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temp file, nothing created


def test_a_failed_rename_leaves_no_temp_file(tmp_path: Path) -> None:
    # the path became a directory after the check (or is one: the writer alone)
    path = tmp_path / "h.json"
    path.mkdir()
    with pytest.raises(IsADirectoryError):
        agent.write_json_atomically(str(path), {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["h.json"]


def test_a_write_that_fails_on_a_full_disk_leaves_no_temp_file(tmp_path: Path) -> None:
    # a real short write: the file size limit (RLIMIT_FSIZE) makes write(2) fail with EFBIG, as a
    # full disk makes it fail with ENOSPC
    script = (
        "import resource, signal, sys\n"
        "from pcswitcher.remote import agent\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        "    agent.write_json_atomically(sys.argv[1], {'x': 'y' * 100000})\n"
        "except OSError as exc:\n"
        "    print(exc.errno)\n"
    )
    path = tmp_path / "h.json"
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "27", out  # EFBIG
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_write_leaves_no_temp_file_and_the_old_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "h.json"
    history("record", str(path), role="source", peer="laptop", session="20261128T000000Z-aaaa")
    old = path.read_text()

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt  # a signal while the data is being written out

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        history("record", str(path), role="source", peer="laptop", session="20261128T000000Z-bbbb")
    assert [p.name for p in tmp_path.iterdir()] == ["h.json"]
    assert path.read_text() == old


def test_the_temp_file_is_never_a_followed_symlink(tmp_path: Path) -> None:
    # a symlink planted at the temp file's name is not written through
    path = tmp_path / "h.json"
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / f"h.json.tmp-{os.getpid()}").symlink_to(victim)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        agent.write_json_atomically(str(path), {"a": 1})
    assert victim.read_text() == "keep"


def test_a_temp_file_of_a_writer_killed_mid_write_goes_with_the_next_write(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    killed = tmp_path / "h.json.tmp-4242"  # SIGKILL between open and rename: nothing can remove it then
    killed.write_text('{"half')
    os.utime(killed, (0, 0))
    fresh = tmp_path / "h.json.tmp-4343"  # a concurrent writer's, just written: not touched
    fresh.write_text("{}")
    planted = tmp_path / "h.json.tmp-4444"  # a symlink by that name is never followed nor removed
    planted.symlink_to(tmp_path / "victim")
    (tmp_path / "victim").write_text("keep")
    os.utime(planted, (0, 0), follow_symlinks=False)
    other = tmp_path / "other.json.tmp-4242"
    other.write_text("{}")
    os.utime(other, (0, 0))
    history("record", str(path), role="source", peer="laptop", session="20261128T000000Z-aaaa")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["h.json", "h.json.tmp-4343", "h.json.tmp-4444", "other.json.tmp-4242", "victim"]
    assert (tmp_path / "victim").read_text() == "keep"
