"""Running one playbook as its own ansible-playbook process through ansible-runner.

This module is the only caller of ``ansible_runner``. Each :class:`PlaybookRun` gets a fresh private
data dir (runner silently prefers stale files in ``env/``), its own environment, and reports events
to a callback. ansible-playbook is started through a small wrapper that asks the kernel to send it
SIGTERM when the driver dies (``setpriv --pdeathsig``), so a killed driver leaves no controller.

Stopping: :meth:`PlaybookRun.terminate` sends SIGTERM to the ansible-playbook main process — the
clean stop, which makes it kill its workers and their ssh clients. Runner's own cancel only
SIGKILLs the process group and leaves the setsid'ed workers running (see docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

EventHandler = Callable[[dict[str, Any]], None]
RUN_ENV_MARK = "PCSWITCHER_INVOCATION"  # identifies the ansible-playbook process of one PlaybookRun
ERROR_PREFIXES = ("[ERROR]: ", "ERROR! ")  # how ansible-core 2.19 and earlier display an error

WRAPPER = """#!/bin/sh
# ansible-playbook for pc-switcher: dies with the driver (parent-death signal), see pcswitcher/jobs/runner.py
if command -v setpriv >/dev/null 2>&1; then
  exec setpriv --pdeathsig TERM -- {real} "$@"
