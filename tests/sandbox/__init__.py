"""Sandbox machines for integration tests and the demo (see :mod:`tests.sandbox.machine`)."""

from tests.sandbox.machine import (
    BTRFS_TOP,
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
    "Machine",
    "Sandbox",
    "SandboxError",
    "down_all",
    "down_dir",
    "recorded_sandboxes",
    "resolve_base_dir",
]
