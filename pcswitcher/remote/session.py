"""A session with one pc-switcher agent (agent.py): start it, wait for its hello, ask and wait for replies.

An :class:`AgentSession` is a long-lived session with a ``pcswitcher.remote.agent`` in ``monitor`` mode: on
the source a child process with pipes (:func:`local_agent`), on the target an ssh session that is
also the run's ControlMaster (:func:`remote_agent`, ssh.py; when the driver dies, it dies, and the
target's agent sweeps the run's processes — the dead-man switch). The driver writes commands to the
agent's stdin, one per line; the agent answers with JSON lines on stdout (the protocol: agent.py).

The target's agent starts with a short command line that names it and its run
(``python3 -c <bootstrap> pcswitcher-agent monitor --run <run id> ...``): the bootstrap reads the
agent's source from stdin first (:func:`agent_bootstrap`), so the target's ``ps`` shows no source
code, and a user's ``pgrep -f``/``pkill -f`` cannot match words inside it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
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

from pcswitcher.errors import LockHeld, TargetError
from pcswitcher.jobs.registry import Registry
from pcswitcher.remote import agent as agent_module
from pcswitcher.remote.agent import AGENT_NAME, describe_holder
from pcswitcher.remote.inventory import Target
from pcswitcher.remote.ssh import master_argv

log = logging.getLogger("pcswitcher")
ProgressHandler = Callable[[str, dict[str, Any]], None]
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel for SIGTERM when the driver dies (prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class AgentSession:
    """One agent: ``label`` names the machine in logs ("source host name" or the target's name).

    ``preamble`` is written to the agent's stdin before any command (the target agent's source)."""

    def __init__(
        self, label: str, argv: Sequence[str], registry: Registry, role: str, preamble: bytes = b""
    ) -> None:
        self.label = label
        self.argv = list(argv)
        self.registry = registry
        self.role = role
        self.preamble = preamble
        self.proc: subprocess.Popen[bytes] | None = None
        self.hello: dict[str, Any] = {}
        self.last_seen = 0.0
        self.disk: list[dict[str, Any]] = []
        self.on_progress: ProgressHandler | None = None
        self._stderr: list[str] = []
        self._replies: dict[str, list[dict[str, Any]]] = {}
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._preamble_written = threading.Event()
        self._queued: list[bytes] = []  # commands sent before the preamble was all written
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
        if self.preamble:  # a failed start shows as no hello (wait_ready)
            assert self.proc.stdin is not None
            fd = os.dup(self.proc.stdin.fileno())  # its own: stdin may be closed meanwhile
            threading.Thread(
                target=self._write_preamble, args=(fd,), name=f"agent-in-{self.label}", daemon=True
            ).start()
        else:
            self._preamble_written.set()
        threading.Thread(target=self._read_stdout, name=f"agent-{self.label}", daemon=True).start()
        self._stderr_reader = threading.Thread(
            target=self._read_stderr, name=f"agent-err-{self.label}", daemon=True
        )
        self._stderr_reader.start()

    def _write_preamble(self, fd: int) -> None:
        """The agent's source, then the commands sent meanwhile, in a thread of its own: the source
        is larger than a pipe's buffer, and ssh reads it only once its connection is up, so the
        spawner must not wait for it (an abort while the agents connect, a frozen sshd). Written on
        a duplicate of stdin's descriptor: closing the session's stdin must not wait behind it."""
        try:
            view = memoryview(self.preamble)
            while view:
                view = view[os.write(fd, view) :]
            with self._write_lock:
                for data in self._queued:
                    os.write(fd, data)  # a command is far below a pipe's atomic size
                self._queued.clear()
                self._preamble_written.set()
        except OSError:
            pass  # the agent is gone: no hello, or the session's end says so
        finally:
            os.close(fd)

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
            raise TargetError(self._start_failure(), start_hint(" ".join(self._stderr)))
        if hello.get("t") == "locked":
            self.kill()
            raise _lock_refusal(self.label, hello)
        self.hello = hello
        return hello

    def _start_failure(self) -> str:
        err = [ln for ln in self._stderr if ln.strip() and not ln.startswith("Warning: Permanently added")]
        detail = err[-1].strip() if err else "no answer"
        return f"cannot start the pc-switcher agent on {self.label}: {detail}"

    def _read_stdout(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                log.debug("agent %s: %s", self.label, raw.decode(errors="replace").rstrip())
                continue
            if isinstance(message, dict):
                self._receive(message)
        with self._cond:
            self._reader_done = True
            self._cond.notify_all()

    def _receive(self, message: dict[str, Any]) -> None:
        """One message of the agent: progress lines go to ``on_progress``, the rest wait for
        :meth:`wait_for` (a heartbeat also updates :attr:`disk`)."""
        self.last_seen = time.monotonic()
        kind = message.get("t")
        if kind == "progress":
            line = message.get("line")
            if self.on_progress is not None and isinstance(line, dict):
                self.on_progress(self.label, line)
            return
        if kind == "hb":
            self.disk = list(message.get("disk") or [])
        with self._cond:
            self._replies.setdefault(str(kind), []).append(message)
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

    # -- requests and replies --------------------------------------------------------------------
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
        """Write one command (queued behind the agent's source while that is being written);
        False when stdin is closed."""
        data = line.encode() + b"\n"
        with self._write_lock:
            if not self._preamble_written.is_set():
                self._queued.append(data)
                return True
        return self._write(data)

    def _write(self, data: bytes) -> bool:
        if self.proc is None or self.proc.stdin is None:
            return False
        with self._write_lock:
            try:
                self.proc.stdin.write(data)
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
        return self.request("sweep", " ".join(jids), timeout, reply="swept")

    def request(
        self,
        command: str,
        payload: dict[str, Any] | str,
        timeout: float,
        reply: str = "",
        cancel: threading.Event | None = None,
    ) -> dict[str, Any] | None:
        """``command PAYLOAD`` (a dict is sent as JSON) -> the agent's reply of kind ``reply`` (by
        default ``command``; or ``busy``: the agent works on another one), or None when none came in
        time or ``cancel`` was set."""
        kind = reply or command
        with self._cond:
            self._replies.pop(kind, None)
            self._replies.pop("busy", None)
        text = payload if isinstance(payload, str) else json.dumps(payload)
        if not self.send(f"{command} {text}".rstrip()):
            return None
        return self.wait_for_any((kind, "busy"), timeout, cancel)

    # -- the end ---------------------------------------------------------------------------------
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


def _lock_refusal(label: str, locked: dict[str, Any]) -> LockHeld:
    """The error for an agent's ``locked`` message: the target is this machine, or another sync holds it."""
    holder = locked.get("holder") or {}
    if holder.get("role") == "source" and holder.get("host", locked.get("host")) == socket.gethostname():
        return LockHeld(
            f"{label} is this machine (host name {locked.get('host')}); a machine cannot sync to itself",
            "pick another target from the inventory",
        )
    return LockHeld(
        f"target {label} is busy: another sync holds its lock {locked.get('path')} "
        f"({describe_holder(holder)})",
        "wait for that sync to finish; the lock ends with its run and its connection",
    )