fi
exec {real} "$@"
"""


def spare_close_delay() -> None:
    """No 0.1 s sleep at the end of every playbook run.

    ansible-runner (2.4, pexpect mode) loops ``while child.isalive()``, which reaps ansible-playbook,
    then calls ``child.close()``; ptyprocess's close sleeps ``delayafterclose`` (0.1 s) "to give the
    kernel time to update the process status" before it looks whether the child still lives, and
    kills it if so. After the loop the status is known: the sleep is 0.1 s at the end of each
    playbook, in a sync's path. Runner builds its ``pexpect.spawn`` itself, so runner's module gets
    a view of pexpect whose ``spawn`` skips the sleep when (and only when) the child has ended;
    a close of a live child sleeps and kills as before. Idempotent.
    """
    import ansible_runner.runner as runner_module
    import pexpect

    spawn = _spawn_class()
    if getattr(runner_module.pexpect, "spawn", None) is spawn:
        return
    view = type(pexpect)("pexpect")
    view.__dict__.update(vars(pexpect))
    view.spawn = spawn
    runner_module.pexpect = view


@functools.cache
def _spawn_class() -> Any:
    """The subclass of ``pexpect.spawn`` that :func:`spare_close_delay` installs (made once)."""
    import pexpect

    class Spawn(pexpect.spawn):  # type: ignore[misc]
        def close(self, force: bool = True) -> None:
            if not self.closed and not self.isalive():  # ended and reaped: nothing to wait for
                self.ptyproc.delayafterclose = 0.0
            super().close(force)

    return Spawn


@dataclass
class PlaybookResult:
    status: str  # successful | failed | canceled | timeout
    rc: int
    duration: float
    failures: list[str] = field(default_factory=list)
    changed: int = 0
    set_stats: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # Ansible's own errors, see reason()

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    def reason(self, fallback: str) -> str:
        """Why it failed, in one line: its failed tasks; else Ansible's own errors (a playbook that
        ended without a failed task: a syntax error, an unknown module, a gate that could not hold);
        else ``fallback``."""
        return "; ".join(self.failures) or "; ".join(self.errors) or fallback


def prepare_bin_dir(directory: Path) -> Path:
    """Write the ansible-playbook wrapper into ``directory`` and return it (put it first on PATH)."""
    directory.mkdir(parents=True, exist_ok=True)
    real = Path(sys.executable).parent / "ansible-playbook"
    if not real.exists():
        found = shutil.which("ansible-playbook")
        if found is None:
            raise FileNotFoundError("ansible-playbook not found; reinstall pc-switcher (make install)")
        real = Path(found)
    wrapper = directory / "ansible-playbook"
    wrapper.write_text(WRAPPER.format(real=real))
    wrapper.chmod(0o755)
    return directory


class PlaybookRun:
    """One ansible-playbook process, started through ansible-runner in a thread."""

    def __init__(  # noqa: PLR0913 -- keyword-only, one per ansible-runner input of the run
        self,
        playbook: Path,
        *,
        project_dir: Path,
        private_data_dir: Path,
        ident: str,
        inventory: Path,
        limit: str,
        extravars: Mapping[str, Any],
        envvars: Mapping[str, str],
        tags: Sequence[str] = (),
        skip_tags: Sequence[str] = (),
        check: bool = False,
        on_event: EventHandler | None = None,
    ) -> None:
        self.playbook = playbook
        self.project_dir = project_dir
        self.private_data_dir = private_data_dir
        self.ident = ident
        self.inventory = inventory
        self.limit = limit
        self.extravars = dict(extravars)
        self.envvars = {**envvars, RUN_ENV_MARK: str(private_data_dir)}
        self.tags = tags
        self.skip_tags = skip_tags
        self.check = check
        self.on_event = on_event
        self.failures: list[str] = []
        self.errors: list[str] = []  # Ansible's "[ERROR]: ..." lines, each with its origin
        self._error_open = False  # the last line was such an error: an "Origin:" line may follow
        self.changed = 0
        self.set_stats: dict[str, Any] = {}
        self._process: psutil.Process | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._started = 0.0
        #: stop with SIGKILL, not SIGTERM: a run that has run no task yet (held by the gate, see
        #: gate.py) has no worker and no connection to end, and Ansible's SIGTERM handler would
        #: only run between two bytecodes of its start-up
        self.kill_on_stop = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        import ansible_runner  # imported here: a heavy import only the runs need

        spare_close_delay()

        self.private_data_dir.mkdir(parents=True, exist_ok=True)
        cmdline = "--check --diff" if self.check else ""
        self._started = time.monotonic()
        kwargs: dict[str, Any] = dict(
            private_data_dir=str(self.private_data_dir),
            project_dir=str(self.project_dir),
            playbook=str(self.playbook),
            inventory=str(self.inventory),
            limit=self.limit,
            extravars=self.extravars,
            envvars=self.envvars,
            ident=self.ident,
            cmdline=cmdline or None,
            quiet=True,
            settings={"pexpect_timeout": 0.2, "suppress_ansible_output": True},
            event_handler=self._handle_event,
            cancel_callback=self._cancel.is_set,
            rotate_artifacts=1,
        )
        if self.tags:
            kwargs["tags"] = ",".join(self.tags)
        if self.skip_tags:
            kwargs["skip_tags"] = ",".join(self.skip_tags)
        self._thread, self._runner = ansible_runner.run_async(**kwargs)

    def _handle_event(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        if kind == "runner_on_failed" and not data.get("ignore_errors"):
            self.failures.append(_failure_message(data.get("task", ""), data.get("host", ""), res))
        elif kind == "runner_on_unreachable":
            self.failures.append(f"{data.get('host', '')} unreachable: {res.get('msg', '').strip()}")
        elif kind == "runner_on_ok" and res.get("changed"):
            self.changed += 1
        elif kind == "playbook_on_stats":
            self.set_stats = dict(data.get("artifact_data") or {})
        elif kind in ("verbose", "error"):
            self._note_errors(str(event.get("stdout") or ""))
        if self.on_event is not None:
            self.on_event(event)
        return True

    def _note_errors(self, text: str) -> None:
        """Keep the errors Ansible displays outside any task (one event, or one event per line)."""
        for raw in text.splitlines():
            line = raw.strip()
            prefix = next((p for p in ERROR_PREFIXES if line.startswith(p)), None)
            if prefix is not None:
                self.errors.append(line[len(prefix) :].strip())
                self._error_open = True
            elif line.startswith("Origin: ") and self._error_open:
                self.errors[-1] += f" ({line.removeprefix('Origin: ')})"
                self._error_open = False
            elif line:
                self._error_open = False

    @property
    def process(self) -> psutil.Process | None:
        """The ansible-playbook main process (found among the driver's children by its mark)."""
        if self._process is not None:
            return self._process
        mark = str(self.private_data_dir)
        for child in psutil.Process().children():
            try:
                if child.environ().get(RUN_ENV_MARK) == mark:
                    self._process = child
                    return child
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return None

    def wait_for_process(self, timeout: float = 5.0) -> psutil.Process | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.is_alive():
            if self.process is not None:
                return self._process
            time.sleep(0.01)
        return self.process

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def terminate(self) -> None:
        """The clean stop: SIGTERM to ansible-playbook, which ends its workers and ssh clients
        (SIGKILL with :attr:`kill_on_stop`)."""
        proc = self.process
        if proc is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL if self.kill_on_stop else signal.SIGTERM)

    def cancel(self) -> None:
        """Make runner return (it SIGKILLs the playbook's process group) — after terminate()."""
        self._cancel.set()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self) -> PlaybookResult:
        runner = self._runner
        status = getattr(runner, "status", "failed") or "failed"
        rc = getattr(runner, "rc", None)
        return PlaybookResult(
            status=status,
            rc=rc if isinstance(rc, int) else 1,
            duration=time.monotonic() - self._started,
            failures=list(self.failures),
            errors=list(self.errors),
            changed=self.changed,
            set_stats=dict(self.set_stats),
        )

    def run_to_end(
        self, timeout: float | None = None, on_process: Callable[[psutil.Process], None] | None = None
    ) -> PlaybookResult:
        """Start, wait at most ``timeout`` seconds (then stop it the clean way), scrub, return the result.

        For playbooks run outside a sync's abort path (the cleanup playbook, the CLI's safety
        commands); an exception while waiting (Ctrl+C) stops the playbook before it propagates.
        """
        self.start()
        try:
            proc = self.wait_for_process()
            if proc is not None and on_process is not None:
                on_process(proc)
            if not self.join(timeout):
                self._stop()
        except BaseException:
            self._stop()
            raise
        finally:
            self.scrub()
        return self.result()

    def _stop(self) -> None:
        self.terminate()
        self.cancel()
        self.join(5)

    def scrub(self) -> None:
        """Remove what may hold secrets: runner's env/ copies and the `command` artifact (full env)."""
        shutil.rmtree(self.private_data_dir / "env", ignore_errors=True)
        for command in self.private_data_dir.glob("artifacts/*/command"):
            command.unlink(missing_ok=True)


