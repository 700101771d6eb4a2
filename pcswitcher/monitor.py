"""The agents on both machines and the monitor that watches them during a run.

An :class:`AgentSession` is a long-lived session with a ``pcswitcher.agent`` (see agent.py): on the
source a child process with pipes, on the target an ssh session that is also the run's ssh
ControlMaster (Ansible's connections reuse it; when the driver dies, it dies, and the target's
agent sweeps the run's processes — the dead-man switch).

The :class:`Monitor` thread pings both agents every ``interval`` seconds, reads their heartbeats
and disk figures, and requests the abort when free space falls below ``runtime_minimum`` or the
target is silent for ``link_timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import agent as agent_module
from .abort import AbortController, Cause
from .config import DiskConfig
from .errors import LockHeld, PcsError, TargetError
from .inventory import Target
from .lock import describe_holder
from .registry import Registry
from .summary import format_bytes

log = logging.getLogger("pcswitcher")
ProgressHandler = Callable[[str, dict[str, Any]], None]
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel for SIGTERM when the driver dies (prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class AgentSession:
    """One agent: ``label`` names the machine in logs ("source host name" or the target's name)."""

    def __init__(self, label: str, argv: Sequence[str], registry: Registry, role: str) -> None:
        self.label = label
        self.argv = list(argv)
        self.registry = registry
        self.role = role
        self.proc: subprocess.Popen[bytes] | None = None
        self.hello: dict[str, Any] = {}
        self.last_seen = 0.0
        self.disk: list[dict[str, Any]] = []
        self.on_progress: ProgressHandler | None = None
        self.on_heartbeat: Callable[[AgentSession], None] | None = None
        self._stderr: list[str] = []
        self._replies: dict[str, list[dict[str, Any]]] = {}
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self.closing = False
        self._reader_done = False
        self._stderr_reader: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def spawn(self) -> None:
        """Start the agent's process; :meth:`wait_ready` waits for its hello (start both at once)."""
        import psutil

        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl+C in the terminal must not reach it
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - the only way to set the parent-death signal
        )
        with contextlib.suppress(psutil.NoSuchProcess):
            self.registry.add_process(psutil.Process(self.proc.pid), self.role)
        threading.Thread(target=self._read_stdout, name=f"agent-{self.label}", daemon=True).start()
        self._stderr_reader = threading.Thread(
            target=self._read_stderr, name=f"agent-err-{self.label}", daemon=True
        )
        self._stderr_reader.start()

    def wait_ready(self, timeout: float = 20.0, cancel: threading.Event | None = None) -> dict[str, Any]:
        """The agent's hello; raises TargetError (no answer) or LockHeld (the machine is busy).
        Returns ``{}`` at once when ``cancel`` is set (an abort: the caller stops waiting)."""
        hello = self.wait_for_any(("hello", "locked"), timeout, cancel)
        if hello is None and cancel is not None and cancel.is_set():
            return {}
        if hello is None:
            self.kill()
            if self._stderr_reader is not None:
                self._stderr_reader.join(2)  # all of ssh's message (its last line is the reason), not a part
            raise TargetError(self._start_failure(), self._start_hint())
        if hello.get("t") == "locked":
            self.kill()
            holder = hello.get("holder") or {}
            if (
                holder.get("role") == "source"
                and holder.get("host", hello.get("host")) == socket.gethostname()
            ):
                raise LockHeld(
                    f"{self.label} is this machine (host name {hello.get('host')}); "
                    "a machine cannot sync to itself",
                    "pick another target from the inventory",
                )
            raise LockHeld(
                f"target {self.label} is busy: another sync holds its lock {hello.get('path')} "
                f"({describe_holder(holder)})",
                "wait for that sync to finish; the lock ends with its run and its connection",
            )
        self.hello = hello
        return hello

    def _start_failure(self) -> str:
        err = [ln for ln in self._stderr if ln.strip() and not ln.startswith("Warning: Permanently added")]
        detail = err[-1].strip() if err else "no answer"
        return f"cannot start the pc-switcher agent on {self.label}: {detail}"

    def _start_hint(self) -> str:
        text = " ".join(self._stderr).lower()
        if "host key verification failed" in text or "no matching host key" in text:
            return "the target's host key is unknown or changed: check known_hosts before trusting it"
        if "permission denied" in text:
            return "check ansible_user and ansible_ssh_private_key_file in the inventory"
        if "connection refused" in text or "timed out" in text or "no route" in text:
            return "check that sshd runs on the target and ansible_host/ansible_port in the inventory"
        if "sudo: " in text:  # ansible_become: the agent runs through `sudo -n`
            if "not found" in text:
                return "ansible_become needs sudo on the target: install it there, or log in as root"
            return (
                "ansible_become needs passwordless sudo for ansible_user on the target:"
                " add a NOPASSWD sudoers rule there, or log in as root"
            )
        if "not found" in text:
            return "install python3 on the target (Ansible needs it too)"
        return "check the target's ssh settings in the inventory (try `ssh` with the same options)"

    def _read_stdout(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                log.debug("agent %s: %s", self.label, raw.decode(errors="replace").rstrip())
                continue
            if not isinstance(message, dict):
                continue
            self.last_seen = time.monotonic()
            kind = message.get("t")
            if kind == "progress" and self.on_progress is not None:
                line = message.get("line")
                if isinstance(line, dict):
                    self.on_progress(self.label, line)
                continue
            if kind == "hb":
                self.disk = list(message.get("disk") or [])
                if self.on_heartbeat is not None:
                    self.on_heartbeat(self)
            with self._cond:
                self._replies.setdefault(str(kind), []).append(message)
                self._cond.notify_all()
        with self._cond:
            self._reader_done = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self._stderr.append(line)
            del self._stderr[:-50]
            if line and not self.closing:
                log.debug("agent %s stderr: %s", self.label, line, extra={"host": self.label})

    def wait_for(self, kind: str, timeout: float) -> dict[str, Any] | None:
        return self.wait_for_any((kind,), timeout)

    def wait_for_any(
        self, kinds: Sequence[str], timeout: float, cancel: threading.Event | None = None
    ) -> dict[str, Any] | None:
        """The first pending reply of one of ``kinds`` (waits up to ``timeout``, or until ``cancel``
        is set; None if none came)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for kind in kinds:
                    replies = self._replies.get(kind)
                    if replies:
                        return replies.pop(0)
                if time.monotonic() >= deadline or self._reader_done:
                    return None  # timed out, or the agent's output ended (it exited)
                if cancel is not None and cancel.is_set():
                    return None
                self._cond.wait(0.1 if cancel is None else 0.02)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, line: str) -> bool:
        if self.proc is None or self.proc.stdin is None:
            return False
        with self._write_lock:
            try:
                self.proc.stdin.write(line.encode() + b"\n")
                self.proc.stdin.flush()
                return True
            except (BrokenPipeError, OSError, ValueError):
                return False

    def ping(self) -> bool:
        return self.send("ping")

    def drain(self, timeout: float) -> bool:
        """Every progress line written on this machine so far has been passed on (True), or the
        agent did not say so within ``timeout``."""
        with self._cond:
            self._replies.pop("drained", None)
        return self.send("drain") and self.wait_for("drained", timeout) is not None

    def sweep(self, jids: Sequence[str], timeout: float) -> dict[str, Any] | None:
        """Kill the run's processes on this machine now; the agent's report, or None on timeout."""
        with self._cond:
            self._replies.pop("swept", None)
        if not self.send(" ".join(["sweep", *jids])):
            return None
        return self.wait_for("swept", timeout)

    def request(self, command: str, payload: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """``command JSON`` -> the agent's reply of the same kind (None when none came in time)."""
        with self._cond:
            self._replies.pop(command, None)
        if not self.send(f"{command} {json.dumps(payload)}"):
            return None
        return self.wait_for(command, timeout)

    def close(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """quit: the agent sweeps, removes the run's directory and exits; then the session ends."""
        self.closing = True
        report = None
        if self.send("quit"):
            report = self.wait_for("bye", timeout)
        self._close_stdin()
        self._wait_exit(timeout)
        return report

    def _close_stdin(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError, BrokenPipeError, ValueError):
                self.proc.stdin.close()

    def _wait_exit(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        self.closing = True
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(2)

    def detach(self) -> None:
        """Close our end without waiting (force path): EOF makes the agent sweep and exit."""
        self.closing = True
        self._close_stdin()


def local_agent(
    run_id: str, label: str, paths: Sequence[str], timeout: float, registry: Registry
) -> AgentSession:
    argv = [sys.executable, "-I", str(Path(agent_module.__file__))]
    argv += ["monitor", "--run", run_id, "--timeout", str(timeout)]
    for path in paths:
        argv += ["--path", path]
    return AgentSession(label, argv, registry, "agent:source")


FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _ssh_ciphers(argv: list[str]) -> list[str]:
    """The cipher list ``ssh -G`` resolves for ``argv`` (an ssh command line with ``-G``)."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    for line in res.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "ciphers":
            return value.strip().split(",")
    return []


def _has_aes_instructions() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            return any(line.startswith("flags") and " aes " in f"{line} " for line in fh)
    except OSError:
        return False


def cipher_preference(target: Target) -> list[str]:
    """``-o Ciphers=<AES-GCM first, then ssh's defaults>`` for the run's master, or nothing.

    With AES instructions (any workstation CPU of the last decade) AES-GCM moves data about 20 %
    faster than ssh's first choice chacha20-poly1305 (measured with rsync of 400 MB between two
    sandbox machines: 2.5-3.3 s against 3.7-4.1 s). Only the order changes, and only when nobody
    chose the ciphers: not when the inventory's ssh args or the user's ssh config set them.
    """
    extra = " ".join((*target.ssh_common_args, *target.ssh_extra_args)).lower()
    if "cipher" in extra or "-c" in (*target.ssh_common_args, *target.ssh_extra_args):
        return []
    if not _has_aes_instructions():
        return []
    default = _ssh_ciphers([target.ssh_executable, "-F", "/dev/null", "-G", target.address])
    if not default or _ssh_ciphers(target.ssh_argv("-G")) != default:
        return []  # a config file chose the ciphers (or ssh could not tell): leave them alone
    if not all(cipher in default for cipher in FAST_CIPHERS):
        return []
    ordered = [*FAST_CIPHERS, *(c for c in default if c not in FAST_CIPHERS)]
    return ["-o", "Ciphers=" + ",".join(ordered)]


def remote_agent(
    target: Target,
    run_id: str,
    paths: Sequence[str],
    timeout: float,
    control_path: Path,
    link_timeout: float,
    registry: Registry,
) -> AgentSession:
    """The target's agent over ssh; this ssh process is the run's ControlMaster."""
    code = Path(agent_module.__file__).read_text()
    remote = [target.python, "-c", code, "monitor", "--run", run_id, "--timeout", str(timeout), "--lock"]
    remote += ["--peer", socket.gethostname()]
    for path in paths:
        remote += ["--path", path]
    if target.become:
        remote = ["sudo", "-n", "--", *remote]
    argv = target.ssh_argv(
        "-T",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=10",
        "-o", "ControlMaster=yes",
        "-o", f"ControlPath={control_path}",
        "-o", "ControlPersist=no",
        "-o", "ServerAliveInterval=1",
        "-o", f"ServerAliveCountMax={max(2, int(link_timeout))}",
        *cipher_preference(target),
    )  # fmt: skip
    argv.append(shlex.join(remote))
    return AgentSession(target.name, argv, registry, "agent:target")


def close_master(target: Target, control_path: Path) -> None:
    """``ssh -O exit`` on the run's control socket (ends the master and every session on it)."""
    if not control_path.exists():
        return
    argv = target.ssh_argv("-o", f"ControlPath={control_path}", "-O", "exit")
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        subprocess.run(argv, capture_output=True, timeout=3, check=False)


class Monitor(threading.Thread):
    """Heartbeats, disk space and link watch for the run (one thread)."""

    def __init__(
        self,
        agents: dict[str, AgentSession],
        target_label: str,
        disk: DiskConfig,
        link_timeout: float,
        abort: AbortController,
    ) -> None:
        super().__init__(name="monitor", daemon=True)
        self.agents = agents
        self.target_label = target_label
        self.disk = disk
        self.link_timeout = link_timeout
        self.abort = abort
        self._stop_event = threading.Event()
        self._warned: set[tuple[str, str]] = set()

    def stop(self) -> None:
        self._stop_event.set()

    def preflight(self) -> None:
        """Check free space against ``preflight_minimum`` on both machines before anything changes."""
        for agent in self.agents.values():
            agent.ping()
        for agent in self.agents.values():
            hb = agent.wait_for("hb", max(self.link_timeout, 5.0))
            if hb is None:
                raise TargetError(
                    f"no heartbeat from the agent on {agent.label}", "check the link to the target and retry"
                )
            for figure in agent.disk:
                if "error" in figure:
                    raise PcsError(
                        f"cannot watch free space of {figure['path']} on {agent.label}: {figure['error']}",
                        "fix disk.paths in the config",
                    )
                free, total = int(figure["free"]), int(figure["total"])
                if self.disk.preflight_minimum.breached(free, total):
                    raise PcsError(
                        f"not enough free space on {agent.label}: {figure['path']} has "
                        f"{format_bytes(free)} free, "
                        f"preflight_minimum is {self.disk.preflight_minimum.text}",
                        "free some space or lower disk.preflight_minimum in the config",
                    )
                log.debug(
                    "free space on %s %s: %s of %s",
                    agent.label,
                    figure["path"],
                    format_bytes(free),
                    format_bytes(total),
                    extra={"host": agent.label},
                )

    def run(self) -> None:
        # the ping is both the disk check and the heartbeat: at least twice per link_timeout, or a
        # disk.interval longer than link_timeout would read as a lost link
        while not self._stop_event.wait(min(self.disk.interval, self.link_timeout / 2)):
            for agent in self.agents.values():
                agent.ping()
                self._check_disk(agent)
            if self.link_lost():
                return

    def link_lost(self) -> bool:
        """Whether the target's connection is gone (its ssh master ended) or silent for longer than
        ``link_timeout``; if so, the abort's cause is the lost link (first cause wins).

        The watch loop asks on each turn. The driver asks too before it blames a failed job: when
        the link dies, Ansible's tasks fail as unreachable through the same master, often before the
        loop's next turn, and the cause to report is the link, not the job.
        """
        target = self.agents.get(self.target_label)
        if target is None or target.closing:
            return False
        silent = time.monotonic() - target.last_seen
        if not target.alive:
            why = "its ssh connection ended"
        elif silent > self.link_timeout:
            why = f"no heartbeat for {silent:.1f} s (link_timeout {self.link_timeout:g} s)"
        else:
            return False
        label = self.target_label
        self.abort.request(Cause.LINK, f"lost connection to {label}: {why}", host=label)
        return True

    def _check_disk(self, agent: AgentSession) -> None:
        for figure in agent.disk:
            if "error" in figure:
                continue
            free, total = int(figure["free"]), int(figure["total"])
            path = str(figure["path"])
            fields: dict[str, Any] = {"path": path, "free": free, "total": total}
            if self.disk.runtime_minimum.breached(free, total):
                self.abort.request(
                    Cause.DISK,
                    f"free space on {agent.label} {path} is {format_bytes(free)}, below runtime_minimum "
                    f"{self.disk.runtime_minimum.text}",
                    host=agent.label,
                    threshold=self.disk.runtime_minimum.text,
                    **fields,
                )
            elif (
                self.disk.warning_threshold.breached(free, total) and (agent.label, path) not in self._warned
            ):
                self._warned.add((agent.label, path))
                log.warning(
                    "free space on %s %s is %s, below warning_threshold %s",
                    agent.label,
                    path,
                    format_bytes(free),
                    self.disk.warning_threshold.text,
                    extra={"host": agent.label, "fields": fields},
                )
