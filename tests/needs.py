"""What a test needs from this machine. A test that cannot run here FAILS with one line naming what
to install or do — it never skips: a green suite means every test ran (`make test` shows 0 skipped)."""

from __future__ import annotations

import os
import shutil

import pytest

BOOTSTRAP = "run `make bootstrap` (it installs the system packages the tests use)"

# the commands the sandbox machines and the integration tests run, with the package of each
# (the Makefile's APT_PACKAGES installs them all)
SANDBOX_TOOLS = {
    "ssh": "openssh-client",
    "/usr/sbin/sshd": "openssh-server",
    "rsync": "rsync",
    "mkfs.btrfs": "btrfs-progs",
    "btrfs": "btrfs-progs",
    "setfacl": "acl",
    "setfattr": "attr",
    "pgrep": "procps",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "tmux": "tmux",
}


# what root machines (tests/sandbox/rootfs.py) need on top of SANDBOX_TOOLS, with the package of each
ROOT_MACHINE_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "btrfstune": "btrfs-progs",
    "fstrim": "util-linux",
    "pivot_root": "util-linux",
    "dpkg-deb": "dpkg",
}


def fail(reason: str) -> None:
    """Fail the running test with ``reason`` as its one line (no traceback)."""
    pytest.fail(reason, pytrace=False)


def root(why: str) -> None:
    """Fail unless this process runs as root; ``why`` says what the test does with it."""
    if os.geteuid() != 0:
        fail(f"needs root ({why}): run the tests as root, e.g. `sudo make test`")


def tool(name: str, package: str | None = None) -> str:
    """The path of command ``name``; fail naming its package when it is not installed."""
    path = shutil.which(name)
    if path is None:
        fail(f"needs `{name}` ({package or SANDBOX_TOOLS.get(name, name)}), not installed: {BOOTSTRAP}")
    assert path is not None
    return path


def tools(names: dict[str, str]) -> None:
    """Fail naming every missing command of ``names`` (command -> package) at once."""
    missing = sorted(
        {f"`{name}` ({package})" for name, package in names.items() if shutil.which(name) is None}
    )
    if missing:
        fail(f"needs {', '.join(missing)}, not installed: {BOOTSTRAP}")