def _failure_message(task: str, host: str, res: Mapping[str, Any]) -> str:
    msg = failure_reason(res)
    return f"{task} on {host}: {msg}" if task else f"{host}: {msg}"


def failure_reason(res: Mapping[str, Any]) -> str:
    """The reason of a failed task's result: of a loop, its failed items' reasons (Ansible's "One or
    more items failed" says nothing); else its ``msg``, with the last line of its stderr when that
    adds to it (alone when ``msg`` is only Ansible's "non-zero return code"), else its exit code."""
    items = [item for item in res.get("results") or [] if isinstance(item, Mapping) and item.get("failed")]
    if items:
        return "; ".join(dict.fromkeys(failure_reason(item) for item in items))
    msg = str(res.get("msg") or "").strip()
    stderr = str(res.get("stderr") or "").strip()
    if stderr and stderr not in msg:
        last = stderr.splitlines()[-1].strip()
        msg = f"{msg}: {last}" if msg and msg != "non-zero return code" else last
    if not msg and "rc" in res:
        msg = f"exit code {res['rc']}"
    return msg


CALLBACK_DIR = Path(__file__).resolve().parent / "plugins" / "callback"
EXIT_PLUGIN = "pcswitcher_exit"  # every playbook's quick shutdown (plugins/callback/pcswitcher_exit.py)


def enable_callback(env: dict[str, str], name: str) -> None:
    """Enable pc-switcher's callback plugin ``name`` in ``env``, keeping the callbacks the user
    enabled (``ANSIBLE_CALLBACKS_ENABLED``) and their plugin paths."""
    enabled = env.get("ANSIBLE_CALLBACKS_ENABLED", os.environ.get("ANSIBLE_CALLBACKS_ENABLED", ""))
    names = [c.strip() for c in enabled.split(",") if c.strip()]
    paths = env.get("ANSIBLE_CALLBACK_PLUGINS", os.environ.get("ANSIBLE_CALLBACK_PLUGINS", ""))
    if str(CALLBACK_DIR) not in paths.split(os.pathsep):
        paths = os.pathsep.join(filter(None, [str(CALLBACK_DIR), paths]))
    env["ANSIBLE_CALLBACK_PLUGINS"] = paths
    env["ANSIBLE_CALLBACKS_ENABLED"] = ",".join([*names, name] if name not in names else names)


def standard_envvars(
    *,
    project_dir: Path,
    bin_dir: Path,
    control_path: Path | None,
    run_dir: str | None,
    local_tmp: Path,
    ssh_keepalive: float,
) -> dict[str, str]:
    """The environment every ansible-playbook of a run gets (see docs/architecture.md)."""
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    user_home = os.path.expanduser(os.environ.get("ANSIBLE_HOME") or "~/.ansible")
    ssh_args = ["-C", f"-o ServerAliveInterval={max(1, int(ssh_keepalive))}", "-o ServerAliveCountMax=3"]
    if control_path is not None:
        # use the run's master (the driver's monitor session) when it is there, never start a
        # persistent master of our own: nothing may outlive the run
        ssh_args += ["-o ControlMaster=no", f"-o ControlPath={control_path}"]
    env = {
        "PATH": path,
        "ANSIBLE_ROLES_PATH": str(project_dir / "roles"),
        "ANSIBLE_HOST_KEY_CHECKING": os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "True"),
        "ANSIBLE_SSH_ARGS": " ".join(ssh_args),
        "ANSIBLE_PIPELINING": os.environ.get("ANSIBLE_PIPELINING", "True"),
        "ANSIBLE_LOCAL_TEMP": str(local_tmp),
        # ansible-playbook makes ANSIBLE_HOME (~/.ansible) when it starts: a run's is its own, so
        # that a run creates nothing in the user's home; the collections are still looked up in
        # the user's (Ansible's default, from the user's ANSIBLE_HOME)
        "ANSIBLE_HOME": str(local_tmp),
        "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH")
        or f"{user_home}/collections:/usr/share/ansible/collections",
        "ANSIBLE_TIMEOUT": os.environ.get("ANSIBLE_TIMEOUT", "10"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_PYTHON_INTERPRETER": os.environ.get("ANSIBLE_PYTHON_INTERPRETER", "auto_silent"),
        # an inventory source that no plugin parses is an error, as in the driver (inventory.py)
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": os.environ.get("ANSIBLE_INVENTORY_UNPARSED_FAILED", "True"),
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": os.environ.get(
            "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED", "True"
        ),
    }
    if run_dir is not None:
        env["ANSIBLE_REMOTE_TMP"] = f"{run_dir}/tmp"
        env["ANSIBLE_ASYNC_DIR"] = f"{run_dir}/async"
        # the controller's own temp files (Python's tempfile, multiprocessing's pymp-*) too
        env["TMPDIR"] = run_dir
    enable_callback(env, EXIT_PLUGIN)
    return env
