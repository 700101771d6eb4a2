"""Sandbox "machines" on this host: PID+mount+UTS namespaces with their own btrfs and sshd.

A plain machine shares this host's /usr and /etc; a root machine (``Sandbox.add(name, root=True)``)
has its own Debian root, a btrfs snapshot of the cache of :mod:`tests.sandbox.rootfs`.

A :class:`Sandbox` owns a state dir (default ``/var/tmp/pcswitcher-sandbox/<id>/``, base overridable
with ``$PCS_SANDBOX_DIR``) holding the client key, ``known_hosts``, the Ansible inventory and a
``state.json`` that records the host pids (with their create times) of everything it started, so that
:func:`down_all` can clean up after a crashed owner. Needs root.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import yaml

from pcswitcher.remote.agent import start_ticks

DEFAULT_BASE = Path("/var/tmp/pcswitcher-sandbox")
BASE_ENV = "PCS_SANDBOX_DIR"
STATE_FILE = "state.json"
REPO = Path(__file__).resolve().parents[2]
BTRFS_TOP = "/run/pcs-btrfs"
PYTHON_INTERPRETER = "/usr/bin/python3"
# host dirs every machine sees through a private overlay (host content visible, writes its own)
OVERLAY_DIRS = ("/opt", "/usr/local")
SSHD = "/usr/sbin/sshd"
_INIT_SCRIPT = Path(__file__).with_name("_init.py")
_FORBIDDEN_BASES = ("/tmp", "/home", "/root", "/run")
# where a root machine may get a read-only bind of a host dir (ro_binds)
RO_BIND_PARENTS = ("/srv", "/mnt", "/opt", "/media")
_PATH_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NO_SUBVOLUME_AT = frozenset(
    ["/", "/bin", "/etc", "/lib", "/lib64", "/sbin", "/usr", "/usr/bin", "/usr/lib", "/usr/sbin", "/var"]
)

log = logging.getLogger("tests.sandbox")


class SandboxError(RuntimeError):
    """Bringing a machine up or tearing a sandbox down failed."""


def resolve_base_dir(override: Path | None = None) -> Path:
    """The directory holding all sandboxes (``$PCS_SANDBOX_DIR`` or ``/var/tmp/pcswitcher-sandbox``)."""
    base = override or Path(os.environ.get(BASE_ENV) or DEFAULT_BASE)
    base = Path(os.path.abspath(base))
    for bad in _FORBIDDEN_BASES:
        if base == Path(bad) or base.is_relative_to(bad):
            raise SandboxError(f"sandbox dir {base} must not be under {bad} (overmounted inside machines)")
    return base


# --------------------------------------------------------------------------- process helpers


def live_process(pid: int | None, start: int | None) -> psutil.Process | None:
    """The live process ``pid`` if it is still the one that started at tick ``start`` (guards against
    reuse; ticks since boot, not wall-clock time, which moves when NTP steps or slews the clock)."""
    if not pid or not start:
        return None
    try:
        proc = psutil.Process(pid)
        if start_ticks(pid) != start:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None


def _ns_id(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _pids_in_ns(kind: str, ns: str) -> list[int]:
    """Host pids of live (non-zombie) processes whose ``/proc/PID/ns/<kind>`` is ``ns``."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        if _ns_id(int(entry), kind) != ns:
            continue
        try:
            if psutil.Process(int(entry)).status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        found.append(int(entry))
    return found


def _describe(pids: list[int]) -> str:
    parts: list[str] = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            parts.append(f"{pid}:{proc.status()}:{' '.join(proc.cmdline())[:60]}")
        except psutil.Error:
            parts.append(f"{pid}:gone")
    return ", ".join(parts) or "none"


def _signal(proc: psutil.Process | None, sig: signal.Signals) -> None:
    if proc is None:
        return
    with contextlib.suppress(psutil.Error):
        proc.send_signal(sig)


