"""Dry-run's promise on machines that never ran pc-switcher or Ansible: no file is created on either
machine (``/root``, ``/home``, ``/tmp`` and ``/var/tmp`` list the same before and after), with every
shipped job that is enabled by default and snapshots configured, logged in as root and as a normal
user with sudo (``ansible_become``).

The machines are fresh for each case and nothing is created on them beforehand but the data, the
config and the login user. Their ``/var/tmp`` is their own (a subvolume): the host's is shared with
everything else running here. That needs the sandbox's state dir outside ``/var/tmp``: these
sandboxes live under :data:`BASE` (removed again when empty).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcswitcher.jobs.discovery import discover_jobs
from tests.integration.helpers import REPO, inventory_with, sync_argv, write_config
from tests.integration.test_become import SNAPSHOTS, UID, USER
from tests.sandbox import Machine, Sandbox

# run alone, after the others (Makefile `integration`):
# its sandbox base is its own directory, its sshd port the default one (2222)
pytestmark = pytest.mark.serial

BASE = Path("/var/lib/pcswitcher-sandbox-pristine")
LISTED = ("/root", "/home", "/tmp", "/var/tmp")
# every entry with type, mode, owner; regular files with size and mtime (this checkout, which the
# sandbox keeps visible inside the machines, aside)
LISTING = r"""
find "$@" -path "$CHECKOUT" -prune -o -type f -printf '%p f %m %U:%G %s %T@\n' -o -printf '%p %y %m %U:%G\n' \
  | LC_ALL=C sort
"""
SOURCE_DATA = r"""
set -euo pipefail
mkdir -p /home/user/docs /root/notes
printf 'new\n' > /home/user/docs/a.txt
printf 'note\n' > /root/notes/n
chown -R 4242:4242 /home/user
"""
TARGET_DATA = r"""
set -euo pipefail
mkdir -p /home/user/docs /home/user/old
printf 'old, longer\n' > /home/user/docs/a.txt
printf 'gone\n' > /home/user/old/f
"""


@pytest.fixture
def pristine_base() -> Iterator[Path]:
    yield BASE
    with contextlib.suppress(OSError):
        (BASE / ".lock").unlink()
        BASE.rmdir()  # only when no other sandbox is in it


def listing(machine: Machine) -> list[str]:
    res = machine.run(["env", f"CHECKOUT={REPO}", "bash", "-c", LISTING, "list", *LISTED], timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


def default_config() -> dict[str, object]:
    jobs = {name: True for name, spec in discover_jobs(REPO).items() if spec.default_enabled}
    assert "folder_sync" in jobs
    return {"jobs": jobs, "snapshots": SNAPSHOTS}  # every job with its default options


@pytest.mark.parametrize("login", ["root", "become"])
def test_dry_run_on_pristine_machines_creates_no_file(pristine_base: Path, login: str) -> None:
    with Sandbox(base_dir=pristine_base) as sb:
        source = sb.add("source", extra_dirs=["/var/tmp"])
        target = sb.add("target", extra_dirs=["/var/tmp"], private_etc=login == "become")
        inventory = None
        if login == "become":
            target.add_login_user(USER, UID)
            inventory = inventory_with(sb, "become", ansible_user=USER, ansible_become=True)
        for machine in (source, target):
            found = [line for line in listing(machine) if ".ansible" in line or "pc-switcher" in line]
            assert found == [], f"{machine.name} is not pristine: {found}"
        assert source.run(["bash", "-c", SOURCE_DATA]).returncode == 0
        assert target.run(["bash", "-c", TARGET_DATA]).returncode == 0
        write_config(source, default_config())
        before = {m.name: listing(m) for m in (source, target)}

        res = source.run(
            sync_argv(sb, "--dry-run", inventory=inventory), timeout=300, stdin=subprocess.DEVNULL
        )
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        # it did look at everything: what it would transfer and delete, the snapshots it would take
        out = res.stdout + res.stderr
        assert "docs/a.txt" in out
        assert "old/f" in out
        assert "would take pre-sync snapshots" in out
        for machine in (source, target):
            assert listing(machine) == before[machine.name], machine.name
