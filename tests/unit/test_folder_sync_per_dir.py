"""folder_sync's wrapper reads per-directory filter files only where there are some: its look at the
target (files/folder_sync_rsync.py, marker_check), run for real through a stand-in for ssh that
runs the remote command here (as ssh would on the target: through a shell), and what the wrapper
makes of it. The sync over real ssh: tests/integration/test_folder_sync.py."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.unit.role_files import load_role_file

W = load_role_file("folder_sync/files/folder_sync_rsync.py")
WRAPPER = Path(__file__).parents[2] / "roles" / "folder_sync" / "files" / "folder_sync_rsync.py"
MARKER = ".pcswitcher-filter"
RULE = f"--filter=dir-merge {MARKER}"


def _command(ssh: str, source: Path, target: str, *extra: str) -> list[str]:
    return [
        "rsync",
        "-a",
        "--protect-args",
        "--delete",
        "--delete-delay",
        "--timeout=60",
        "--stats",
        "--out-format=/%i %n%L",
        "-e",
        ssh,
        *extra,
        RULE,
        f"{source}/",
        target,
    ]


@pytest.fixture
def ssh(tmp_path: Path) -> str:
    """A stand-in for ssh: drops the host and runs the remote command through a shell, here."""
    script = tmp_path / "fake-ssh"
    script.write_text('#!/bin/sh\nshift\nexec sh -c "$*"\n')
    script.chmod(0o755)
    return str(script)


def test_the_look_goes_through_the_syncs_connection_and_never_puts_a_path_on_a_command_line() -> None:
    command = [
        "rsync",
        "-aHAX",
        "--protect-args",
        "--timeout=30",
        "-e",
        "ssh -p 2222 -o BatchMode=yes -l 'a user'",
        "--rsync-path=sudo -n env PCSWITCHER_RUN_ID=r1 rsync",
        "--filter=- .ssh/id_*",
        RULE,
        "/home/a b/",
        "[::1]:/home/a b/",
    ]
    argv, given = W.marker_check(command, MARKER, "/usr/bin/python3")
    assert argv[:-1] == ["ssh", "-p", "2222", "-o", "BatchMode=yes", "-l", "a user", "::1"]
    program = shlex.quote(W.MARKER_PROGRAM)
    assert argv[-1] == f"sudo -n env PCSWITCHER_RUN_ID=r1 /usr/bin/python3 -I -S -c {program}"
    assert given == b"/home/a b\0" + MARKER.encode()  # on stdin: the folder, a NUL, the name
    assert W.marker_check([*command[:-1], "host:/"], MARKER)[1] == b"/\0.pcswitcher-filter"
    plain = [a for a in command if not a.startswith("--rsync-path")]
    assert W.marker_check(plain, MARKER)[0][-1].startswith("python3 -I -S -c ")
    # not looked at: a local target, a remote rsync that is not a plain "... rsync", a name that is a pattern
    assert W.marker_check([*command[:-1], "/mnt/backup/"], MARKER) is None
    assert W.marker_check([*plain[:-2], "--rsync-path=rsync; x", *plain[-2:]], MARKER) is None
    for name in ("", ".", "..", "*.rules", "a/b", "x[1]", "a b"):
        assert W.marker_check(command, name) is None, name


def _decide(tmp_path: Path, ssh: str, target: str, source_marked: bool) -> tuple[list[str], str, Any]:
    """The wrapper's decision (in process) for the folder tmp_path/src synced to ``target``."""
    progress = tmp_path / "progress.jsonl"
    progress.unlink(missing_ok=True)
    args = argparse.Namespace(base=0.0, span=100.0, label="L", report=10, dry_run=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PCSWITCHER_PROGRESS", str(progress))
        wrapper = W.Wrapper(args)
    wrapper.source_marked = source_marked
    command = _command(ssh, tmp_path / "src", target)
    look = wrapper.look_for_markers(command, MARKER, sys.executable)
    assert look is not None
    decided = wrapper.per_dir_filter(command, MARKER, look)
    wrapper.progress.close()
    message = json.loads(progress.read_text().splitlines()[-1])["message"]
    return decided, message, look


def test_the_rule_is_left_out_only_where_neither_machine_has_a_file(tmp_path: Path, ssh: str) -> None:
    (tmp_path / "src").mkdir()
    dst = tmp_path / "dst"
    (dst / "a/b").mkdir(parents=True)
    (dst / "a/f").write_text("x")
    target = f"h:{dst}/"

    decided, message, _ = _decide(tmp_path, ssh, target, source_marked=False)
    assert RULE not in decided
    assert message == f"L: per-directory filter files ({MARKER}) left out: there are none on either machine"
    # the target folder does not exist yet: nothing there either
    decided, message, _ = _decide(tmp_path, ssh, f"h:{tmp_path}/new/", source_marked=False)
    assert RULE not in decided

    (dst / "a/b" / MARKER).write_text("- keep\n")
    decided, message, _ = _decide(tmp_path, ssh, target, source_marked=False)
    assert decided == _command(ssh, tmp_path / "src", target)
    assert message.endswith("read: there are some on the target")

    # on the source: the listing is stopped, the rule stays
    decided, message, look = _decide(tmp_path, ssh, f"h:{tmp_path}/new/", source_marked=True)
    assert RULE in decided
    assert message.endswith("read: there are some on the source")
    assert look.returncode is not None  # waited for: no process left

    # a target that cannot be looked at (its parent is a file) counts as having some
    (tmp_path / "file").write_text("x")
    decided, message, _ = _decide(tmp_path, ssh, f"h:{tmp_path}/file/sub/", source_marked=False)
    assert RULE in decided
    assert "read: the target could not be looked at (NotADirectoryError" in message


def test_a_hostile_target_folder_name_reaches_find_as_it_is(tmp_path: Path, ssh: str) -> None:
    """The folder goes to the target's program on stdin (a NUL after it), never through the shell
    that runs the remote command: a name with a newline, quotes, a command substitution and a byte
    that is not UTF-8 is looked in as it is, and nothing of it is run."""
    (tmp_path / "src").mkdir()
    raw = b'we\'ird\n$(touch pwned) "x" \xff'
    folder = tmp_path / os.fsdecode(raw)
    (folder / "deep").mkdir(parents=True)
    target = f"h:{folder}/"
    decided, message, _ = _decide(tmp_path, ssh, target, source_marked=False)
    assert RULE not in decided, message
    (folder / "deep" / MARKER).write_text("- keep\n")
    decided, message, _ = _decide(tmp_path, ssh, target, source_marked=False)
    assert RULE in decided
    assert message.endswith("read: there are some on the target")
    assert not list(tmp_path.rglob("pwned"))
    assert not Path("pwned").exists()


def _wrapper(tmp_path: Path, ssh: str, first: bool = False) -> tuple[dict[str, Any], list[str]]:
    """The wrapper end to end; ``first``: as a first sync to the target (its record of syncs removed:
    rsync's incremental recursion), else as it comes (the first run incremental, the later ones with
    the whole list first). Its result and the per-directory filter's messages."""
    progress = tmp_path / "progress.jsonl"
    progress.unlink(missing_ok=True)
    for record in tmp_path.glob("pc-switcher/key-scan/*.synced") if first else []:
        record.unlink()
    src = tmp_path / "src"
    command = _command(ssh, src, f"h:{tmp_path}/dst/")
    options = ["--label", "L", "--scan-keys", str(src), "--per-dir-filter", MARKER]
    options += ["--target-python", sys.executable]
    res = subprocess.run(
        [sys.executable, str(WRAPPER), *options, "--", *command],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PCSWITCHER_PROGRESS": str(progress), "PATH": "/usr/bin:/bin", "XDG_STATE_HOME": str(tmp_path)},
        check=False,
    )
    assert res.returncode == 0, res.stderr
    messages = [json.loads(line).get("message", "") for line in progress.read_text().splitlines()]
    ways = [m for m in messages if "rsync lists the files" in m]
    assert len(ways) == 1
    assert not first or ways == ["L: rsync lists the files as it sends (the first sync to this target)"]
    return json.loads(res.stdout), [m for m in messages if "per-directory" in m]


@pytest.mark.parametrize("first", [False, True], ids=["as-it-comes", "every-sync-first"])
def test_the_sync_is_the_same_with_the_rule_or_without(tmp_path: Path, ssh: str, first: bool) -> None:
    """End to end (the wrapper and two real rsyncs): a target's own file protects from deletion, a
    source's keeps a file out; with none left, the rule is left out and the mirror exact. The same
    whichever way rsync lists the files: ``every-sync-first`` makes each sync a first sync to the
    target (incremental recursion), as after a lost record."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "proj/build").mkdir(parents=True)
    (src / "proj/build/out.o").write_text("built")
    (src / "proj/main.c").write_text("code")
    (dst / "local").mkdir(parents=True)
    (dst / "local/mine").write_text("the target's own")
    (dst / "local/other").write_text("gone")
    (dst / "local" / MARKER).write_text(f"- mine\n- {MARKER}\n")

    result, said = _wrapper(tmp_path, ssh, first)
    assert said[-1].endswith("read: there are some on the target")
    assert (dst / "local/mine").exists()
    assert not (dst / "local/other").exists()
    assert result["deleted"] == 1

    (src / "proj" / MARKER).write_text("- build/\n")
    subprocess.run(["rm", "-r", str(dst / "local"), str(dst / "proj")], check=True)
    result, said = _wrapper(tmp_path, ssh, first)
    assert said[-1].endswith("read: there are some on the source")
    assert (dst / "proj/main.c").exists()
    assert not (dst / "proj/build").exists()

    (src / "proj" / MARKER).unlink()
    result, said = _wrapper(tmp_path, ssh, first)
    assert said[-1].endswith("read: there are some on the target")  # the copy sent last time, deleted now
    assert not (dst / "proj" / MARKER).exists()
    assert (dst / "proj/build/out.o").exists()
    result, said = _wrapper(tmp_path, ssh, first)
    assert said[-1].endswith("left out: there are none on either machine")
    assert result["files_transferred"] == 0
    listing = subprocess.run(["diff", "-r", str(src), str(dst)], capture_output=True, text=True, check=False)
    assert listing.returncode == 0, listing.stdout
