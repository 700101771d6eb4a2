"""folder_sync's rsync wrapper (roles/folder_sync/files/folder_sync_rsync.py) reads rsync's output
however it arrives: the result and the progress lines do not depend on how the output is chunked,
and none of the per-file progress2 lines it skips changes what it reports. It gives an rsync older
than 3.2.0 ``--info=progress2``, and asks a newer one for its progress by signal instead."""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.unit.role_files import load_role_file

WRAPPER = Path(__file__).parents[2] / "roles" / "folder_sync" / "files" / "folder_sync_rsync.py"

# A stand-in for rsync: answers --version with $STAND_IN_VERSION (as rsync does), keeps the options
# it was given (the arguments starting with --) in FILE.argv, writes FILE (the first other argument)
# to stdout in chunks of random size (seed: the second; 0 = all at once), pausing now and then, and
# exits with the third.
WRITER = r"""
import os, random, sys, time
if sys.argv[1:] == ["--version"]:
    print("rsync  version " + os.environ["STAND_IN_VERSION"] + "  protocol version 31")
    sys.exit(0)
options = [arg for arg in sys.argv[1:] if arg.startswith("--")]
sys.argv[1:] = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
with open(sys.argv[1] + ".argv", "w") as kept:
    kept.write("\n".join(options))
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


def stand_in(tmp_path: Path, script: str) -> str:
    """``script`` as an executable file run by this Python (a stand-in for rsync)."""
    path = tmp_path / "rsync-stand-in"
    path.write_text(f"#!{sys.executable}\n{script}")
    path.chmod(0o755)
    return str(path)


def run_wrapper(tmp_path: Path, seed: int, rc: int = 0, deleted: int = 3) -> Outcome:
    """The wrapper's exit code, its result (stdout) and its progress lines, for ``rsync_output``
    written by ``WRITER`` with ``seed`` (a stand-in for rsync 3.1.3: given --info=progress2)."""
    output = tmp_path / f"rsync-{seed}.out"
    output.write_bytes(rsync_output(deleted))
    command = ["--report", "5", "--", stand_in(tmp_path, WRITER), str(output), str(seed), str(rc)]
    res, lines = wrap(command, tmp_path / f"progress-{seed}.jsonl", STAND_IN_VERSION="3.1.3")
    # no --scan-keys: no total of its own, so rsync lists every file first
    argv = (tmp_path / f"rsync-{seed}.out.argv").read_text().split("\n")
    assert argv == ["--info=progress2", "--no-inc-recursive"]
    return res.returncode, json.loads(res.stdout), lines


def wrap(argv: list[str], progress: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    """The wrapper run with ``argv`` (``--label /home/`` first): how it ended, its progress lines."""
    res = subprocess.run(
        [sys.executable, str(WRAPPER), "--label", "/home/", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PCSWITCHER_PROGRESS": str(progress), "PATH": "/usr/bin:/bin", **env},
        check=False,
    )
    return res, [json.loads(line) for line in progress.read_text().splitlines()]


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
    # the last file, the bytes of --stats (400,000 = 390.6 KiB), no rate (the output came at once:
    # the wrapper works the rate out over at least 1 s); no ETA: the display makes the one estimate
    name = f"dir {(FILES - 1) % 7}/file {FILES - 1}.bin"
    assert last == {"percent": 100.0, "item": f"{name} (390.6 KiB, -)"}


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


# A stand-in for rsync 3.2.7: sets its SIGVTALRM handler only after 0.6 s (a signal before would end
# it, as it would end rsync before its start-up set the handler), then prints one progress line per
# signal, the next 10 % each, and ends after the eighth (exit 3 when 20 s pass without them).
# Keeps the options it was given in the file named by its last argument.
SIGNALLED = r"""
import signal, sys, time
if sys.argv[1:] == ["--version"]:
    print("rsync  version 3.2.7  protocol version 31")
    sys.exit(0)
with open(sys.argv[-1], "w") as kept:
    kept.write("\n".join(arg for arg in sys.argv[1:] if arg.startswith("--")))
