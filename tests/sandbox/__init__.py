"""Sandbox machines for integration tests and the demo (see :mod:`tests.sandbox.machine`).

Two kinds, both in their own PID, mount and UTS namespaces with their own sshd on a loopback address
and their own btrfs (a loop file) for /home and /root:

- a *plain* machine (``Sandbox.add(name)``) shares this host's /usr, /etc and packages; it starts in
  about 1 s;
- a *root* machine (``Sandbox.add(name, root=True, ro_binds={"/srv/pcs-apt": host_dir})``) is its own
  Debian 12 system: its ``/`` is the btrfs subvolume ``rootfs`` (``btrfs subvolume show /`` works
  inside), a snapshot of the Debian root cached by :mod:`tests.sandbox.rootfs`, with its own dpkg
  database, /etc, apt, python3 and sshd; only the checkout, the sandbox dir and the ``ro_binds`` are
  seen from the host. It starts in about 1.5 s (a sparse copy of the cached image, ~210 MB); the
  cache itself is built once per recipe (``python -m tests.sandbox root-cache``: 30-120 s, in
  ``/var/cache/pcswitcher-sandbox/root/``; remove its dir there to rebuild it).
"""

from tests.sandbox.machine import (
    BTRFS_TOP,
    RO_BIND_PARENTS,
    Machine,
    Sandbox,
    SandboxError,
    down_all,
    down_dir,
    recorded_sandboxes,
    resolve_base_dir,
)

__all__ = [
    "BTRFS_TOP",
    "RO_BIND_PARENTS",
    "Machine",
    "Sandbox",
    "SandboxError",
    "down_all",
    "down_dir",
    "recorded_sandboxes",
    "resolve_base_dir",
]
