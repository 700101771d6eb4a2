"""folder_sync's space check (roles/folder_sync/files/folder_sync_space.py, alone and as the check
script runs it) with a local rsync and
a stand-in for ssh that hands the remote command to ``sh`` (as sshd hands it to the login shell):
hostile target names reach the agent as they are, the cheap bound spares the dry-run, the exact
figure is rsync's own, and a refusal is one line on stderr. The real thing on sandbox machines with
a small btrfs: tests/integration/test_disk_btrfs.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.unit.role_files import load_role_file

ROLE_FILES = Path(__file__).parents[2] / "roles" / "folder_sync" / "files"
SCRIPT = ROLE_FILES / "folder_sync_space.py"
AGENT = ROLE_FILES / "pcswitcher_agent.py"
# argv: sh -c 'eval "$2"' ssh HOST REMOTE: the remote command string is run by a shell, like ssh's
STAND_IN_SSH = "sh -c 'eval \"$2\"' ssh"
HOSTILE = ["-dash", "sp ace", "quo'te\"", "$(touch PWNED)", "new\nline", "tab\tx", "semi;colon"]


def load() -> ModuleType:
    return load_role_file("folder_sync/files/folder_sync_space.py")


def plan(folders: list[dict[str, Any]], threshold: dict[str, Any]) -> dict[str, Any]:
    return {
        "folders": folders,
        "ssh": STAND_IN_SSH,
        "host": "target",
        "name": "target",
        "python": sys.executable,
        "threshold": threshold,
    }


def folder(source: Path, target: Path) -> dict[str, Any]:
    src, dst = f"{source}/", f"{target}/"
    return {
        "source": src,
        "target": dst,
        "args": ["-a", "--info=progress2", "--out-format=%i %n%L", src, dst],
    }


def run(data: dict[str, Any], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PCSWITCHER_PROGRESS": str(cwd / "progress.jsonl")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(AGENT), json.dumps(data)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


def progress(cwd: Path) -> list[dict[str, Any]]:
    path = cwd / "progress.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_hostile_target_names_are_measured_as_they_are(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    folders = []
    for name in HOSTILE:
        (tmp_path / name).mkdir()
        folders.append(folder(source, tmp_path / name / "not-yet"))
    res = run(plan(folders, {"bytes": 0, "text": "0B"}), tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    (report,) = json.loads(res.stdout)["writes"]  # one filesystem for all
    assert report["target"] == folders[0]["target"]
    assert not (tmp_path / "PWNED").exists()
    assert not list(Path.cwd().glob("PWNED"))


def test_the_cheap_bound_spares_the_dry_run(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    res = run(plan([folder(source, target)], {"bytes": 1, "text": "1B"}), tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    (report,) = json.loads(res.stdout)["writes"]
    assert "writes" not in report  # no rsync --dry-run
    assert report["bound"] > 0
    assert any("room enough" in line.get("message", "") for line in progress(tmp_path))


def test_the_exact_figure_is_rsyncs_and_may_still_fit(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    (source / "sub").mkdir(parents=True)
    (source / "a").write_bytes(b"x" * 300_000)
    (source / "sub" / "b").write_bytes(b"y" * 5_000)
    target.mkdir()
    (target / "a").write_bytes(b"x" * 300_000)
    os.utime(target / "a", (1_000_000_000, 1_000_000_000))  # another mtime: rsync sends it again in full
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    used = (os.statvfs(tmp_path).f_blocks - os.statvfs(tmp_path).f_bfree) * os.statvfs(tmp_path).f_frsize
    assert used > 200 * 2**20, "the bound must not fit: a filesystem with some data is needed"
    # the bound (all of the used space of the filesystem) does not fit; 100 MiB of writes would
    threshold = {"bytes": free - 100 * 2**20, "text": "T"}
    res = run(plan([folder(source, target)], threshold), tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "", res.stderr
    (report,) = json.loads(res.stdout)["writes"]
    # 305,000 bytes of files, 2 files + 1 created directory at 4 KiB each
    assert report["writes"] == 305_000 + 3 * 4096
    assert any("measuring" in line.get("message", "") for line in progress(tmp_path))
    assert not (target / "sub").exists()  # a dry-run


def test_a_sync_that_does_not_fit_is_one_line(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    (source / "a").write_bytes(b"x" * 2_000_000)
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    res = run(plan([folder(source, target)], {"bytes": free + 2**30, "text": "THRESHOLD"}), tmp_path)
    assert res.returncode == 0
    lines = res.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("not enough space on target: folder ")
    assert f"{source}/ would write 1.9 MiB" in lines[0]
    assert "below disk.runtime_minimum THRESHOLD" in lines[0]
    assert not target.exists()


def test_a_target_on_a_pseudo_filesystem_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    res = run(plan([folder(source, Path("/proc/pcs-x"))], {"percent": 5.0, "text": "5%"}), tmp_path)
    assert res.stderr.splitlines() == [
        "cannot measure free space of /proc/pcs-x/ on target: not on a disk filesystem: "
        "set another folder target"
    ]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"python": "/nonexistent/python3"}, "cannot measure free space on target"),
        ({"threshold": "5%"}, "pcswitcher_disk_runtime_minimum is not a threshold"),
        ({"threshold": {"text": "5%"}}, "pcswitcher_disk_runtime_minimum is not a threshold"),
    ],
)
def test_what_cannot_be_measured_is_refused(tmp_path: Path, change: dict[str, Any], problem: str) -> None:
    source = tmp_path / "src"
    source.mkdir()
    data = {**plan([folder(source, tmp_path / "dst")], {"percent": 5.0, "text": "5%"}), **change}
    res = run(data, tmp_path)
    assert res.returncode == 0
    lines = res.stderr.splitlines()
    assert len(lines) == 1, lines
    assert problem in lines[0]


def test_a_failing_dry_run_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    bad = folder(source, tmp_path / "dst")
    bad["args"] = ["--no-such-option", *bad["args"]]
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    res = run(plan([bad], {"bytes": free + 2**30, "text": "T"}), tmp_path)
    lines = res.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"rsync --dry-run of {source}/ failed (")


def test_breached_is_the_config_threshold() -> None:
    space = load()
    assert space.breached({"percent": 5.0}, 4, 100)
    assert not space.breached({"percent": 5.0}, 5, 100)
    assert space.breached({"bytes": 80_000_000}, 79_999_999, 10**9)
    assert not space.breached({"bytes": 80_000_000}, 80_000_000, 10**9)
    assert space.breached({"bytes": 1}, -5, 10**9)


CHECK = ROLE_FILES / "folder_sync_check.py"


def check_plan(source: Path, target: Path) -> dict[str, Any]:
    """The check part of a plan, as templates/plan.json.j2 renders it, with the stand-in ssh."""
    src, dst = f"{source}/", f"{target}/"
    return {
        "folders": [{"source": src, "target": dst, "filter_file": "", "rules": []}],
        "fixed": ["--filter=- .ssh/id_"],
        "globals": [],
        "ssh": STAND_IN_SSH,
        "host": "target",
        "name": "target",
        "python": sys.executable,
        "remote_rsync": "rsync",
        "become": False,
    }


def run_check(check: dict[str, Any], space: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """folder_sync_check.py as the role's validate phase runs it: the checks, then the space check,
    whose input has only what it measures (the connection and the name are the checks' own)."""
    given = {"agent": str(AGENT), "folders": space["folders"], "threshold": space["threshold"]}
    res = subprocess.run(
        [
            sys.executable,
            str(CHECK),
            json.dumps(check),
            str(SCRIPT),
            json.dumps(given),
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PCSWITCHER_PROGRESS": str(cwd / "progress.jsonl")},
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr == "", res.stderr
    result: dict[str, Any] = json.loads(res.stdout)
    return result


def test_the_check_script_runs_the_space_check_once_the_checks_pass(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    (source / "a").write_bytes(b"x" * 2_000_000)
    fits = run_check(
        check_plan(source, target), plan([folder(source, target)], {"bytes": 1, "text": "1B"}), tmp_path
    )
    assert fits["problems"] == []
    (report,) = fits["writes"]
    assert report["target"] == f"{target}/"
    assert report["bound"] > 0
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    too_much = plan([folder(source, target)], {"bytes": free + 2**30, "text": "THRESHOLD"})
    (problem,) = run_check(check_plan(source, target), too_much, tmp_path)["problems"]
    assert problem.startswith("not enough space on target: folder ")
    assert not (target / "a").exists()


@pytest.mark.parametrize(
    ("name", "kind", "problem"),
    [
        ("elsewhere", "file", "is not a directory"),
        ("elsewhere", "symlink", "is a symlink (to "),
        ("else\nwhere", "symlink", "/else\\#012where): rsync would write where it points"),
    ],
    ids=["file", "symlink", "symlink-to-a-name-with-a-newline"],
)
def test_a_problem_of_the_checks_is_reported_alone(
    tmp_path: Path, name: str, kind: str, problem: str
) -> None:
    """A target folder that is a file, or a symlink (rsync and --delete would follow it out of what
    was configured), also to a place whose name has a newline (shown as rsync shows it: one line):
    the checks' problem only, no space figure, no refusal; the place the link points to is left as
    it was."""
    source, elsewhere, target = tmp_path / "src", tmp_path / name, tmp_path / "dst"
    source.mkdir()
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("x")
    if kind == "file":
        target.write_text("a file")
    else:
        target.symlink_to(elsewhere)
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    too_much = plan([folder(source, target)], {"bytes": free + 2**30, "text": "THRESHOLD"})
    result = run_check(check_plan(source, target), too_much, tmp_path)
    assert result["writes"] == []
    assert len(result["problems"]) == 1, result
    assert problem in result["problems"][0]
    assert [p.name for p in elsewhere.iterdir()] == ["keep"]