def start_hint(stderr: str) -> str:
    """The fix to name when an agent did not start, from what ssh, sudo or the shell said."""
    text = stderr.lower()
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


def _monitor_args(run_id: str, timeout: float, paths: Sequence[str]) -> list[str]:
    """The agent's ``monitor`` command line (after the program)."""
    args = ["monitor", "--run", run_id, "--timeout", f"{timeout:g}"]
    for path in paths:
        args += ["--path", path]
    return args


def local_agent(
    run_id: str, label: str, paths: Sequence[str], timeout: float, registry: Registry
) -> AgentSession:
    argv = [sys.executable, "-I", str(Path(agent_module.__file__)), *_monitor_args(run_id, timeout, paths)]
    return AgentSession(label, argv, registry, "agent:source")


def agent_bootstrap(size: int) -> str:
    """The program text of the target agent's ``python3 -c TEXT pcswitcher-agent ARGS``: read the
    agent's source (``size`` bytes) from stdin and run it; the agent takes ARGS after its name.

    It reads with os.read, exactly ``size`` bytes: nothing after the source may be read ahead, the
    rest of stdin is the agent's commands. Without the whole source (EOF), it exits 1."""
    return f"import os;b=b'';n={size}\nwhile n:c=os.read(0,n);b+=c;n-=len(c)or exit(1)\nexec(b)"


def remote_command(
    target: Target, run_id: str, paths: Sequence[str], timeout: float
) -> tuple[list[str], bytes]:
    """The command line of the target's agent (the session's first bytes on stdin, the agent's
    source, go with it): ``python3 -c <bootstrap> pcswitcher-agent monitor --run <run id> ...``."""
    source = Path(agent_module.__file__).read_bytes()
    remote = [target.python, "-c", agent_bootstrap(len(source)), AGENT_NAME]
    remote += [*_monitor_args(run_id, timeout, paths), "--lock", socket.gethostname()]
    if target.become:
        remote = ["sudo", "-n", "--", *remote]
    return remote, source


def remote_agent(
    target: Target,
    run_id: str,
    *,
    paths: Sequence[str],
    timeout: float,
    control_path: Path,
    link_timeout: float,
    registry: Registry,
) -> AgentSession:
    """The target's agent over ssh; this ssh process is the run's ControlMaster."""
    remote, source = remote_command(target, run_id, paths, timeout)
    argv = master_argv(target, control_path, link_timeout, shlex.join(remote))
    return AgentSession(target.name, argv, registry, "agent:target", preamble=source)
