"""The machine side of the packages_apt job (roles/packages_apt/module_utils/packages_apt_system.py)
that runs without apt changing anything: the private apt root's files, apt-get update's errors by
repository, and who holds a lock (a real fcntl lock held by another process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.role_files import load_role_file

plan_lib = load_role_file("packages_apt/module_utils/packages_apt_plan.py")
system = load_role_file("packages_apt/module_utils/packages_apt_system.py")

KEY = "/etc/apt/keyrings/pcs-test-signed.gpg"


def test_signed_by_paths_point_into_the_private_root() -> None:
    text = (
        f"Types: deb\nSigned-By: {KEY}\n\n"
        f"deb [signed-by={KEY},/usr/share/keyrings/x.gpg] file:/x s main\n"
        f"Signed-By: {KEY}.old\n"
    ).encode()
    got = system._rewrite_keys(text, "/tmp/r", [KEY]).decode()
    assert got.count(f"/tmp/r{KEY}") == 2
    assert f"/tmp/r{KEY}.old" not in got  # another file's name is left alone
    assert "/usr/share/keyrings/x.gpg" in got


def test_the_private_root_options_leave_the_machine_alone() -> None:
    options = system.apt_root_options("/tmp/r")
    pairs = dict(options[i + 1].split("=", 1) for i in range(0, len(options), 2))
    assert pairs["Dir::State::Lists"] == "/tmp/r/lists"
    assert pairs["Dir::Etc::SourceParts"] == "/tmp/r/etc/apt/sources.list.d"
    assert pairs["Dir::Etc::TrustedParts"] == "/tmp/r/etc/apt/trusted.gpg.d"
    assert pairs["Dir::Cache::pkgcache"] == ""
    assert pairs["Debug::NoLocking"] == "1"
    assert all(
        value == "" or value.startswith("/tmp/r") or key.startswith(("Debug", "APT"))
        for key, value in pairs.items()
    )


def test_update_errors_one_line_per_repository() -> None:
    final = {
        "/etc/apt/sources.list.d/pcs-broken.sources": b"URIs: file:///srv/pcs-apt/missing\nSuites: pcs\n",
        "/etc/apt/sources.list.d/ok.list": b"deb file:///srv/pcs-apt/signed pcs main\n",
    }
    errors = [
        "Err:7 file:/srv/pcs-apt/missing pcs Release File not found - /srv/pcs-apt/missing/dists/pcs/Release",
        "E: The repository 'file:/srv/pcs-apt/missing pcs Release' does not have a Release file.",
    ]
    assert system.update_problems(errors, final) == [
        "apt-get update fails for /etc/apt/sources.list.d/pcs-broken.sources "
        "(file:///srv/pcs-apt/missing pcs): " + errors[1]
    ]
    assert system.update_problems(["E: disk full"], final) == ["apt-get update fails: E: disk full"]


HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_the_lock_holder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "lock-frontend"
    lock.write_bytes(b"")
    assert system.lock_holder(str(lock)) is None
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        assert system.lock_holder(str(lock)) == holder.pid
        monkeypatch.setattr(system, "LOCKS", (str(lock),))
        said: list[str] = []
        reason = system.wait_for_lock(0, said.append)
        assert reason is not None
        assert f"{lock} is held by pid {holder.pid} ({sys.executable} -c" in reason
        assert "raise packages_apt.lock_timeout" in reason
    finally:
        holder.communicate("", timeout=10)
    assert system.lock_holder(str(lock)) is None
    assert system.wait_for_lock(0, said.append) is None


def test_removals_apt_adds_are_refused_when_the_source_has_them_or_they_are_protected() -> None:
    plan = {"remove": ["libold"]}
    source: dict[str, dict[str, dict[str, bool]]] = {"packages": {"app": {}}}
    settings = {"protected": ["sudo"], "_target_packages": {"core": {"essential": True}}}
    removed = [["libold", "1"], ["app", "2"], ["core", "3"], ["sudo", "4"], ["leaf", "5"]]
    assert system.extra_removal_problems(removed, plan, source, settings) == [
        "apt would also remove app, which the source has (the job removes libold): add what it needs to "
        "packages_apt.protected",
        "apt would also remove core (Essential: yes; the job removes libold): add what it needs to "
        "packages_apt.protected",
        "apt would also remove sudo (protected by 'sudo'; the job removes libold): add what it needs to "
        "packages_apt.protected",
    ]


def test_a_linked_apt_file_is_a_problem_naming_it(tmp_path: Path) -> None:
    secret = tmp_path / "k.gpg"
    secret.write_bytes(b"key")
    link = tmp_path / "l.gpg"
    link.symlink_to(secret)
    problems: list[str] = []
    assert system._scan_file(str(secret), problems, True) == b"key"
    assert system._scan_file(str(link), problems, True) is None
    assert system._scan_file(str(tmp_path / "gone.gpg"), problems, False) is None
    assert problems == [
        f"{link} is a symlink: the job copies regular files only; make it a regular file or remove it"
    ]
