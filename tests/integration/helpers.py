"""Shared helpers of the integration tests: the real CLI, run inside the sandbox machine ``source``."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from pcswitcher.run.logs import list_logs
from tests.proc_status import catches
from tests.sandbox import Machine, Sandbox

REPO = Path(__file__).resolve().parents[2]
PC_SWITCHER = str(REPO / ".venv" / "bin" / "pc-switcher")
CONFIG = "/root/.config/pc-switcher/config.yml"
STATE = "/root/.local/state/pc-switcher"
TAG = "PCSWITCHER_RUN_ID"


def write_config(source: Machine, config: dict[str, Any] | str, path: str = CONFIG) -> str:
    """Write a config into the source machine; returns its in-machine path.

    A config given as a dict without a ``snapshots`` section gets ``snapshots: {enabled: false}``:
    the default snapshot location is not on btrfs inside a sandbox machine (its ``/`` is the host's).
    Tests of snapshots configure them (location under the machine's btrfs top level).
    """
    host_path = source.path(path)
    host_path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(config, dict) and "snapshots" not in config:
        config = {**config, "snapshots": {"enabled": False}}
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    host_path.write_text(text)
    return path


def dummy_config(source_duration: int = 2, target_duration: int = 2, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "jobs": {"dummy_success": True},
        "dummy_success": {"source_duration": source_duration, "target_duration": target_duration},
    }
    config.update(extra)
    return config


# Sandbox machines are synced again and again in every direction: the history questions (tested in
# test_snapshots.py / test_history) would refuse most runs without a terminal.
HISTORY_FLAGS = ("--allow-first-sync", "--allow-out-of-order")


def inventory_with(sb: Sandbox, name: str, **target_vars: Any) -> Path:
    """A copy of the sandbox's inventory (``inventory-NAME.yml`` beside it) with the target's
    ``target_vars`` set; returns its path."""
    inventory = yaml.safe_load(sb.inventory_path.read_text())
    inventory["all"]["hosts"]["target"].update(target_vars)
    path = sb.inventory_path.with_name(f"inventory-{name}.yml")
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def sync_argv(
    sb: Sandbox,
    *args: str,
    target: str = "target",
    history_checks: bool = False,
    inventory: Path | None = None,
) -> list[str]:
    flags = () if history_checks else HISTORY_FLAGS
    return [PC_SWITCHER, "sync", target, "-i", str(inventory or sb.inventory_path), *flags, *args]


def run_sync(
    sb: Sandbox, *args: str, timeout: float = 240, target: str = "target", inventory: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``pc-switcher sync`` to completion inside the source machine (with the sandbox's
    inventory, or ``inventory``)."""
    argv = sync_argv(sb, *args, target=target, inventory=inventory)
    return sb.machines["source"].run(argv, timeout=timeout)


def run_cli(sb: Sandbox, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``pc-switcher ARGS`` inside the source machine."""
    return sb.machines["source"].run([PC_SWITCHER, *args], timeout=timeout)


@dataclass
class RunningSync:
    """A ``pc-switcher sync`` started in the background inside the source machine."""

    handle: subprocess.Popen[str]  # the host-side nsenter
    driver: psutil.Process  # the pc-switcher process itself (host pid)

    def signal(self, sig: int = signal.SIGINT) -> None:
        """What a terminal does on Ctrl+C: the signal to the driver (nsenter ignores SIGINT)."""
        self.driver.send_signal(sig)

    def wait(self, timeout: float = 120) -> tuple[int, str]:
        out, _ = self.handle.communicate(timeout=timeout)
        return self.handle.returncode, out

    def interrupt(self, timeout: float = 90) -> tuple[int, str]:
        """Ctrl+C if it still runs, then its exit code and output (the end of a test's background sync)."""
        if self.handle.poll() is None:
            self.signal(signal.SIGINT)
        return self.wait(timeout)


def start_sync(sb: Sandbox, *args: str, target: str = "target") -> RunningSync:
    source = sb.machines["source"]
    handle = source.popen(
        sync_argv(sb, *args, target=target), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for child in psutil.Process(handle.pid).children(recursive=True):
            try:
                if any("pc-switcher" in part for part in child.cmdline()):
                    return RunningSync(handle, child)
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.01)
    handle.kill()
    raise AssertionError("the driver did not start")


def tagged(machine: Machine) -> list[psutil.Process]:
    """Processes of the machine that carry a pc-switcher run tag."""
    found = []
    for proc in machine.processes():
        try:
            if TAG in proc.environ():
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for proc in procs:
        try:
            out.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
        except psutil.NoSuchProcess:
            continue
    return out


def wait_until_clean(machine: Machine, timeout: float = 5.0) -> list[str]:
    """Wait until the machine runs nothing beyond its baseline; returns what is left (empty = clean)."""
    deadline = time.monotonic() + timeout
    while True:
        left = describe(machine.extra_processes())
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def log_records(source: Machine, run_id: str | None = None) -> list[dict[str, Any]]:
    """The JSON records of a run's log (the newest run by default)."""
    logs = source.path(f"{STATE}/logs")
    files = list_logs(logs)  # newest first: two runs can start in the same second
    assert files, f"no log in {logs}"
    path = logs / f"{run_id}.jsonl" if run_id else files[0]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_id_of(records: list[dict[str, Any]]) -> str:
    for record in records:
        run_id = record.get("run_id")
        if run_id:
            return str(run_id)
    raise AssertionError("no run_id in the log")


# --------------------------------------------------------------------------- foundation tests


def sandbox_config(jobs: dict[str, bool], **sections: Any) -> dict[str, Any]:
    """A config with ``jobs`` (in this order) and job/global ``sections``, fit for sandbox machines.

    Global sections that cannot work inside a sandbox (btrfs snapshots: the sandbox's ``/`` is the
    host's) are turned off when the config schema knows them.
    """
    from pcswitcher.config.schema import config_schema
    from pcswitcher.jobs.discovery import discover_jobs

    known = config_schema(discover_jobs(REPO))["properties"]
    config: dict[str, Any] = {"jobs": dict(jobs)}
    if "snapshots" in known:
        config["snapshots"] = {"enabled": False}
    config.update(sections)
    return config


def run_dirs(machine: Machine) -> list[str]:
    """The ``/tmp/pcswitcher-*`` run directories present on the machine."""
    return sorted(str(p.name) for p in machine.path("/tmp").glob("pcswitcher-*"))


def leftovers(sb: Sandbox, timeout: float = 5.0) -> dict[str, list[str]]:
    """What a run left on each machine: processes beyond the baseline and run directories."""
    found: dict[str, list[str]] = {}
    for name, machine in sb.machines.items():
        left = wait_until_clean(machine, timeout) + run_dirs(machine)
        if left:
            found[name] = left
    return found


def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The command exited ``code`` with exactly one ``error:`` line on stderr (and no traceback)."""
    lines = stderr_lines(result)
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stdout + result.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    return lines[0]


def in_namespace_pid(proc: psutil.Process) -> int:
    """The pid of a machine's process as the machine sees it (the last NSpid of its status)."""
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid for {proc.pid}")


def wait_for_path(machine: Machine, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not machine.path(path).exists():
        assert time.monotonic() < deadline, f"{path} did not appear on {machine.name}"
        time.sleep(0.05)


LOGS = f"{STATE}/logs"


@dataclass
class ObservedSync:
    """``pc-switcher sync`` started in the background inside ``source``, its stdout and its log;
    :meth:`start` returns once the driver catches SIGTERM (see :func:`tests.proc_status.catches`)."""

    source: Machine
    handle: subprocess.Popen[str]
    driver: psutil.Process
    known_logs: set[str]
    started: float
    lines: list[str] = field(default_factory=list)
    _log: Path | None = None
    _reader: threading.Thread | None = None

    @classmethod
    def start(cls, sb: Sandbox, *args: str) -> ObservedSync:
        source = sb.machines["source"]
        logs = source.path(LOGS)
        known = {p.name for p in logs.glob("*.jsonl")} if logs.is_dir() else set()
        handle = source.popen(
            sync_argv(sb, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1
        )
        deadline = time.monotonic() + 10
        driver: psutil.Process | None = None
        while driver is None and time.monotonic() < deadline:
            for child in psutil.Process(handle.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if any(part.endswith("pc-switcher") for part in child.cmdline()):
                        driver = child
                        break
            else:
                time.sleep(0.005)
        while driver is not None and not catches(driver.pid, signal.SIGTERM):
            if handle.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.002)
        if driver is None or not catches(driver.pid, signal.SIGTERM):
            if driver is not None:
                with contextlib.suppress(psutil.Error):
                    driver.kill()  # the test's own process, by host pid
            handle.kill()
            out = ""
            with contextlib.suppress(subprocess.TimeoutExpired):
                out = handle.communicate(timeout=10)[0]
            raise AssertionError(f"the driver did not start (or never caught SIGTERM):\n{out}")
        run = cls(source, handle, driver, known, time.monotonic())
        run._reader = threading.Thread(target=run._read, daemon=True)
        run._reader.start()
        return run

    def _read(self) -> None:
        assert self.handle.stdout is not None
        for line in self.handle.stdout:
            self.lines.append(line.rstrip("\n"))

    # -- the run's log --------------------------------------------------------------------------
    @property
    def log_path(self) -> Path | None:
        if self._log is None:
            logs = self.source.path(LOGS)
            if logs.is_dir():
                new = sorted(p for p in logs.glob("*.jsonl") if p.name not in self.known_logs)
                if new:
                    self._log = new[0]
        return self._log

    @property
    def run_id(self) -> str:
        path = self.log_path
        assert path is not None, "the run has no log (yet)"
        return path.stem

    def records(self) -> list[dict[str, Any]]:
        path = self.log_path
        if path is None:
            return []
        out = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def wait_record(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 60, what: str = ""
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for rec in self.records():
                if pred(rec):
                    return rec
            if self.exited():
                raise AssertionError(f"the driver exited before {what or 'the record'}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what or 'such record'} within {timeout} s:\n{self.output()}")
            time.sleep(0.01)

    def wait_task(self, task: str, job: str = "dummy_success", timeout: float = 60) -> None:
        self.wait_record(
            lambda r: r.get("message") == f"task: {task}" and r.get("job") == job,
            timeout,
            f"task {task!r} of {job}",
        )

    def wait_line(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.lines)):
            if self.exited() or time.monotonic() > deadline:
                raise AssertionError(f"no output line with {text!r}:\n{self.output()}")
            time.sleep(0.002)

    # -- signals and exit -----------------------------------------------------------------------
    def signal(self, sig: int) -> float:
        """Send ``sig`` to the driver (what a terminal does on Ctrl+C); returns the moment."""
        self.driver.send_signal(sig)
        return time.monotonic()

    def exited(self) -> bool:
        try:
            return self.driver.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    def wait_exit(self, timeout: float = 90) -> float:
        """Wait for the driver to end; returns the moment it was seen gone (polled every 5 ms)."""
        deadline = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() > deadline:
                self.driver.kill()
                raise AssertionError(f"the driver did not exit within {timeout} s:\n{self.output()}")
            time.sleep(0.005)
        seen = time.monotonic()
        self.handle.wait(10)
        return seen

    @property
    def rc(self) -> int | None:
        return self.handle.returncode

    def wait(self, timeout: float = 90) -> int:
        self.wait_exit(timeout)
        self.handle.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        return self.handle.returncode

    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    def messages(self, level: str | None = None) -> list[str]:
        return [str(r.get("message")) for r in self.records() if level is None or r.get("level") == level]

    def job_status(self) -> dict[str, str]:
        for rec in reversed(self.records()):
            jobs = rec.get("jobs")
            if isinstance(jobs, list) and "exit_code" in rec:
                return {str(j["name"]): str(j["status"]) for j in jobs}
        return {}
