"""Builds the root machines' cached Debian tree (run by :mod:`tests.sandbox.rootfs`).

Started by ``unshare --pid --mount ... -- python3 -I _build_root.py BUILD.json`` in the build dir, so
that every mount (the image's, mmdebstrap's ``/proc`` and ``/dev`` in the tree) and every process ends
with it, also when it is killed. Standard library only. It

1. mounts the empty btrfs image (``mount -o loop``: the loop device auto-clears with the last mount)
   and creates the subvolume ``base``,
2. runs ``mmdebstrap --variant=apt`` into it (the log in the build dir),
3. adapts the tree: ``policy-rc.d`` answering 101, no apt source (mmdebstrap's ``sources.list`` moved to
   ``/usr/share/pcs-sandbox/debian.list``), no ssh host keys, ``/etc/hostname`` and ``/etc/hosts``,
4. makes ``base`` read-only, balances and trims the file system (its data contiguous, freed blocks
   holes of the image again), writes the tree's size to ``tree.json`` and unmounts.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# dpkg leaves these out, now and for every later install in a machine (mmdebstrap writes the options
# to /etc/dpkg/dpkg.cfg.d/99mmdebstrap); copyright files stay
_DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
)

POLICY_RC_D = """\
#!/bin/sh
# pc-switcher sandbox root machine: no systemd, and package maintainer scripts must not start
# services (invoke-rc.d asks this script; 101 = action forbidden, as in Debian chroots)
exit 101
"""

DEBIAN_LIST = "usr/share/pcs-sandbox/debian.list"  # the mirror's source, moved out of /etc/apt
HOSTS = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"


def _run(argv: list[str], **kw: Any) -> None:
    proc = subprocess.run(argv, check=False, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed with rc {proc.returncode} (see build.log)")


def _mmdebstrap(cfg: dict[str, Any], tree: str) -> None:
    argv = [
        cfg["mmdebstrap"],
        "--mode=root",
        "--variant=apt",
        "--include=" + ",".join(cfg["packages"]),
        *(f"--dpkgopt={opt}" for opt in _DPKG_OPTIONS),
        cfg["suite"],
        tree,
        cfg["mirror"],
    ]
    with open(cfg["log"], "ab") as log:
        _run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def _adapt(tree: str) -> None:
    policy = os.path.join(tree, "usr/sbin/policy-rc.d")
    with open(policy, "w") as fh:
        fh.write(POLICY_RC_D)
    os.chmod(policy, 0o755)  # noqa: S103 - a script every user may run, as dpkg installs them
    # offline by default: apt in a machine reaches only the repositories a test gives it (no
    # network during a sync); the Debian source stays at hand for a person
    os.makedirs(os.path.join(tree, "usr/share/pcs-sandbox"), exist_ok=True)
    os.rename(os.path.join(tree, "etc/apt/sources.list"), os.path.join(tree, DEBIAN_LIST))
    for key in glob.glob(os.path.join(tree, "etc/ssh/ssh_host_*")):
        os.unlink(key)
    with open(os.path.join(tree, "etc/hostname"), "w") as fh:
        fh.write("localhost\n")  # each machine writes its own name at its first start
    with open(os.path.join(tree, "etc/hosts"), "w") as fh:
        fh.write(HOSTS)


def _tree_mb(tree: str) -> int:
    out = subprocess.run(["du", "-sxm", tree], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def main() -> int:
    cfg: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text())
    mnt = cfg["mnt"]
    os.makedirs(mnt, exist_ok=True)
    _run(["mount", "-t", "btrfs", "-o", "loop", cfg["image"], mnt])
    tree = os.path.join(mnt, cfg["subvolume"])
    _run(["btrfs", "-q", "subvolume", "create", tree])
    _mmdebstrap(cfg, tree)
    _adapt(tree)
    size = _tree_mb(tree)
    _run(["btrfs", "property", "set", "-ts", tree, "ro", "true"])
    # the tree's blocks rewritten contiguously (apt's downloaded .debs, written and deleted, left gaps
    # among them), then every free block a hole of the sparse image: a machine's copy of it holds
    # ~210 MB in a few extents, not thousands (unlinking 3000 extents took 8 s here, with
    # the host's ext4 mounted with discard)
    _run(["btrfs", "balance", "start", "--full-balance", mnt], stdout=subprocess.DEVNULL)
    _run(["fstrim", mnt])
    _run(["umount", mnt])
    os.rmdir(mnt)
    with open(os.path.join(os.path.dirname(cfg["image"]), "tree.json"), "w") as fh:
        json.dump({"tree_mb": size}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