def _wait_until(cond: Any, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


LOOP_CTL_ADD = 0x4C80
LOOP_DEVICES = 32


def ensure_loop_devices(count: int = LOOP_DEVICES) -> None:
    """Make sure /dev/loop0..count-1 exist (this VM boots with 8 and has no udev to add more)."""
    missing = [i for i in range(count) if not Path(f"/dev/loop{i}").exists()]
    if not missing:
        return
    with contextlib.suppress(OSError):
        fd = os.open("/dev/loop-control", os.O_RDWR)
        try:
            for index in missing:
                with contextlib.suppress(OSError):
                    fcntl.ioctl(fd, LOOP_CTL_ADD, index)  # devtmpfs creates the node
        finally:
            os.close(fd)


def _loop_devices(image: Path) -> list[str]:
    out = subprocess.run(
        ["losetup", "-n", "-O", "NAME", "-j", str(image)], capture_output=True, text=True, check=False
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def _host_mounts_under(path: Path) -> list[str]:
    hits: list[str] = []
    prefix = str(path)
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            mnt = fields[4].encode().decode("unicode_escape")
            if mnt == prefix or mnt.startswith(prefix + "/"):
                hits.append(mnt)
    return hits


# --------------------------------------------------------------------------- state file


def _read_state(sandbox_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((sandbox_dir / STATE_FILE).read_text())
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def base_lock(base: Path) -> Iterator[None]:
    """An exclusive flock on ``base/.lock`` (made with ``base`` when missing) while the block runs."""
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _recorded_addresses(base: Path, port: int) -> set[str]:
    used: set[str] = set()
    if not base.is_dir():
        return used
    for state_file in base.glob(f"*/{STATE_FILE}"):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        for rec in state.get("machines", {}).values():
            if rec.get("port") == port:
                used.add(str(rec.get("address")))
    return used


def _bindable(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- teardown


def _teardown_machine(rec: dict[str, Any], timeout: float = 60.0) -> list[str]:
    """Stop one machine from its state record; returns problems (empty when clean). A process of the
    namespace outlives the SIGKILL only while in uninterruptible sleep (such as I/O that the host's
    busy disk holds up): ``timeout`` bounds that wait, and a problem names each process left with its
    state and command."""
    problems: list[str] = []
    name = rec.get("name", "?")
    started = time.monotonic()
    init = live_process(rec.get("init_pid"), rec.get("init_start"))
    unshare = live_process(rec.get("unshare_pid"), rec.get("unshare_start"))
    if init is None and unshare is not None and not rec.get("init_pid"):
        # the owner died before it recorded the init: it is unshare's only child
        with contextlib.suppress(psutil.Error):
            init = next(iter(unshare.children()), None)
    pidns = _ns_id(init.pid, "pid") if init else None
    mntns = _ns_id(init.pid, "mnt") if init else None
    # SIGKILL of a namespace's PID 1 kills every process of the namespace; unshare then reaps it and
    # exits (it would also SIGKILL its child itself because of --kill-child).
    _signal(init, signal.SIGKILL)
    if unshare is not None:
        # it may stay a zombie when its parent (the crashed owner) is gone: live_process() says None
        _wait_until(lambda: live_process(rec.get("unshare_pid"), rec.get("unshare_start")) is None, 3.0)
        _signal(live_process(rec.get("unshare_pid"), rec.get("unshare_start")), signal.SIGKILL)
    log.debug(
        "%s: killed; left in pid ns: %s, mnt ns: %s",
        name,
        _describe(_pids_in_ns("pid", pidns)) if pidns else "-",
        _describe(_pids_in_ns("mnt", mntns)) if mntns else "-",
    )
    if pidns and not _wait_until(lambda: not _pids_in_ns("pid", pidns), timeout):
        problems.append(
            f"{name}: processes left in its PID namespace: {_describe(_pids_in_ns('pid', pidns))}"
        )
    if mntns and not _wait_until(lambda: not _pids_in_ns("mnt", mntns), timeout):
        problems.append(
            f"{name}: processes still hold its mount namespace: {_describe(_pids_in_ns('mnt', mntns))}"
        )
    log.debug("%s: namespace empty after %.2fs", name, time.monotonic() - started)
    image = rec.get("image")
    if image and Path(image).exists():
        img = Path(image)
        # mount -o loop sets autoclear: the device goes once the last mount of it is gone, which can
        # lag a little behind the namespace's end.
        if not _wait_until(lambda: not _loop_devices(img), 5.0):
            for dev in _loop_devices(img):
                subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
            if not _wait_until(lambda: not _loop_devices(img), 5.0):
                problems.append(f"{name}: loop device still attached: {_loop_devices(img)}")
    log.debug("%s: down after %.2fs", name, time.monotonic() - started)
    return problems


def _teardown_dir(sandbox_dir: Path) -> list[str]:
    problems: list[str] = []
    records: list[dict[str, Any]] = []
    try:
        records = list(_read_state(sandbox_dir).get("machines", {}).values())
    except (OSError, ValueError):
        # No usable state: only loop devices of images left behind can be cleaned.
        records = [{"name": img.parent.name, "image": str(img)} for img in sandbox_dir.glob("*/disk.img")]
    for rec in records:
        problems += _teardown_machine(rec)
    mounts = _host_mounts_under(sandbox_dir)
    if mounts:
        problems.append(f"mounts left under {sandbox_dir}: {mounts}")
    if not problems:
        shutil.rmtree(sandbox_dir, ignore_errors=True)
        if sandbox_dir.exists():
            problems.append(f"could not remove {sandbox_dir}")
    return problems


def down_dir(sandbox_dir: Path) -> None:
    """Tear down the sandbox recorded in ``sandbox_dir`` (for one left running or crashed)."""
    problems = _teardown_dir(Path(sandbox_dir))
    if problems:
        raise SandboxError("; ".join(problems))


def recorded_sandboxes(base: Path | None = None) -> list[Path]:
    """Sandbox dirs under the base dir (with or without a readable state file)."""
    root = resolve_base_dir(base)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("sb-"))


def _owner_alive(sandbox_dir: Path) -> bool:
    try:
        state = _read_state(sandbox_dir)
    except (OSError, ValueError):
        return False
    return live_process(state.get("owner_pid"), state.get("owner_start")) is not None


def kept_up(sandbox_dir: Path) -> bool:
    """The sandbox was brought up for a person (``python -m tests.sandbox up``: state ``kept``) and
    one of its machines still runs. A kept sandbox whose machines are all gone (a reboot) is not."""
    try:
        state = _read_state(sandbox_dir)
    except (OSError, ValueError):
        return False
    return state.get("kept") is True and any(
        live_process(rec.get("init_pid"), rec.get("init_start")) is not None
        for rec in (state.get("machines") or {}).values()
    )


def down_all(base_dir: Path | None = None, only_orphaned: bool = False) -> list[str]:
    """Tear down every sandbox recorded under the base dir; returns the dirs torn down.

    With ``only_orphaned``, sandboxes whose owner process is still alive (e.g. another test run in
    progress) and sandboxes kept up for a person (:func:`kept_up`) are left alone. Raises
    :class:`SandboxError` after trying all of them if any could not be cleaned completely.
    """
    done: list[str] = []
    problems: list[str] = []
    for sandbox_dir in recorded_sandboxes(base_dir):
        if only_orphaned and (_owner_alive(sandbox_dir) or kept_up(sandbox_dir)):
            continue
        found = _teardown_dir(sandbox_dir)
        if found:
            problems += found
        else:
            done.append(str(sandbox_dir))
    if problems:
        raise SandboxError("; ".join(problems))
    return done


# --------------------------------------------------------------------------- machine


class Machine:
    """One running machine. Create it with :meth:`Sandbox.add`."""

    def __init__(self, sandbox: Sandbox, record: dict[str, Any]) -> None:
        self._sandbox = sandbox
        self._record = record
        self.name: str = record["name"]
        self.address: str = record["address"]
        self.port: int = record["port"]
        self.init_pid: int = record["init_pid"]
        self.btrfs_top: str = record["btrfs_top"]
        self.state_dir: Path = Path(record["dir"])
        self.image: Path = Path(record["image"])
        #: a root machine (its own Debian root, see :mod:`tests.sandbox.rootfs`), not a plain one
        self.root: bool = bool(record.get("root"))
        self._pidns: str = record["pidns"]
        self._baseline: set[tuple[int, int]] = {(int(p), int(t)) for p, t in record["baseline"]}

    def __repr__(self) -> str:
        return f"Machine({self.name!r}, {self.address}:{self.port}, init_pid={self.init_pid})"

    @property
    def sshd_log(self) -> Path:
        return self.state_dir / "sshd.log"

    def exec_argv(self, argv: list[str], cwd: str | None = None) -> list[str]:
        """argv that runs ``argv`` inside the machine (its mounts, hostname and PID namespace).

        The command starts in ``/`` of the machine, or in the in-machine dir ``cwd``.
        """
        prefix = ["nsenter", f"--target={self.init_pid}", "--mount", "--uts", "--pid", "--"]
        if cwd is not None:
            # nsenter --wd=DIR would open DIR in the *host's* mount namespace.
            return [*prefix, "env", f"--chdir={cwd}", "--", *argv]
        return [*prefix, *argv]

    def run(self, argv: list[str], cwd: str | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the machine; text mode, output captured unless given, ``check=False``."""
        kw.setdefault("text", True)
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        check = bool(kw.pop("check", False))
        result: subprocess.CompletedProcess[str] = subprocess.run(
            self.exec_argv(argv, cwd), check=check, **kw
        )
        return result

    def popen(
        self, argv: list[str], cwd: str | None = None, die_with_handle: bool = True, **kw: Any
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the machine; text mode unless given.

        The returned handle is the host-side ``nsenter`` (not the process itself: nsenter forks it
        into the PID namespace and waits for it). With ``die_with_handle`` the process gets SIGKILL
        when that nsenter dies, so ``handle.kill()``/``terminate()`` reach it; nsenter itself
        ignores SIGINT/SIGQUIT.
        """
        kw.setdefault("text", True)
        if die_with_handle:
            argv = ["setpriv", "--pdeathsig", "KILL", "--", *argv]
        return subprocess.Popen(self.exec_argv(argv, cwd), **kw)

    def path(self, inside: str) -> Path:
        """Host path of the in-machine path ``inside`` (through ``/proc/<init_pid>/root``)."""
        return Path(f"/proc/{self.init_pid}/root") / inside.lstrip("/")

    def processes(self) -> list[psutil.Process]:
        """Every live process of the machine's PID namespace (host view)."""
        procs: list[psutil.Process] = []
        for pid in _pids_in_ns("pid", self._pidns):
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(pid))
        return procs

    def extra_processes(self) -> list[psutil.Process]:
        """:meth:`processes` minus the baseline (init and the sshd listener)."""
        extra: list[psutil.Process] = []
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                if (proc.pid, start_ticks(proc.pid)) not in self._baseline:
                    extra.append(proc)
        return extra

    def ssh_argv(self, argv: list[str] | None = None) -> list[str]:
        """``ssh`` argv running ``argv`` (shell-quoted) in the machine as root, host key checked."""
        sb = self._sandbox
        cmd = [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(sb.client_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={sb.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-p",
            str(self.port),
            "-l",
            "root",
            self.address,
        ]
        if argv:
            cmd += ["--", shlex.join(argv)]
        return cmd

    def add_login_user(self, user: str, uid: int, sudo: str | None = "ALL=(ALL:ALL) NOPASSWD: ALL") -> None:
        """A login user of this machine only: ``user`` (uid = gid = ``uid``, home ``/home/USER``,
        ``/bin/bash``, no password) in the machine's private /etc, with the sudoers rule ``USER SUDO``
        (default: every command as root, no password; None: no rule) in ``/etc/sudoers.d/``
        (checked by ``visudo``). It
        logs in with the sandbox's client key (sshd's ``AuthorizedKeysFile`` serves every user).

        Refused on a plain machine without a private /etc (the host's /etc is never written); a
        root machine's /etc is its own.
        """
        if not self._record.get("private_etc") and not self.root:
            raise SandboxError(
                f"{self.name}: no private /etc (add it with private_etc=True): not adding {user!r}"
            )
        if not _USER_NAME.fullmatch(user) or not 1000 <= uid < 60000 or (sudo is not None and "\n" in sudo):
            raise SandboxError(f"bad login user {user!r} or uid {uid}")
        res = self.run(["bash", "-c", _ADD_USER, "add-user", user, str(uid), sudo or ""])
        if res.returncode != 0:
            raise SandboxError(f"{self.name}: adding user {user}: {res.stderr.strip()}")

    def is_running(self) -> bool:
        return live_process(self._record.get("init_pid"), self._record.get("init_start")) is not None


# --------------------------------------------------------------------------- sandbox


class Sandbox:
    """A set of machines sharing a state dir, a client key, ``known_hosts`` and an inventory.

    Use as a context manager: ``__exit__`` always tears everything down (also when the body raised).
    """

    def __init__(self, base_dir: Path | None = None, size: str = "2G", port: int = 2222) -> None:
        if os.geteuid() != 0:
            raise SandboxError("sandbox machines need root")
        self.base_dir: Path = resolve_base_dir(base_dir)
        self.size = size
        self.port = port
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._set_paths(Path(tempfile.mkdtemp(prefix=time.strftime("sb-%Y%m%d-%H%M%S-"), dir=self.base_dir)))
        self.dir.chmod(0o755)
        me = psutil.Process()
        self._state: dict[str, Any] = {
            "version": 2,  # 2: process identity by start ticks (1: wall-clock ctime)
            "dir": str(self.dir),
            "owner_pid": me.pid,
            "owner_start": start_ticks(me.pid),
            "owner_cmdline": me.cmdline(),
            "created": time.time(),
            "port": port,
            "size": size,
            "machines": {},
        }
        self._save()
        try:
            _ssh_keygen(self.client_key, "pcswitcher-sandbox-client")
            shutil.copyfile(self.client_key.with_suffix(".pub"), self.authorized_keys)
            self.known_hosts.write_text("")
            self._write_inventory()
        except BaseException:
            self.down()
            raise

    def _set_paths(self, sandbox_dir: Path) -> None:
        self.dir: Path = sandbox_dir
        self.client_key: Path = self.dir / "client_ed25519"
        self.known_hosts: Path = self.dir / "known_hosts"
        self.authorized_keys: Path = self.dir / "authorized_keys"
        self.inventory_path: Path = self.dir / "inventory.yml"
        self.machines: dict[str, Machine] = {}
        self._popens: dict[str, subprocess.Popen[bytes]] = {}

    @classmethod
    def attach(cls, sandbox_dir: Path) -> Sandbox:
        """A handle on a sandbox brought up elsewhere (e.g. by ``python -m tests.sandbox up``).

        Its :meth:`down` (and ``__exit__``) tears that sandbox down like its own.
        """
        sandbox_dir = Path(os.path.abspath(sandbox_dir))
        state = _read_state(sandbox_dir)
        self = cls.__new__(cls)
        self.base_dir = sandbox_dir.parent
        self.size = str(state["size"])
        self.port = int(state["port"])
        self._set_paths(sandbox_dir)
        self._state = state
        for name, rec in state["machines"].items():
            if "baseline" not in rec or live_process(rec.get("init_pid"), rec.get("init_start")) is None:
                raise SandboxError(f"{sandbox_dir}: machine {name} is not running")
            self.machines[name] = Machine(self, rec)
        return self

    # -- context manager

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def __getitem__(self, name: str) -> Machine:
        return self.machines[name]

    # -- bring-up

    def add(
        self,
        name: str,
        extra_dirs: Sequence[str] = (),
        timeout: float = 30.0,
        private_etc: bool = False,
        root: bool = False,
        ro_binds: Mapping[str, Path] | None = None,
    ) -> Machine:
        """Bring up a machine called ``name``; returns once ``ssh <addr> hostname`` prints ``name``.

        ``/home`` and ``/root`` are btrfs subvolumes ``home`` and ``root`` of the machine's own
        filesystem. Every other path (``/etc``, ``/usr``, ``/var``, ...) is the host's, shared: give
        existing host dirs in ``extra_dirs`` (e.g. ``["/srv"]``) to overmount them with private
        subvolumes as well (subvolume name: the path with ``/`` replaced by ``_``, e.g. ``srv``;
        its mode the host dir's, e.g. 1777 for ``/var/tmp``; not a dir holding the sandbox dir).
        With ``private_etc`` the machine's ``/etc`` is a copy of the host's on its subvolume ``etc``
        (about 4 MB copied at start), so that :meth:`Machine.add_login_user` can add users and sudoers
        rules to this machine alone; its sshd and every process in it see that copy.
        ``/opt`` and ``/usr/local`` are overlays: the host's content visible, every write private to
        the machine (on its btrfs, outside its subvolumes) and gone at teardown.

        With ``root`` it is a *root machine*: its whole ``/`` is its own Debian system (the btrfs
        subvolume ``rootfs``, a snapshot of the cached root of :mod:`tests.sandbox.rootfs`, built
        first when missing), with its own dpkg database, ``/etc``, apt, python3 and sshd; only the
        checkout and the sandbox dir (read-write) and ``ro_binds`` are seen from the host, at the
        same paths. ``ro_binds`` maps an absolute path inside the machine, under one of
        :data:`RO_BIND_PARENTS` (e.g. ``/srv/pcs-apt``), to a host dir bound there read-only.
        ``extra_dirs`` and ``private_etc`` are for plain machines only.
        """
        rec = self._record(name, extra_dirs, private_etc, root, ro_binds or {})
        mdir = Path(rec["dir"])
        with base_lock(self.base_dir):
            rec["address"] = self._free_address()
            self._state["machines"][name] = rec
            self._save()
        try:
            self._start(rec, mdir, timeout)
        except BaseException:
            problems = _teardown_machine(rec)
            self._reap(name)
            self._state["machines"].pop(name, None)
            self._save()
            self._write_inventory()
            if problems:
                print(f"sandbox: cleanup after failed start of {name}: {problems}", file=sys.stderr)
            raise
        machine = Machine(self, rec)
        self.machines[name] = machine
        return machine

    def _record(
        self,
        name: str,
        extra_dirs: Sequence[str],
        private_etc: bool,
        root: bool,
        ro_binds: Mapping[str, Path],
    ) -> dict[str, Any]:
        """The checked record of a new machine (its address not chosen yet), its directory made."""
        if not name or not name.replace("-", "").isalnum() or name in self._state["machines"]:
            raise SandboxError(f"bad or duplicate machine name {name!r}")
        binds = _check_ro_binds(ro_binds, root)
        if root and (extra_dirs or private_etc):
            raise SandboxError(
                f"{name}: extra_dirs and private_etc are for plain machines (a root machine has its own)"
            )
        cache = _root_cache_image() if root else None
        ensure_loop_devices()
        subvolumes = [["/home", "home"], ["/root", "root"]]
        for extra in extra_dirs:
            norm = self._check_extra_dir(extra, subvolumes)
            subvolumes.append([norm, norm.strip("/").replace("/", "_")])
        mdir = self.dir / name
        mdir.mkdir(mode=0o755)
        return {
            "name": name,
            "dir": str(mdir),
            "port": self.port,
            "image": str(mdir / "disk.img"),
            "btrfs_top": BTRFS_TOP,
            "subvolumes": subvolumes,
            "private_etc": private_etc,
            "root": root,
            "root_cache": str(cache) if cache else None,
            "ro_binds": binds,
        }

    def _check_extra_dir(self, extra: str, subvolumes: list[list[str]]) -> str:
        norm = os.path.normpath(extra)
        if (
            not os.path.isabs(norm)
            or not os.path.isdir(norm)
            or norm in _NO_SUBVOLUME_AT
            or any(norm == d or norm.startswith(d + "/") for d in OVERLAY_DIRS)
            or norm.split("/")[1] in ("proc", "sys", "dev", "run", "tmp")
            or self.dir.is_relative_to(norm)
            or any(norm == t for t, _ in subvolumes)
        ):
            raise SandboxError(f"cannot give {extra!r} its own subvolume")
        return norm

    def _make_image(self, rec: dict[str, Any], image: Path) -> None:
        """A fresh btrfs, or for a root machine a sparse copy of the cached root's image (about 210 MB
        of data) with a new file system UUID (two mounted copies must not share one)."""
        size = _parse_size(self.size)
        if rec.get("root"):
            _check(["cp", "--sparse=always", str(rec["root_cache"]), str(image)])
            _check(["btrfstune", "-f", "-m", str(image)])
            if image.stat().st_size < size:
                os.truncate(image, size)  # the machine's init grows the file system to it
            return
        with open(image, "wb") as img:
            img.truncate(size)
        _check(["mkfs.btrfs", "-q", "-f", "-L", f"pcs-{rec['name']}", str(image)])

    def _free_address(self) -> str:
        used = _recorded_addresses(self.base_dir, self.port)
        for last in range(2, 255):
            address = str(ipaddress.IPv4Address(f"127.0.0.{last}"))
            if address not in used and _bindable(address, self.port):
                return address
        raise SandboxError(f"no free loopback address for port {self.port}")

    def _start(self, rec: dict[str, Any], mdir: Path, timeout: float) -> None:
        """The machine's image, its sshd's keys and config, its init in new namespaces; returns
        once ssh to it answers with its hostname (or raises SandboxError by ``timeout``)."""
        deadline = time.monotonic() + timeout
        image = Path(rec["image"])
        self._make_image(rec, image)
        status = mdir / "init.status"
        sshd_config = self._sshd_config(rec, mdir)
        _write_json(mdir / "init.json", self._init_config(rec, mdir, image, sshd_config, status))
        popen = self._spawn_init(rec, mdir)
        self._wait_init(rec, mdir, popen, status, deadline)
        self._write_inventory_with(rec)
        self._wait_ssh(rec, mdir, deadline)

    def _sshd_config(self, rec: dict[str, Any], mdir: Path) -> Path:
        """A host key of the machine (its public half in the sandbox's known_hosts) and its sshd's
        config; returns the config's path."""
        name, address, port = rec["name"], rec["address"], rec["port"]
        host_key = mdir / "ssh_host_ed25519_key"
        _ssh_keygen(host_key, f"root@{name}")
        pub = host_key.with_suffix(".pub").read_text().split()
        host = address if port == 22 else f"[{address}]:{port}"
        with open(self.known_hosts, "a") as fh:
            fh.write(f"{host} {pub[0]} {pub[1]}\n")
        sshd_config = mdir / "sshd_config"
        sshd_config.write_text(
            _SSHD_CONFIG.format(
                address=address,
                port=port,
                host_key=host_key,
                authorized_keys=self.authorized_keys,
            )
        )
        return sshd_config

    def _init_config(
        self, rec: dict[str, Any], mdir: Path, image: Path, sshd_config: Path, status: Path
    ) -> dict[str, Any]:
        """What the machine's init (_INIT_SCRIPT) sets up, as it reads it from init.json."""
        cfg = {
            "name": rec["name"],
            "image": str(image),
            "btrfs_top": rec["btrfs_top"],
            "sshd_config": str(sshd_config),
            "sshd_log": str(mdir / "sshd.log"),
            "status_file": str(status),
            "subvolumes": rec["subvolumes"],
            "private_etc": rec["private_etc"],
            "overlays": [d for d in OVERLAY_DIRS if os.path.isdir(d)],
            # this checkout (and its .venv) must stay reachable at the same path inside the
            # machine, also when it lies under /tmp, /run, /home or /root, which the machine hides
            "keep_visible": [str(REPO)],
            "hold_dir": str(mdir / "hold"),
        }
        if rec.get("root"):
            # a root machine sees nothing of the host but these (its sshd reads its config, keys and
            # authorized_keys from the sandbox dir; pc-switcher inside reads the inventory there)
            cfg["keep_visible"] = [str(REPO), str(self.dir)]
            cfg["stage_top"], cfg["stage_root"] = str(mdir / "top"), str(mdir / "rootfs")
            cfg["root"], cfg["ro_binds"], cfg["overlays"] = True, rec["ro_binds"], []
        return cfg

    def _spawn_init(self, rec: dict[str, Any], mdir: Path) -> subprocess.Popen[bytes]:
        """unshare (PID, mount, UTS namespaces) running the machine's init; recorded at once."""
        with open(mdir / "init.log", "ab") as log:
            popen = subprocess.Popen(
                [
                    "unshare",
                    "--pid",
                    "--mount",
                    "--uts",
                    "--fork",
                    "--mount-proc",
                    "--kill-child",
                    "--propagation",
                    "private",
                    "--",
                    PYTHON_INTERPRETER if os.path.exists(PYTHON_INTERPRETER) else sys.executable,
                    "-I",
                    str(_INIT_SCRIPT),
                    str(mdir / "init.json"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl+C in the terminal must not reach it; we tear down
                cwd="/",
            )
        self._popens[rec["name"]] = popen
        rec["unshare_pid"], rec["unshare_start"] = popen.pid, start_ticks(popen.pid)
        self._save()
        return popen

    def _wait_init(
        self, rec: dict[str, Any], mdir: Path, popen: subprocess.Popen[bytes], status: Path, deadline: float
    ) -> None:
        """Until the init says "ready": its pid, namespaces and sshd recorded (the baseline)."""
        name, unshare = rec["name"], psutil.Process(popen.pid)

        def init_child() -> bool:
            with contextlib.suppress(psutil.Error):
                kids = unshare.children()
                if kids:
                    rec["init_pid"], rec["init_start"] = kids[0].pid, start_ticks(kids[0].pid)
                    return True
            return popen.poll() is not None

        _wait_until(init_child, max(0.0, deadline - time.monotonic()), 0.005)
        if "init_pid" not in rec:
            raise SandboxError(f"{name}: unshare exited early:\n{_tail(mdir / 'init.log')}")
        self._save()

        def ready() -> bool:
            return status.exists() or popen.poll() is not None

        _wait_until(ready, max(0.0, deadline - time.monotonic()), 0.01)
        text = status.read_text().strip() if status.exists() else "(no status)"
        if text != "ready":
            raise SandboxError(f"{name}: init failed: {text}\n{_tail(mdir / 'init.log')}")
        init = psutil.Process(rec["init_pid"])
        rec["pidns"] = _ns_id(init.pid, "pid")
        rec["mntns"] = _ns_id(init.pid, "mnt")
        sshd = [p for p in init.children() if p.name() == "sshd"]
        if len(sshd) != 1:
            raise SandboxError(f"{name}: sshd did not start:\n{_tail(mdir / 'sshd.log')}")
        rec["sshd_pid"], rec["sshd_start"] = sshd[0].pid, start_ticks(sshd[0].pid)
        rec["baseline"] = [[init.pid, rec["init_start"]], [sshd[0].pid, rec["sshd_start"]]]
        self._save()

    def _wait_ssh(self, rec: dict[str, Any], mdir: Path, deadline: float) -> None:
        """Until ``ssh MACHINE hostname`` answers with its name; then until that session has ended."""
        probe = Machine(self, rec)
        last = ""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxError(
                    f"{rec['name']}: ssh to {rec['address']}:{rec['port']} did not work: {last}\n"
                    f"{_tail(mdir / 'sshd.log')}"
                )
            res = subprocess.run(
                probe.ssh_argv(["hostname"]),
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=max(remaining, 1.0),
                check=False,
            )
            if res.returncode == 0 and res.stdout.strip() == rec["name"]:
                break
            last = f"rc={res.returncode} out={res.stdout.strip()!r} err={res.stderr.strip()!r}"
            time.sleep(0.02)
        # let the probe's ssh session process end so that extra_processes() starts out empty
        _wait_until(lambda: not probe.extra_processes(), 5.0)

    # -- files

    def keep(self) -> None:
        """Mark the sandbox as kept up for a person: its owner (``up``) exits, and ``down --all
        --orphaned`` (``make test``) leaves it running; ``down DIR`` or ``down --all`` removes it."""
        self._state["kept"] = True
        self._save()

    def _save(self) -> None:
        if self.dir.is_dir():
            _write_json(self.dir / STATE_FILE, self._state)

    def _write_inventory_with(self, extra: dict[str, Any] | None = None) -> None:
        hosts: dict[str, Any] = {}
        recs = [m._record for m in self.machines.values()]
        if extra is not None:
            recs.append(extra)
        for rec in recs:
            hosts[rec["name"]] = {
                "ansible_host": rec["address"],
                "ansible_port": rec["port"],
                "ansible_user": "root",
                "ansible_connection": "ssh",
                "ansible_ssh_private_key_file": str(self.client_key),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.known_hosts}",
                "ansible_python_interpreter": PYTHON_INTERPRETER,
            }
        tmp = self.inventory_path.with_name(self.inventory_path.name + ".tmp")
        tmp.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False))
        os.replace(tmp, self.inventory_path)

    def _write_inventory(self) -> None:
        self._write_inventory_with(None)

    # -- teardown

    def _reap(self, name: str) -> None:
        popen = self._popens.pop(name, None)
        if popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=5)

    def down(self) -> None:
        """Stop every machine, check nothing is left, remove the state dir. Idempotent."""
        problems: list[str] = []
        for name, rec in list(self._state["machines"].items()):
            problems += _teardown_machine(rec)
            self._reap(name)
        self.machines.clear()
        if self.dir.exists():
            mounts = _host_mounts_under(self.dir)
            if mounts:
                problems.append(f"mounts left under {self.dir}: {mounts}")
            if not problems:
                shutil.rmtree(self.dir, ignore_errors=True)
                if self.dir.exists():
                    problems.append(f"could not remove {self.dir}")
        if problems:
            raise SandboxError("sandbox teardown incomplete: " + "; ".join(problems))


_SSHD_CONFIG = """\
# generated by tests/sandbox
ListenAddress {address}:{port}
HostKey {host_key}
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
UseDNS no
PrintMotd no
PrintLastLog no
MaxSessions 200
MaxStartups 200:30:400
MaxAuthTries 10
LogLevel INFO
Subsystem sftp internal-sftp
"""


_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,30}")

# run inside a machine by Machine.add_login_user: refuses unless /etc is on the machine's own btrfs
# (a private /etc, or a root machine's /)
_ADD_USER = r"""
set -euo pipefail
user=$1 uid=$2 rule=$3
if [ "$(findmnt -n -o FSTYPE --target /etc)" != btrfs ]; then echo "/etc is not private" >&2; exit 1; fi
if getent passwd "$user" >/dev/null || getent passwd "$uid" >/dev/null || getent group "$uid" >/dev/null; then
  echo "user $user or id $uid exists" >&2; exit 1
fi
printf '%s:x:%s:%s::/home/%s:/bin/bash\n' "$user" "$uid" "$uid" "$user" >> /etc/passwd
printf '%s:x:%s:\n' "$user" "$uid" >> /etc/group
printf '%s:*:19000:0:99999:7:::\n' "$user" >> /etc/shadow   # '*': no password, not locked
printf '%s:!::\n' "$user" >> /etc/gshadow
install -d -m 0750 -o "$uid" -g "$uid" "/home/$user"
if [ -n "$rule" ]; then
  file=/etc/sudoers.d/pcs-$user
  printf '%s %s\n' "$user" "$rule" > "$file.tmp"
  chmod 0440 "$file.tmp"
  visudo -cqf "$file.tmp"
  mv "$file.tmp" "$file"
fi
"""


def _check_ro_binds(binds: Mapping[str, Path], root: bool) -> list[list[str]]:
    """``ro_binds`` as ``[[inside, host], ...]``; one line naming the problem for a bad entry."""
    checked: list[list[str]] = []
    for inside, host in binds.items():
        if not root:
            raise SandboxError(f"ro_binds ({inside}) is for root machines: add the machine with root=True")
        parts = inside.split("/")
        if (
            not inside.startswith("/")
            or not any(inside.startswith(p + "/") for p in RO_BIND_PARENTS)
            or not all(_PATH_PART.fullmatch(part) for part in parts[1:])
        ):
            raise SandboxError(
                f"ro_binds: {inside!r} is not a plain absolute path under {', '.join(RO_BIND_PARENTS)}"
                " (e.g. /srv/pcs-apt)"
            )
        if not Path(host).is_absolute() or not Path(host).is_dir():
            raise SandboxError(
                f"ro_binds: host dir {str(host)!r} for {inside} must be an existing absolute dir"
            )
        checked.append([inside, os.path.realpath(host)])
    return checked


def _root_cache_image() -> Path:
    from tests.sandbox.rootfs import ensure_root_cache  # it imports this module

    cache = ensure_root_cache(say=lambda line: print(f"sandbox: {line}", file=sys.stderr, flush=True))
    return cache.image


def _check(argv: list[str]) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SandboxError(f"{shlex.join(argv)} failed (rc {res.returncode}): {res.stderr.strip()}")


def _ssh_keygen(path: Path, comment: str) -> None:
    _check(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _parse_size(size: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = size.strip().upper().removesuffix("B").removesuffix("I")
    num, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "")
    value = int(float(num) * units[unit])
    if value < 256 << 20:
        raise SandboxError(f"image size {size!r} too small for btrfs (min 256M)")
    return value


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"
