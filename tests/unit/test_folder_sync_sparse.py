"""folder_sync's large-file passes (roles/folder_sync/files/folder_sync_rsync.py ``--sparse-from``)
with the real rsync on this machine (a local source and target: no ssh). The first rsync skips the
files over the threshold and names them; the wrapper sends those with holes in an rsync with
``--sparse`` (they stay sparse) and the others in one without it; the first alone deletes. Hard
links, awkward names (the names come back through rsync's escapes), a file that gains holes, the
dry-run's list, the job's filter rules in every pass, a signal between the passes. As the job runs
it: with the key scan (``--scan-keys``), whose walk gives the progress total, so a first sync with
rsync's incremental recursion (hard links across directories included) and later ones with the whole
file list first."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import wait_for

WRAPPER = Path(__file__).parents[2] / "roles" / "folder_sync" / "files" / "folder_sync_rsync.py"
MIB = 1 << 20
THRESHOLD = 4 * MIB  # the job's is 16 MiB (roles/folder_sync/vars/main.yml): smaller files here
RSYNC = [
    "rsync",
    "-aHAX",
    "--delete",
    "--delete-delay",
    "--numeric-ids",
    "--modify-window=-1",
]
RSYNC += ["--stats", "--out-format=/%i %n%L"]


def sparse(path: Path, size: int, data_at: tuple[int, ...] = (0,)) -> None:
    """A file of ``size`` bytes with 4 KiB of data at each offset of ``data_at``, holes elsewhere."""
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset in data_at:
            fh.seek(offset)
            fh.write(os.urandom(4096))


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def wrapper(
    src: Path, dst: Path, *extra: str, threshold: int = THRESHOLD, dry_run: bool = False
) -> list[str]:
    flags = ["--dry-run"] if dry_run else []
    return [
        sys.executable, str(WRAPPER), "--label", "src", "--sparse-from", str(threshold), *flags,
        "--scan-keys", f"{src}/", "--",
        *RSYNC[:1], *flags, *RSYNC[1:], *extra, f"{src}/", f"{dst}/",
    ]  # fmt: skip


def sync(src: Path, dst: Path, *extra: str, **kw: Any) -> dict[str, Any]:
    progress = src.parent / "progress.jsonl"
    done = subprocess.run(
        wrapper(src, dst, *extra, **kw),
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, "PCSWITCHER_PROGRESS": str(progress)},
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    result: dict[str, Any] = json.loads(done.stdout)
    result["log"] = [json.loads(line) for line in progress.read_text().splitlines()]
    progress.unlink()
    return result


def same_tree(src: Path, dst: Path) -> None:
    """Equal names and contents; links of one inode stay one inode."""
    names = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    assert names == sorted(str(p.relative_to(dst)) for p in dst.rglob("*"))
    inodes: dict[int, int] = {}
    for name in names:
        a, b = src / name, dst / name
        if a.is_file() and not a.is_symlink():
            assert a.read_bytes() == b.read_bytes(), name
            assert inodes.setdefault(a.stat().st_ino, b.stat().st_ino) == b.stat().st_ino, (
                f"{name}: link lost"
            )


# names that rsync prints escaped or that are patterns in a filter rule
AWKWARD = ["sp ace.img", "-lead.img", "star*.img", "q?.img", "[br].img", "back\\slash.img", "esc\\#012.img"]
AWKWARD += ["new\nline.img", "tab\tname.img", "x is over max-size", "ünï.img", "\udcff-not-utf8.img"]


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key scan's walk cache and the record of syncs in the test's directory, never in this
    user's home."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "vm" / "deep [dir]").mkdir(parents=True)
    (src / "docs").mkdir()
    sparse(src / "vm" / "disk.img", 64 * MIB, (0, 32 * MIB))
    os.link(src / "vm" / "disk.img", src / "docs" / "disk-link.img")
    sparse(src / "vm" / "deep [dir]" / "small-holed.img", 2 * MIB, (MIB,))  # under the threshold
    for name in AWKWARD:
        sparse(src / "vm" / name, 8 * MIB, (4 * MIB,))
    (src / "vm" / "star-plain.img").write_bytes(os.urandom(10000))  # what star*.img could match
    (src / "docs" / "note.txt").write_text("hello\n")
    (src / "big.bin").write_bytes(os.urandom(6 * MIB))  # dense, over the threshold
    os.link(src / "big.bin", src / "vm" / "deep [dir]" / "big-link.bin")
    (dst / "old").mkdir(parents=True)
    (dst / "old" / "gone.txt").write_text("bye\n")
    sparse(dst / "gone.img", 8 * MIB)
    return src, dst


def test_large_files_apart_and_the_holed_ones_stay_sparse(tree: tuple[Path, Path]) -> None:
    src, dst = tree
    result = sync(src, dst)
    same_tree(src, dst)
    assert allocated(dst / "vm" / "disk.img") < MIB
    for name in AWKWARD:
        assert allocated(dst / "vm" / name) < MIB, name
    # under the threshold: sent without --sparse, its hole written out (the documented limit)
    assert allocated(dst / "vm" / "deep [dir]" / "small-holed.img") == 2 * MIB
    assert allocated(dst / "big.bin") >= 6 * MIB
    assert sorted(result["deletions"]) == ["gone.img", "old/", "old/gone.txt"]
    assert result["deleted"] == 3
    assert result["files_transferred"] == 17  # 19 files, two of them second links
    messages = [line.get("message", "") for line in result["log"]]
    assert "src: 16 files over 4.0 MiB apart: 14 with holes (with --sparse), 2 without holes" in messages
    # the walk's total (every regular file's size, links each time, as rsync counts them)
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert f"src: key scan: 4 of 4 directories listed, {total / MIB:.1f} MiB in files" in messages
    percents = [line["percent"] for line in result["log"] if "percent" in line]
    assert percents == sorted(percents)
    assert percents[-1] == 100.0
    assert max(percents[:-1]) < 100.0
    again = sync(src, dst)
    assert (again["changes"], again["deleted"], again["files_transferred"]) == (0, 0, 0)


def test_without_the_passes_the_holes_are_lost(tree: tuple[Path, Path]) -> None:
    """The reason for the passes: -aHAX alone fills the holes (the test above is not vacuous)."""
    src, dst = tree
    sync(src, dst, threshold=0)
    assert allocated(dst / "vm" / "disk.img") == 64 * MIB


def test_a_file_that_gains_or_loses_holes(tree: tuple[Path, Path]) -> None:
    src, dst = tree
    sync(src, dst)
    big = src / "big.bin"
    # 5 of its 6 MiB become a hole
    subprocess.run(
        ["fallocate", "--punch-hole", "--offset", str(MIB), "--length", str(5 * MIB), str(big)], check=True
    )
    disk = src / "vm" / "disk.img"
    with open(disk, "r+b") as fh:  # the sparse one is filled: dense now
        fh.write(os.urandom(64 * MIB))
    result = sync(src, dst)
    same_tree(src, dst)
    assert allocated(dst / "big.bin") < 2 * MIB
    assert allocated(dst / "vm" / "deep [dir]" / "big-link.bin") < 2 * MIB  # one inode
    assert allocated(dst / "vm" / "disk.img") >= 64 * MIB
    assert result["files_transferred"] == 2


def test_the_jobs_rules_hold_in_every_pass(tree: tuple[Path, Path]) -> None:
    """An excluded large file is neither sent nor deleted by any pass; a target-only large file in a
    directory of the later passes is deleted by the first (the later ones never delete)."""
    src, dst = tree
    sync(src, dst)
    sparse(src / "vm" / "secret.img", 8 * MIB, (0,))
    (src / "vm" / "deep [dir]" / "private.bin").write_bytes(os.urandom(5 * MIB))
    (dst / "vm" / "kept.img").write_bytes(b"target's own")
    sparse(dst / "vm" / "stale.img", 8 * MIB)
    result = sync(src, dst, "--filter=- /vm/secret.img", "--filter=- private.bin", "--filter=P /vm/kept.img")
    assert not (dst / "vm" / "secret.img").exists()
    assert not (dst / "vm" / "deep [dir]" / "private.bin").exists()
    assert (dst / "vm" / "kept.img").read_bytes() == b"target's own"
    assert not (dst / "vm" / "stale.img").exists()
    assert result["deletions"] == ["vm/stale.img"]


def test_dry_run_lists_the_large_files_and_changes_nothing(tree: tuple[Path, Path]) -> None:
    src, dst = tree
    result = sync(src, dst, dry_run=True)
    assert sorted(os.listdir(dst)) == ["gone.img", "old"]
    sample = [line.split(" ", 1)[1] for line in result["sample"]]
    # each once: the later passes list the large files, not again what the first listed
    assert len(sample) == len(set(sample)), sample
    assert "vm/disk.img" in sample
    assert "docs/disk-link.img => vm/disk.img" in sample
    assert "big.bin => vm/deep [dir]/big-link.bin" in sample or "big.bin" in sample
    assert "vm/deep [dir]/small-holed.img" in sample
    assert "vm/new\\#012line.img" in sample
    assert len(sample) == 1 + 3 + 3 + 16  # ./, docs/ vm/ deep/, 3 small files, 16 large ones
    assert result["deleted"] == 3
    assert result["changes"] == len(sample) + 3


def test_a_signal_during_the_first_rsync_starts_no_further_one(tree: tuple[Path, Path]) -> None:
    """SIGTERM while the first rsync runs: no later pass starts, even when that rsync ends well
    (a stand-in that ignores SIGTERM, so that the signal falls between the passes); the wrapper
    exits 20 (rsync's "received SIGINT or SIGTERM"), the reason on stderr."""
    src, dst = tree
    later, first = src.parent / "later-pass-ran", src.parent / "first-pass-runs"
    stand_in = src.parent / "rsync"
    stand_in.write_text(
        "#!/bin/sh\n"
        'case "$*" in --version) echo "rsync  version 3.2.7  protocol version 31"; exit 0;; esac\n'
        'case "$*" in *--max-size=*) trap "" TERM; '
        f'touch {first}; echo "big.bin is over max-size"; sleep 1; exit 0;; esac\n'
        f"touch {later}\n"
    )
    stand_in.chmod(0o755)
    argv = wrapper(src, dst)
    argv[argv.index("rsync")] = str(stand_in)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert wait_for(first.exists, 10)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 20, err
    assert json.loads(out)["rc"] == 20
    assert b"stopped by a signal before the rsync of the large files" in err
    assert not later.exists()
    # without the signal the same stand-in's later pass runs (the check above is not vacuous)
    assert subprocess.run(argv, capture_output=True, check=False).returncode == 0
    assert later.exists()


def test_a_later_rsync_gets_sigterm_when_the_wrapper_dies(tree: tuple[Path, Path]) -> None:
    """The parent-death signal holds for every rsync the wrapper starts, a later pass's as well: a
    SIGKILLed wrapper leaves none of them running."""
    src, dst = tree
    got = src.parent / "got-sigterm"
    stand_in = src.parent / "rsync"
    stand_in.write_text(
        f"#!{sys.executable}\n"
        "import signal, sys, time\n"
        "if sys.argv[1:] == ['--version']:\n"
        "    sys.exit(print('rsync  version 3.2.7  protocol version 31'))\n"
        "if any(a.startswith('--max-size=') for a in sys.argv):\n"
        "    print('big.bin is over max-size', flush=True)\n"
        "    sys.exit(0)\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(got)!r}, 'w').close(), sys.exit(0)))\n"
        "time.sleep(60)\n"
    )
    stand_in.chmod(0o755)
    argv = wrapper(src, dst)
    argv[argv.index("rsync")] = str(stand_in)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    later: list[int] = []

    def later_pass_runs() -> bool:
        later[:] = [
            int(c)
            for t in Path(f"/proc/{proc.pid}/task").iterdir()
            for c in (t / "children").read_text().split()
        ]
        return bool(later)

    try:
        assert wait_for(later_pass_runs, 10)
        time.sleep(0.3)  # the stand-in sets its handler
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_for(got.exists, 10), "the later rsync got no SIGTERM"
        assert wait_for(lambda: not Path(f"/proc/{later[0]}").exists() or _zombie(later[0]), 10)
    finally:
        for pid in [proc.pid, *later]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
