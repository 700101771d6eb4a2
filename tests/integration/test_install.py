"""``make install`` / ``make uninstall`` inside a sandbox machine (its /opt and /usr/local are private
overlays, so nothing of this host changes): as root and as a login user with sudo, idempotent, an
install of another tree replacing the old one exactly, refusals of hostile settings."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcswitcher import __version__
from pcswitcher.install import runtime_files, tree_id
from tests import needs
from tests.sandbox import Machine, Sandbox

REPO = Path(__file__).resolve().parents[2]
PREFIX = "/opt/pc-switcher"
LINK = "/usr/local/bin/pc-switcher"
PATH = "PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER, UID = "alice", 1100


@pytest.fixture(scope="module")
def box() -> Iterator[Machine]:
    """One machine for the module (an install costs about 25 s): the tests run in file order."""
    needs.root("`make install` writes /opt and /usr/local of a sandbox machine")
    with Sandbox() as sb:
        machine = sb.add("box", private_etc=True)
        machine.add_login_user(USER, UID)
        yield machine


def sh(machine: Machine, script: str, *args: str, user: str = "root") -> subprocess.CompletedProcess[str]:
    """``bash -c SCRIPT`` in the machine as ``user`` with a login-like environment."""
    home = "/root" if user == "root" else f"/home/{user}"
    env = ["env", "-i", PATH, f"HOME={home}", f"USER={user}", "LANG=C.UTF-8"]
    argv = [*env, "bash", "-c", script, "bash", *args]
    if user != "root":
        argv = ["runuser", "-u", user, "--", *argv]
    return machine.run(argv, cwd=home)


def make(machine: Machine, target: str, src: str = str(REPO), *assigns: str, user: str = "root") -> str:
    res = sh(machine, 'make -s -C "$1" "$2" "${@:3}" 2>&1', src, target, *assigns, user=user)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def install_record(machine: Machine) -> dict[str, str]:
    data: dict[str, str] = json.loads(machine.path(f"{PREFIX}/install.json").read_text())
    return data


def copy_checkout(machine: Machine, dest: str, owner: str = "root") -> None:
    """The runtime tree and the Makefile of this checkout at ``dest`` in the machine."""
    entries = [
        p for p in ("Makefile", "pcswitcher", "roles", "playbooks", "pyproject.toml") if (REPO / p).exists()
    ]
    entries += [p for p in ("ansible.cfg", "inventory", "docs", "README.md") if (REPO / p).exists()]
    script = 'mkdir -p "$1" && cd "$2" && cp -a --parents "${@:4}" "$1" && chown -R "$3:$3" "$1"'
    res = sh(machine, script, dest, str(REPO), owner, *entries)
    assert res.returncode == 0, res.stderr


def test_root_install(box: Machine) -> None:
    out = make(box, "install")
    assert f"installed pc-switcher {__version__} in {PREFIX}, command {LINK}" in out
    assert os.readlink(box.path(LINK)) == f"{PREFIX}/venv/bin/pc-switcher"
    res = sh(box, "pc-switcher --version && command -v pc-switcher")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:2] == [f"pc-switcher, version {__version__}", LINK]
    record = install_record(box)
    assert record == {"version": __version__, "python": "3.11", "id": tree_id(REPO)}
    app = box.path(f"{PREFIX}/app")
    assert runtime_files(app) == runtime_files(REPO)
    assert tree_id(app) == record["id"]  # what the way back compares
    assert not (app / "tests").exists()
    assert not (app / "bench").exists()
    assert not (app / ".git").exists()
    # the installed command runs from its own copy, not from this checkout
    res = sh(box, "pc-switcher init && pc-switcher config check")
    assert res.returncode == 0, res.stdout + res.stderr
    assert box.path("/root/.config/pc-switcher/config.yml").is_file()
    res = sh(box, f'{PREFIX}/venv/bin/python -c "import pcswitcher, sys; print(pcswitcher.__file__)"')
    assert res.stdout.strip() == f"{PREFIX}/app/pcswitcher/__init__.py"
    # nothing of this on the host
    assert not Path(PREFIX).exists()
    assert not os.path.lexists(LINK)


def test_second_install_changes_nothing(box: Machine) -> None:
    before = box.path(f"{PREFIX}/install.json").stat().st_mtime_ns
    app_inode = box.path(f"{PREFIX}/app").stat().st_ino
    out = make(box, "install")
    assert "already (same files): nothing to do" in out
    assert box.path(f"{PREFIX}/install.json").stat().st_mtime_ns == before
    assert box.path(f"{PREFIX}/app").stat().st_ino == app_inode


def test_other_tree_replaces_the_install_exactly(box: Machine) -> None:
    src = "/root/newer"
    copy_checkout(box, src)
    res = sh(box, 'rm "$1/docs/cli.md" && echo new > "$1/roles/new-file.txt"', src)
    assert res.returncode == 0, res.stderr
    out = make(box, "install", src)
    assert f"installed pc-switcher {__version__} in {PREFIX}" in out
    app = box.path(f"{PREFIX}/app")
    assert (app / "roles" / "new-file.txt").read_text() == "new\n"
    assert not (app / "docs" / "cli.md").exists()  # no stale file of the old install
    assert install_record(box)["id"] == tree_id(box.path(src)) != tree_id(REPO)
    assert sorted(os.listdir(box.path(PREFIX))) == ["app", "install.json", "venv"]
    assert sh(box, "pc-switcher --version").returncode == 0


def test_failed_install_keeps_the_old_one(box: Machine) -> None:
    before = install_record(box)
    app_files = runtime_files(box.path(f"{PREFIX}/app"))
    src = "/root/broken"
    copy_checkout(box, src)
    # a dependency no index has: pip fails after the old app and venv were moved aside
    res = sh(
        box, 'sed -i "s/^dependencies = \\[/&\\n  \\"pcs-no-such-package>=1\\",/" "$1/pyproject.toml"', src
    )
    assert res.returncode == 0, res.stderr
    assert "pcs-no-such-package" in box.path(f"{src}/pyproject.toml").read_text()
    res = sh(box, 'make -s -C "$1" install', src)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "error: pip install failed (exit code 1, output above): fix that and run again" in res.stderr
    assert install_record(box) == before
    assert runtime_files(box.path(f"{PREFIX}/app")) == app_files
    assert tree_id(box.path(f"{PREFIX}/app")) == before["id"]
    assert sorted(os.listdir(box.path(PREFIX))) == ["app", "install.json", "venv"]
    assert sh(box, "pc-switcher --version").returncode == 0


def test_refusals(box: Machine) -> None:
    before = install_record(box)
    hostile = [
        ("PREFIX=/opt/pc switcher", "is not a plain absolute path"),
        ("PREFIX=/opt/`touch /root/pwned`", "is not a plain absolute path"),
        ("PREFIX=/opt/$$(touch /root/pwned)", "is not a plain absolute path"),
        ("PREFIX=/opt/x\n/etc", "is not a plain absolute path"),
        ("PREFIX=opt/pcs", "is not a plain absolute path"),
        ("PREFIX=/opt/../usr", "is not a plain absolute path"),
        ("PREFIX=/usr", "is a system directory"),
        ("PREFIX=/root", "is a system directory"),
        ("PREFIX=/root/.config", "holds pc-switcher, not a pc-switcher install"),
        ("BINDIR=/usr/local/bin;id", "is not a plain absolute path"),
    ]
    for action in ("install", "uninstall"):
        for assign, message in hostile:
            res = sh(box, 'make -s -C "$1" "$2" "$3"', str(REPO), action, assign)
            assert res.returncode == 2, (assign, res.stdout, res.stderr)
            errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, (assign, res.stderr)
            assert message in errors[0], (assign, res.stderr)
            assert not box.path("/root/pwned").exists()
    # a pc-switcher command of something else is never replaced
    res = sh(box, 'mkdir -p /root/bin && echo "#!/bin/sh" > /root/bin/pc-switcher')
    res = sh(box, 'make -s -C "$1" install PREFIX=/opt/pcs2 BINDIR=/root/bin', str(REPO))
    assert res.returncode == 2
    assert "error: /root/bin/pc-switcher exists and is not pc-switcher's link" in res.stderr
    assert not box.path("/opt/pcs2").exists()
    assert install_record(box) == before


def test_uninstall_keeps_config_and_state(box: Machine) -> None:
    out = make(box, "uninstall")
    assert f"removed {PREFIX} and {LINK}" in out
    assert "kept: every user's config ~/.config/pc-switcher" in out
    assert "/root/.config/pc-switcher" in out
    assert not box.path(PREFIX).exists()
    assert not os.path.lexists(box.path(LINK))
    assert box.path("/root/.config/pc-switcher/config.yml").is_file()
    assert sh(box, "command -v pc-switcher").returncode == 1
    assert make(box, "uninstall").startswith(f"removed {PREFIX}")  # again: nothing left, no error


def test_user_with_sudo_installs_from_own_checkout(box: Machine) -> None:
    src = f"/home/{USER}/pc-switcher"
    copy_checkout(box, src, owner=USER)
    res = sh(box, "sudo -n true && test ! -w /opt", user=USER)
    assert res.returncode == 0, res.stderr
    out = make(box, "install", src, user=USER)
    assert f"installed pc-switcher {__version__} in {PREFIX}" in out
    st = box.path(f"{PREFIX}/app/pcswitcher/cli/commands.py").stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o644)  # root's, not the user's
    res = sh(box, "pc-switcher --version", user=USER)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"pc-switcher, version {__version__}"
    assert install_record(box)["id"] == tree_id(box.path(src))
    out = make(box, "uninstall", src, user=USER)
    assert "kept: every user's config" in out
    assert not box.path(PREFIX).exists()
    assert not os.path.lexists(box.path(LINK))
