"""folder_sync's rsync wrapper (roles/folder_sync/files/folder_sync_rsync.py) reads rsync's output
however it arrives: the result and the progress lines do not depend on how the output is chunked,
and none of the per-file progress2 lines it skips changes what it reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

WRAPPER = Path(__file__).parents[2] / "roles" / "folder_sync" / "files" / "folder_sync_rsync.py"

# A stand-in for rsync: writes the file given as argv[1] to stdout in chunks of random size (seed
# argv[2]; 0 = all at once), pausing now and then, and exits with argv[3].
WRITER = r"""
import random, sys, time
data = open(sys.argv[1], "rb").read()
seed = int(sys.argv[2])
rng = random.Random(seed)
pos = 0
while pos < len(data):
    size = len(data) if seed == 0 else rng.randint(1, 300)
    sys.stdout.buffer.write(data[pos:pos + size])
    sys.stdout.buffer.flush()
    pos += size
    if seed and rng.random() < 0.01:
        time.sleep(0.03)  # the behaviour: rsync's output arrives in pieces, with pauses
sys.exit(int(sys.argv[3]))
"""

FILES = 400
SIZE = 1000


def rsync_output(deleted: int = 3) -> bytes:
    """What ``rsync --info=progress2 --stats --out-format='/%i %n%L'`` prints for a small push."""
    out = ["/cd+++++++++ ./"]
    done = 0
    for i in range(FILES):
        out.append(f"/>f+++++++++ dir {i % 7}/file {i}.bin")
        done += SIZE
        pct = done * 100 // (FILES * SIZE)
        # rsync ends each file's progress2 line with \r, not \n
        eta = f"0:00:0{9 - pct // 12}"
        out.append(f"\r{done:>15,} {pct:3d}%   10.00MB/s    {eta} (xfr#{i + 1}, to-chk=0/{FILES})")
    out += [f"/*deleting   old/gone {i}.txt" for i in range(deleted)]
    out += [
        "",
        f"Number of files: {FILES + 1:,} (reg: {FILES:,}, dir: 1)",
        f"Number of deleted files: {deleted}",
        f"Number of regular files transferred: {FILES:,}",
        f"Total file size: {FILES * SIZE:,} bytes",
        f"Total transferred file size: {FILES * SIZE:,} bytes",
        "",
        "sent 412,345 bytes  received 8,001 bytes  840,692.00 bytes/sec",
        f"total size is {FILES * SIZE:,}  speedup is 0.97",
    ]
    return "\n".join(out).encode() + b"\n"


Outcome = tuple[int, dict[str, Any], list[Any]]


def run_wrapper(tmp_path: Path, seed: int, rc: int = 0, deleted: int = 3) -> Outcome:
    """The wrapper's exit code, its result (stdout) and its progress lines, for ``rsync_output``
    written by ``WRITER`` with ``seed``."""
    output = tmp_path / f"rsync-{seed}.out"
    output.write_bytes(rsync_output(deleted))
    writer = tmp_path / "writer.py"
    writer.write_text(WRITER)
    progress = tmp_path / f"progress-{seed}.jsonl"
    stand_in = [sys.executable, str(writer), str(output), str(seed), str(rc)]
    res = subprocess.run(
        [sys.executable, str(WRAPPER), "--label", "/home/", "--report", "5", "--", *stand_in],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PCSWITCHER_PROGRESS": str(progress), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    lines = [json.loads(line) for line in progress.read_text().splitlines()]
    return res.returncode, json.loads(res.stdout), lines


def test_result_and_progress_from_rsyncs_output(tmp_path: Path) -> None:
    rc, result, lines = run_wrapper(tmp_path, seed=0)
    assert rc == 0
    assert result == {
        "rc": 0,
        "files_transferred": FILES,
        "bytes": FILES * SIZE,
        "deleted": 3,
        "changes": FILES + 1 + 3,
        "sample": ["cd+++++++++ ./"] + [f">f+++++++++ dir {i % 7}/file {i}.bin" for i in range(4)],
        "deletions": ["old/gone 0.txt", "old/gone 1.txt", "old/gone 2.txt"],
        "dry_run": False,
        "keys": [],
    }
    deletions = [line["message"] for line in lines if "deleted" in line.get("message", "")]
    assert deletions == [f"/home/: deleted old/gone {i}.txt" for i in range(3)]
    last = [line for line in lines if "percent" in line][-1]
    # the last file, the last progress2 line's bytes (400,000 = 390.6 KiB) and rate; no ETA: the
    # display makes the one estimate, from the percent
    name = f"dir {(FILES - 1) % 7}/file {FILES - 1}.bin"
    assert last == {"percent": 100.0, "item": f"{name} (390.6 KiB, 10.00MB/s)"}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chunking_changes_nothing(tmp_path: Path, seed: int) -> None:
    """Output cut anywhere (inside lines, between \\r and \\n) gives the same result and last line."""
    _, whole, whole_lines = run_wrapper(tmp_path, seed=0)
    rc, chunked, chunked_lines = run_wrapper(tmp_path, seed=seed)
    assert rc == 0
    assert chunked == whole
    assert chunked_lines[-1] == whole_lines[-1]
    messages = [line for line in whole_lines if "level" in line]
    assert [line for line in chunked_lines if "level" in line] == messages


def test_vanished_files_warn_and_keep_rsyncs_exit_code(tmp_path: Path) -> None:
    rc, result, lines = run_wrapper(tmp_path, seed=4, rc=24, deleted=0)
    assert (rc, result["rc"], result["deleted"]) == (24, 24, 0)
    warning = "/home/: some files vanished on the source during the sync"
    assert {"level": "WARNING", "message": warning} in lines
    assert [line for line in lines if "percent" in line][-1]["percent"] == 100.0
