"""Exit codes and the errors that map to them.

Every error a user can cause is a :class:`PcsError`: the CLI prints its one-line message (and the
hint naming the fix) and exits with its code. Nothing else may reach the user as a traceback.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """The documented exit codes of ``pc-switcher`` (see README, "Exit codes")."""

    OK = 0
    FAILED = 1  # the sync failed or was aborted (a job failed, low disk, lost link, unreachable target)
    USAGE = 2  # bad usage, config or inventory
    LOCKED = 3  # another sync holds the lock, or the target is this machine
    INTERRUPTED = 130  # Ctrl+C (SIGINT)
    TERMINATED = 143  # SIGTERM


class Terminated(BaseException):
    """SIGTERM outside a sync's abort path (which installs its own handler): the command unwinds
    as it does for Ctrl+C's KeyboardInterrupt, and exits 143."""


class PcsError(Exception):
    """An error with a one-line message, an optional fix, and an exit code."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class UsageError(PcsError):
    """Bad command-line usage."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """The config file is missing, not YAML, or does not match the schema."""

    #: Every problem of a config that was read, in file order: (``FILE:LINE:COL: problem``, fix).
    problems: list[tuple[str, str]] | None = None


class InventoryError(UsageError):
    """The inventory cannot be read, or the target is not in it."""


class LockHeld(PcsError):
    """Another sync holds the lock, or the target is this machine."""

    exit_code = ExitCode.LOCKED
    #: What the lock file says about its holder, and whether that process is alive (when known).
    holder: dict[str, object] | None = None
    holder_alive: bool = True


class TargetError(PcsError):
    """The target cannot be reached or is not ready (missing tool, ssh refused, host key)."""


class JobDefinitionError(Exception):
    """A job's files are malformed (a developer error, not a user error): names the file and problem.

    Defined here rather than in :mod:`pcswitcher.jobs.discovery` (which re-exports it) so that the CLI can
    catch it without importing the job machinery.
    """

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