time.sleep(0.6)
asked = []
signal.signal(signal.SIGVTALRM, lambda *_: asked.append(1))
ends, printed = time.monotonic() + 20, 0
while printed < 8 and time.monotonic() < ends:
    time.sleep(0.01)
    if printed < len(asked):
        printed += 1
        line = f"{printed * 1000:>15,} {printed * 10:3d}%  9.99GB/s    0:00:00 (xfr#{printed}, to-chk=2/10)"
        sys.stdout.write("\r" + line + "\n")
        sys.stdout.flush()
sys.stdout.write("\nNumber of files: 10\nTotal transferred file size: 10,000 bytes\n")
sys.exit(0 if printed == 8 else 3)
"""


def percents(lines: list[Any]) -> list[float]:
    return [line["percent"] for line in lines if "percent" in line]


def assert_rising(lines: list[Any]) -> None:
    """Progress while it ran: at least four percents between 0 and 100, never going back; 100 last."""
    between = [p for p in percents(lines) if 0 < p < 100]
    assert between == sorted(between)
    assert len(set(between)) >= 4, percents(lines)
    assert percents(lines)[-1] == 100.0


def test_rsync_3_2_is_asked_for_its_progress_by_signal(tmp_path: Path) -> None:
    """No --info=progress2 (a line per file); a signal every 0.25 s once the handler is set, each
    answered by one progress line. Fails when a signal comes before the handler (the stand-in
    dies) or none comes (no progress: exit 3)."""
    kept = tmp_path / "argv"
    command = [stand_in(tmp_path, SIGNALLED), "--stats", "--out-format=/%i %n%L", str(kept)]
    res, lines = wrap(["--", *command], tmp_path / "progress.jsonl")
    assert res.returncode == 0, res.stderr
    assert kept.read_text().split("\n") == ["--no-inc-recursive", "--stats", "--out-format=/%i %n%L"]
    assert_rising(lines)
    # the bytes of --stats at the end (10,000 = 9.8 KiB), never rsync's own rate of such a line
    assert [line for line in lines if "item" in line][-1]["item"].startswith("/home/ (9.8 KiB, ")
    assert not any("GB/s" in line.get("item", "") for line in lines)


@pytest.mark.parametrize("scan", [False, True], ids=["whole-list-first", "walk-total"])
def test_a_real_rsync_answers_the_signal(tmp_path: Path, scan: bool) -> None:
    """The machine's rsync (3.2.0 or newer), slowed by --bwlimit to about 4 s: progress lines with
    the percent of the bytes and the rate come while it runs, none from --info=progress2, and the
    copy is whole. ``walk-total``: as the job runs it, with the key scan, whose walk gives the total
    (rsync's incremental recursion); else rsync lists every file first and its percent counts."""
    version = load_role_file("folder_sync/files/folder_sync_rsync.py").rsync_version("rsync")
    assert version >= (3, 2, 0), f"this test needs rsync 3.2.0 or newer, not {version}"
    source, target = tmp_path / "src", tmp_path / "dst"
    for i in range(400):
        (source / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (source / f"d{i % 4}" / f"f{i}").write_bytes(os.urandom(2000))
    rsync = ["rsync", "-a", "--stats", "--out-format=/%i %n%L", "--bwlimit=200"]
    keys = ["--scan-keys", f"{source}/"] if scan else []
    res, lines = wrap(
        [*keys, "--", *rsync, f"{source}/", f"{target}/"],
        tmp_path / "progress.jsonl",
        XDG_STATE_HOME=str(tmp_path / "state"),
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["files_transferred"] == 400
    for i in range(400):
        name = f"d{i % 4}/f{i}"
        assert (target / name).read_bytes() == (source / name).read_bytes()
    assert_rising(lines)
    assert any(line.get("item", "").endswith(" KiB/s)") for line in lines)
    scanned = [line["message"] for line in lines if "key scan" in line.get("message", "")]
    assert scanned == (["/home/: key scan: 5 of 5 directories listed, 781.2 KiB in files"] if scan else [])


@pytest.mark.parametrize(
    ("answer", "version"),
    [
        ('print("rsync  version 3.2.7  protocol version 31")', (3, 2, 7)),
        ('print("rsync  version v3.1.3  protocol version 31")', (3, 1, 3)),
        ('print("rsync  version 3.10.0  protocol version 32")', (3, 10, 0)),  # newer than 3.2, not older
        ('print("Python 3.11.2")', None),  # not rsync: asked by nobody, given --info=progress2
        ('print("openrsync: protocol version 29\\nrsync  version 3.2.7")', None),  # the version must lead
        ("import sys; sys.exit(127)", None),
    ],
)
def test_rsyncs_version(tmp_path: Path, answer: str, version: tuple[int, ...] | None) -> None:
    wrapper = load_role_file("folder_sync/files/folder_sync_rsync.py")
    assert wrapper.rsync_version(stand_in(tmp_path, answer)) == version
    assert wrapper.rsync_version(str(tmp_path / "missing")) is None
    # asked early (the wrapper asks while its key scan runs), read later: the same answer
    asked = wrapper.ask_version(stand_in(tmp_path, answer))
    assert wrapper.rsync_version("unused", asked) == version
    assert asked.returncode is not None  # waited for
    assert wrapper.ask_version(str(tmp_path / "missing")) is None


def _itemized_stream(rng: random.Random) -> list[bytes]:
    """rsync's output lines of a sync: itemized transfers (some with non-UTF-8 names, links' `` ->
    TARGET``), deletions among them, a line too short to be one, progress lines, the stats."""
    parts: list[bytes] = []
    for i in range(3000):
        kind = rng.random()
        if kind < 0.1:
            parts.append(f"/*deleting   old/f{i}".encode())
        elif kind < 0.12:
            parts.append(b"/>f+++++++++ bad\xff\xfename" + str(i).encode())
        elif kind < 0.14:
            parts.append(f"/cL+++++++++ link{i} -> target{i}".encode())
        elif kind < 0.15:
            parts.append(b"/x")
        elif kind < 0.2:
            parts.append(f"{i * 100:>15,} {i // 30:3d}%   10.00MB/s    0:00:01".encode())
        else:
            parts.append(f"/>f+++++++++ dir{i % 9}/file {i}.bin".encode())
    return [*parts, b"", b"Number of files: 3,001 (reg: 3,000, dir: 1)", b"Total file size: 300 bytes"]


@pytest.mark.parametrize(
    ("dry_run", "later", "report", "seed"),
    [
        (False, False, 200, 1),
        (False, False, 0, 2),
        (True, False, 200, 3),
        (True, True, 3, 4),  # a dry run's later pass: only the large files' lines count
        (False, True, 5, 5),
    ],
)
def test_itemized_lines_read_in_bulk_as_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dry_run: bool, later: bool, report: int, seed: int
) -> None:
    """:meth:`Wrapper.lines` counts most itemized lines without parsing each (a sync of many small
    files writes one a file); what it keeps and logs is what :meth:`Wrapper.line` on each line, the
    one-by-one reading, gives: the counts, the sample, the deletions, the current file, the log
    messages. Batches of random size, as the reads come."""
    module = load_role_file("folder_sync/files/folder_sync_rsync.py")
    rng = random.Random(seed)  # noqa: S311 - a reproducible stream, not a secret
    parts = _itemized_stream(rng)
    states = []
    for way in ("one by one", "in batches"):
        monkeypatch.setenv("PCSWITCHER_PROGRESS", str(tmp_path / f"{way}.jsonl"))
        args = SimpleNamespace(base=0.0, span=100.0, label="/home/", report=report, dry_run=dry_run)
        wrapper = module.Wrapper(args)
        wrapper.later = later
        wrapper.large_shown = {f"dir{i % 9}/file {i}.bin" for i in range(0, 3000, 40)} | {"link7"}
        if way == "one by one":
            for part in parts:
                wrapper.line(part.decode("utf-8", errors="replace"))
        else:
            start = 0
            while start < len(parts):
                size = rng.randint(1, 400)
                wrapper.lines(parts[start : start + size])
                start += size
        wrapper.progress.close()
        kept = ("changes", "deleted_seen", "sample", "deletions", "current", "stats", "in_stats")
        states.append(
            ({name: getattr(wrapper, name) for name in kept}, (tmp_path / f"{way}.jsonl").read_text())
        )
    assert states[0] == states[1]
    assert states[0][0]["changes"] > (40 if later and dry_run else 2000)
    assert states[0][0]["current"]


# A stand-in for rsync that writes LINES itemized lines (about 9 MiB: over two of the wrapper's
# FREE_STEP) in pieces of random size, with pauses now and then, then the stats, and exits 0.
MANY_LINES = r"""
import random, sys, time
rng = random.Random(7)
lines = int(sys.argv[-1])
data = b"".join(b"/>f+++++++++ dir %d/file %d.bin\n" % (i % 97, i) for i in range(lines))
data += b"\nNumber of files: %d\nNumber of regular files transferred: %d\n" % (lines, lines)
pos = 0
while pos < len(data):
    size = rng.randint(1, 1 << 17)
    sys.stdout.buffer.write(data[pos:pos + size])
    sys.stdout.buffer.flush()
    pos += size
    if rng.random() < 0.05:
        time.sleep(0.01)
"""


@pytest.mark.parametrize("pidfd", [True, False])
def test_an_output_larger_than_what_is_freed_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pidfd: bool
) -> None:
    """rsync's output goes into a file in memory that the wrapper frees behind what it has read
    (:func:`free_read`): every line of 9 MiB of output still counts, in order, with the pidfd that
    tells rsync's end and without it (Linux before 5.3: the wrapper looks after each wait). Freeing
    what was not read yet, or reading past the end, loses or mangles lines."""
    module = load_role_file("folder_sync/files/folder_sync_rsync.py")
    if not pidfd:
        monkeypatch.setattr(module, "exit_watch", lambda pid: -1)
    monkeypatch.setenv("PCSWITCHER_PROGRESS", str(tmp_path / "progress.jsonl"))
    lines = 280_000
    args = SimpleNamespace(base=0.0, span=100.0, label="/home/", report=3, dry_run=False)
    wrapper = module.Wrapper(args)
    rc, stderr = wrapper.run_one([stand_in(tmp_path, MANY_LINES), str(lines)])
    assert (rc, stderr) == (0, [])
    assert lines * 33 > 2 * module.FREE_STEP
    assert wrapper.changes == lines
    assert wrapper.sample == [f">f+++++++++ dir {i}/file {i}.bin" for i in range(3)]
    assert wrapper.current == f"dir {(lines - 1) % 97}/file {lines - 1}.bin"
    assert wrapper.stats == {"Number of files": lines, "Number of regular files transferred": lines}


def test_free_read_frees_only_what_was_read_in_whole_steps() -> None:
    """What has been read is freed in whole FREE_STEPs (the file keeps its size, so rsync's offset
    stays valid); what has not been read is kept, byte for byte."""
    module = load_role_file("folder_sync/files/folder_sync_rsync.py")
    step = module.FREE_STEP
    fd = module.output_file()
    try:
        data = os.urandom(step // 4) * 10  # 2.5 steps
        os.write(fd, data)
        assert module.free_read(fd, 0, step - 1) == 0  # less than a step read: nothing freed
        before = os.fstat(fd).st_blocks
        assert module.free_read(fd, 0, 2 * step + 100) == 2 * step
        after = os.fstat(fd)
        assert after.st_size == len(data)
        assert (before - after.st_blocks) * 512 == 2 * step
        assert os.pread(fd, len(data), 2 * step) == data[2 * step :]
        assert os.pread(fd, 16, 0) == bytes(16)  # freed: reads as zeros (never read again)
        assert module.free_read(fd, 2 * step, 2 * step + 200) == 2 * step  # nothing more to free
    finally:
        os.close(fd)


def test_the_exit_watch_is_readable_once_rsync_has_ended_and_only_then() -> None:
    """The wait between reads of rsync's output is on this pidfd: it must not wake while rsync runs
    (the reads would no longer come once a PROGRESS_INTERVAL), and must wake once rsync has ended
    (the run's end would wait out the interval)."""
    wrapper = load_role_file("folder_sync/files/folder_sync_rsync.py")
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    ended = wrapper.exit_watch(proc.pid)
    assert ended >= 0, "no pidfd on this kernel (Linux 5.3 or newer has it)"
    try:
        assert select.select([ended], [], [], 0.2)[0] == [], "readable while the process runs"
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
        assert select.select([ended], [], [], 5)[0] == [ended], "not readable after the process ended"
    finally:
        os.close(ended)
    assert wrapper.exit_watch(proc.pid) == -1  # reaped: no such process, the plain pause instead


def _progress(done: int, pct: int, chk: str = "ir-chk=1000/1100") -> str:
    return f"{done:>15,} {pct:3d}%   10.00MB/s    0:00:01 (xfr#1, {chk})"


def test_the_percent_is_of_the_walks_total_and_goes_on_through_the_large_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rsync's incremental recursion gives the percent of the files it has listed so far (95 % all
    along here): the first pass's percent is of the key scan's total instead, short of 100 until
    rsync ends; the large files' passes go on from where it stood to 100 by their own bytes."""
    module = load_role_file("folder_sync/files/folder_sync_rsync.py")
    monkeypatch.setenv("PCSWITCHER_PROGRESS", str(tmp_path / "progress.jsonl"))
    wrapper = module.Wrapper(SimpleNamespace(base=0.0, span=100.0, label="/home/", report=3, dry_run=False))
    wrapper.estimate = 10_000
    seen = []
    for done in (2_000, 5_000, 1_000, 12_000):  # a line that comes late never takes the percent back
        wrapper.line(_progress(done, 95))
        seen.append(wrapper.percent)
    assert seen == [20.0, 50.0, 50.0, 99.0]  # more than the walk found (files grew): short of 100
    wrapper.line(_progress(4_000, 95, "to-chk=0/1100"))  # the whole list, the first pass's end
    # the large files (4,000 bytes, not counted above): from the first pass's percent to 100
    wrapper.later, wrapper.bytes_before, wrapper.later_from = True, 4_000, (40.0, 4_000, 4_000)
    wrapper.percent = 40.0
    for done, expected in ((1_000, 55.0), (3_000, 85.0), (4_000, 100.0)):
        wrapper.line(_progress(done, done * 100 // 4_000, "to-chk=0/2"))
        assert wrapper.percent == expected
    # without a total of its own (no key scan, or a folder on NFS): rsync's percent, whole list first
    plain = module.Wrapper(SimpleNamespace(base=0.0, span=100.0, label="/home/", report=3, dry_run=False))
    plain.line(_progress(2_000, 37, "to-chk=10/1100"))
    assert plain.percent == 37.0
    wrapper.progress.close()
    plain.progress.close()


def test_no_total_where_listings_are_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a filesystem whose listings the walk cache does not trust (NFS, FUSE) the walk takes no
    file sizes (an lstat of each file on every sync): no total, so rsync lists every file first."""
    module = load_role_file("folder_sync/files/folder_sync_rsync.py")
    root = tmp_path / "tree"
    (root / "a").mkdir(parents=True)
    (root / "a/f").write_bytes(b"x" * 300)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("PCSWITCHER_PROGRESS", str(tmp_path / "progress.jsonl"))
    args = SimpleNamespace(base=0.0, span=100.0, label="/home/", report=3, dry_run=False)
    counted = module.Wrapper(args)
    counted.scan_keys(f"{root}/")
    assert counted.estimate == 300
    monkeypatch.setattr(module, "_FS_CACHED", set())
    uncounted = module.Wrapper(args)
    uncounted.scan_keys(f"{root}/")
    assert uncounted.estimate == 0
    for wrapper in (counted, uncounted):
        wrapper.progress.close()


# rsync 3.2.7 that keeps whether it was given --no-inc-recursive in the file named by its last argument
# (the destination) and exits with $RC
KEEPS_THE_WAY = r"""
import os, sys
if sys.argv[1:] == ["--version"]:
    print("rsync  version 3.2.7  protocol version 31")
    sys.exit(0)
with open(sys.argv[-1], "w") as kept:
    kept.write("whole list first" if "--no-inc-recursive" in sys.argv else "incremental")
sys.exit(int(os.environ.get("RC", "0")))
"""


def test_the_first_sync_to_a_target_is_incremental_and_the_later_ones_list_first(tmp_path: Path) -> None:
    """rsync's incremental recursion sends while it lists (faster when most files must be sent);
    the whole list first checks faster (a sync after a sync). The wrapper keeps, per folder, the
    destinations an rsync of it succeeded to: the first sync to one is incremental, the later ones
    are not; a dry run or a failed rsync records nothing; a record not this user's 0600 file counts
    for nothing."""
    module = load_role_file("folder_sync/files/folder_sync_rsync.py")
    source, state = tmp_path / "src", tmp_path / "state"
    (source / "a").mkdir(parents=True)
    (source / "a/f").write_bytes(b"x" * 1000)
    rsync = stand_in(tmp_path, KEEPS_THE_WAY)

    def way(destination: str, *flags: str, rc: str = "0") -> str:
        argv = [
            *flags,
            "--scan-keys",
            f"{source}/",
            "--",
            rsync,
            "-a",
            f"{source}/",
            str(tmp_path / destination),
        ]
        res, lines = wrap(argv, tmp_path / "progress.jsonl", XDG_STATE_HOME=str(state), RC=rc)
        assert res.returncode == int(rc), res.stderr
        (tmp_path / "progress.jsonl").unlink()
        kept = (tmp_path / destination).read_text()
        said = (
            "as it sends (the first sync to this target)"
            if kept == "incremental"
            else "first (mostly checking)"
        )
        assert {"level": "DEBUG", "message": f"/home/: rsync lists the files {said}"} in lines
        return kept

    assert way("one", "--dry-run") == "incremental"  # nothing recorded by a dry run
    assert way("one", rc="23") == "incremental"  # nor by an rsync that failed
    assert way("one") == "incremental"
    assert way("one") == "whole list first"
    assert way("two") == "incremental"
    assert way("one") == way("two") == "whole list first"
    odd = "new\nline $(touch pwned) \udcff"  # a destination's name kept as it is (JSON, not a shell)
    assert (way(odd), way(odd)) == ("incremental", "whole list first")
    assert not list(tmp_path.rglob("pwned"))
    record = state / "pc-switcher" / "key-scan" / module.cache_name(str(source), "synced")
    assert record.stat().st_mode & 0o777 == 0o600
    assert json.loads(record.read_text()) == {
        "root": str(source),
        "targets": [str(tmp_path / d) for d in ("one", "two", odd)],
    }
    assert module.load_synced(str(state / "pc-switcher"), "/elsewhere") == []  # another folder's name
    record.chmod(0o644)  # readable by others: not this wrapper's record
    assert way("one") == "incremental"
    wrong_shape = b'{"root": "%s", "targets": {}}' % bytes(source)
    for damaged in (b"[" * 100_000, b"\xff{", b'{"root": 1}', wrong_shape):
        record.write_bytes(damaged)  # hand-made: ignored, then replaced
        assert way("two") == "incremental"
        assert way("two") == "whole list first"
    # without a total of its own (no key scan) always the whole list first
    res, _ = wrap(["--", rsync, "-a", f"{source}/", str(tmp_path / "three")], tmp_path / "progress.jsonl")
    assert res.returncode == 0
    assert (tmp_path / "three").read_text() == "whole list first"
