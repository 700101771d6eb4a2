"""The sandbox machine tool itself: isolation, ssh with host-key checking, Ansible, teardown."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from pcswitcher.remote.agent import start_ticks
from tests.sandbox import Machine, Sandbox, down_all

# run alone, after the others (Makefile `integration`):
# waits for a PID namespace number to empty (numbers are reused)
pytestmark = pytest.mark.serial

ANSIBLE = Path(sys.executable).parent / "ansible"
REPO = Path(__file__).resolve().parents[2]


def _pidns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def _ns_init(pid: int, ns: str) -> tuple[int, int]:
    """(pid, start tick) of the init of ``pid``'s PID namespace: its topmost ancestor inside ``ns``."""
    while True:
        parent = psutil.Process(pid).ppid()
        if parent <= 1 or _pidns(parent) != ns:
            return pid, start_ticks(pid)
        pid = parent


def _procs_in_pidns(ns: str, init: tuple[int, int] | None = None) -> list[int]:
    """Live processes of the PID namespace ``ns``. The kernel reuses a freed namespace's inode number,
    so with ``init`` a process counts only when its namespace still has that init (another sandbox
    made meanwhile, e.g. by a test running beside this one, can carry the same number)."""
    found = []
    for pid in psutil.pids():
        try:
            alive = _pidns(pid) == ns and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            if alive and (init is None or _ns_init(pid, ns) == init):
                found.append(pid)
        except (OSError, psutil.Error):
            continue
    return found


def _loop_devices(image: Path) -> str:
    """Loop devices backed by ``image`` (``losetup -j`` needs the file, which teardown removes)."""
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    return "".join(line + "\n" for line in out.splitlines() if str(image) in line)


def _host_mounts_mentioning(text: str) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if text in line]


def _snapshot(machine: Machine) -> dict[str, object]:
    return {
        "pidns": _pidns(machine.init_pid),
        "init": (machine.init_pid, start_ticks(machine.init_pid)),
        "image": machine.image,
        "dir": machine.state_dir.parent,
    }


def _assert_gone(snap: dict[str, object]) -> None:
    init = snap.get("init")
    assert _procs_in_pidns(str(snap["pidns"]), init if isinstance(init, tuple) else None) == []
    assert _loop_devices(Path(str(snap["image"]))) == ""
    assert _host_mounts_mentioning(str(snap["dir"])) == []
    assert not Path(str(snap["dir"])).exists()


def _has(procs: list[psutil.Process], cmdline: list[str]) -> bool:
    for proc in procs:
        try:
            if proc.cmdline() == cmdline:
                return True
        except psutil.Error:
            continue
    return False


def _wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def other_base() -> Iterator[Path]:
    """A separate sandbox base dir, so that down_all() cannot touch sandboxes of anybody else."""
    base = Path(tempfile.mkdtemp(prefix="pcswitcher-sandbox-test-", dir="/var/tmp"))
    try:
        yield base
    finally:
        down_all(base)
        shutil.rmtree(base, ignore_errors=True)


def test_hostname_differs_per_machine(sandbox: Sandbox) -> None:
    names = {m.name: m.run(["hostname"]).stdout.strip() for m in sandbox.machines.values()}
    assert names == {"source": "source", "target": "target"}
    assert socket.gethostname() not in names.values()
    assert sandbox["source"].address != sandbox["target"].address


def test_home_and_root_are_private_btrfs(sandbox: Sandbox) -> None:
    host_home = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE", "--target", "/home"], capture_output=True, text=True, check=True
    ).stdout
    src, tgt = sandbox["source"], sandbox["target"]
    for machine in (src, tgt):
        for mnt in ("/home", "/root", machine.btrfs_top):
            res = machine.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--mountpoint", mnt])
            assert res.returncode == 0, res.stderr
            assert res.stdout.split()[0] == "btrfs"
            assert "/dev/loop" in res.stdout
            assert res.stdout.split()[1] not in host_home
        subvols = machine.run(["btrfs", "subvolume", "list", machine.btrfs_top]).stdout
        assert "path home" in subvols
        assert "path root" in subvols
    marker = f"pcs-sandbox-marker-{os.getpid()}"
    res = subprocess.run(
        src.ssh_argv(["touch", f"/home/{marker}", f"/root/{marker}"]),
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert src.path(f"/home/{marker}").exists()
    assert src.path(f"/root/{marker}").exists()
    assert not (Path("/home") / marker).exists()
    assert not (Path("/root") / marker).exists()
    assert not tgt.path(f"/home/{marker}").exists()
    # the top level shows the subvolumes' content
    assert src.path(f"{src.btrfs_top}/home/{marker}").exists()


def test_ssh_checks_host_keys(sandbox: Sandbox, tmp_path: Path) -> None:
    for machine in sandbox.machines.values():
        res = subprocess.run(
            machine.ssh_argv(["hostname"]), capture_output=True, text=True, timeout=30, check=False
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == machine.name
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = [a.replace(str(sandbox.known_hosts), str(empty)) for a in sandbox["source"].ssh_argv(["hostname"])]
    assert str(empty) in " ".join(argv)
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 255
    assert "Host key verification failed" in res.stderr
    assert empty.read_text() == ""


def test_ansible_ping(sandbox: Sandbox, tmp_path: Path) -> None:
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="True", ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"))
    res = subprocess.run(
        [str(ANSIBLE), "-i", str(sandbox.inventory_path), "all", "-m", "ping"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "source | SUCCESS" in res.stdout
    assert "target | SUCCESS" in res.stdout


def test_processes_see_only_the_machine(sandbox: Sandbox) -> None:
    src, tgt = sandbox["source"], sandbox["target"]
    assert src.extra_processes() == []
    assert {p.pid for p in src.processes()} >= {src.init_pid}
    me = os.getpid()
    assert me not in {p.pid for p in src.processes()}
    client = subprocess.Popen(
        src.ssh_argv(["sleep", "313"]), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    try:
        _wait_for(lambda: _has(src.extra_processes(), ["sleep", "313"]))
        assert all(p.pid != client.pid for p in src.processes())  # the ssh client is a host process
        assert not _has(tgt.processes(), ["sleep", "313"])
        assert tgt.extra_processes() == []
        inside = src.run(["ps", "-e", "-o", "pid=,args="]).stdout
        assert "sleep 313" in inside
        assert "pytest" not in inside
    finally:
        client.kill()
        client.wait()
    # popen() handles reach the process inside (it dies with its nsenter handle)
    handle = src.popen(["sleep", "314"])
    _wait_for(lambda: _has(src.extra_processes(), ["sleep", "314"]))
    handle.kill()
    handle.wait()
    _wait_for(lambda: not _has(src.processes(), ["sleep", "314"]))


def test_down_leaves_nothing(sandbox_factory: Callable[..., Sandbox]) -> None:
    sb = sandbox_factory("solo")
    machine = sb["solo"]
    snap = _snapshot(machine)
    # a process that outlives its ssh session (reparented to the machine's init) must die too
    subprocess.run(machine.ssh_argv(["sh", "-c", "nohup sleep 315 >/dev/null 2>&1 &"]), check=True)
    _wait_for(lambda: _has(machine.extra_processes(), ["sleep", "315"]))
    sb.down()
    _assert_gone(snap)
    sb.down()  # idempotent


def test_down_when_body_raises() -> None:
    snap: dict[str, object] = {}

    def body() -> None:
        with Sandbox() as sb:
            machine = sb.add("doomed")
            snap.update(_snapshot(machine))
            machine.popen(["sleep", "316"], stdout=subprocess.DEVNULL)
            _wait_for(lambda: _has(machine.extra_processes(), ["sleep", "316"]))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        body()
    _assert_gone(snap)


_OWNER = """
import sys, time
from pathlib import Path
from tests.sandbox import Sandbox
sb = Sandbox(base_dir=Path(sys.argv[1]), port=int(sys.argv[2]))
m = sb.add("orphan")
print(sb.dir, m.init_pid, m.image, flush=True)
time.sleep(600)
"""


def _orphan(base: Path, port: int) -> list[str]:
    """A sandbox machine whose owner was SIGKILLed: [sandbox dir, init pid, image] as printed."""
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(base), str(port)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline().split()
        assert len(line) == 3, f"owner failed (rc {owner.poll()})"
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    return line


def test_down_all_after_owner_sigkill(other_base: Path) -> None:
    line = _orphan(other_base, 2237)
    sandbox_dir, init_pid, image = Path(line[0]), int(line[1]), Path(line[2])
    ns, init = _pidns(init_pid), (init_pid, start_ticks(init_pid))
    assert psutil.pid_exists(init_pid)  # the machine outlived its owner
    assert _loop_devices(image) != ""
    with Sandbox(base_dir=other_base, port=2237) as live:  # has a live owner: only_orphaned skips it
        assert down_all(other_base, only_orphaned=True) == [str(sandbox_dir)]
        assert live.dir.is_dir()
    _assert_gone({"pidns": ns, "init": init, "image": image, "dir": sandbox_dir})
    assert down_all(other_base) == []


def test_cli_up_attach_extra_dir_down(other_base: Path) -> None:
    cli = [sys.executable, "-m", "tests.sandbox", "--base-dir", str(other_base)]
    res = subprocess.run(
        [*cli, "up", "--name", "cli", "--port", "2238", "--size", "1G", "--extra-dir", "/srv"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    dirs = [line.split(": ", 1)[1] for line in res.stdout.splitlines() if line.startswith("sandbox dir: ")]
    assert len(dirs) == 1
    status = subprocess.run(
        [*cli, "status"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    assert "cli: 127.0.0." in status
    assert "running" in status
    with Sandbox.attach(Path(dirs[0])) as sb:
        machine = sb["cli"]
        snap = _snapshot(machine)
        out = subprocess.run(
            machine.ssh_argv(["sh", "-c", "hostname; findmnt -n -o FSTYPE --mountpoint /srv; touch /srv/x"]),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.split() == ["cli", "btrfs"]
        assert machine.path("/srv/x").exists()
        assert not Path("/srv/x").exists()
    _assert_gone(snap)


def _small_host_file(top: str) -> Path | None:
    """A small regular file under ``top`` on the host (the first found, at most 64 KiB), or None."""
    for root, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if path.is_file() and not path.is_symlink() and path.stat().st_size <= 65536:
                return path
    return None


def test_opt_and_usr_local_are_private_overlays(sandbox_factory: Callable[..., Sandbox]) -> None:
    sb = sandbox_factory("one", "two")
    one, two = sb["one"], sb["two"]
    marker = f"pcs-overlay-marker-{os.getpid()}"
    for machine in (one, two):
        for mnt in ("/opt", "/usr/local"):
            res = machine.run(["findmnt", "-n", "-o", "FSTYPE", "--mountpoint", mnt])
            assert res.stdout.split() == ["overlay"], (machine.name, mnt, res.stdout, res.stderr)
    # the host's content is visible inside (pip here reads its index and wheels from /opt)
    assert sorted(one.run(["ls", "-A", "/opt"]).stdout.split()) == sorted(os.listdir("/opt"))
    res = one.run(
        [
            "sh",
            "-c",
            'mkdir -p "/opt/$1" && echo x > "/opt/$1/f" && echo y > "/usr/local/bin/$1"',
            "sh",
            marker,
        ]
    )
    assert res.returncode == 0, res.stderr
    assert one.path(f"/opt/{marker}/f").read_text() == "x\n"
    assert one.path(f"/usr/local/bin/{marker}").read_text() == "y\n"
    assert not (Path("/opt") / marker).exists()
    assert not (Path("/usr/local/bin") / marker).exists()
    assert two.run(["test", "-e", f"/opt/{marker}"]).returncode == 1
    assert two.run(["test", "-e", f"/usr/local/bin/{marker}"]).returncode == 1
    # a host file written and a host entry removed inside stay as they are on the host
    host_file = _small_host_file("/opt")
    if host_file is not None:
        before = host_file.read_bytes()
        res = one.run(["sh", "-c", 'echo changed >> "$1" && rm -f "$1"', "sh", str(host_file)])
        assert res.returncode == 0, res.stderr
        assert one.run(["test", "-e", str(host_file)]).returncode == 1
        assert host_file.read_bytes() == before
        assert two.path(str(host_file)).read_bytes() == before
    snaps = [_snapshot(m) for m in (one, two)]
    sb.down()
    for snap in snaps:
        _assert_gone(snap)
    assert not _host_mounts_mentioning("overlay")
    assert not (Path("/opt") / marker).exists()


def test_no_subvolume_under_the_overlays(sandbox_factory: Callable[..., Sandbox]) -> None:
    from tests.sandbox import SandboxError

    sb = sandbox_factory()
    for bad in ("/opt", "/usr/local", "/usr/local/bin", "/opt/../usr/local/lib"):
        with pytest.raises(SandboxError, match="cannot give"):
            sb.add("m", extra_dirs=[bad])


# --------------------------------------------------------------------------- kept sandboxes (`up`)
# A sandbox brought up for a person (`python -m tests.sandbox up`) outlives its owner on purpose:
# `make test` (`down --all --orphaned`) leaves it up and says so; `down DIR` and `down --all` remove it.


def _sandbox_cli(base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.sandbox", "--base-dir", str(base), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=120,
    )


def _up_kept(base: Path, name: str, port: int) -> tuple[Path, int]:
    res = _sandbox_cli(base, "up", "--name", name, "--port", str(port), "--size", "1G")
    assert res.returncode == 0, res.stderr
    assert "kept: `make test` (down --all --orphaned) leaves it up" in res.stdout
    dirs = [line.split(": ", 1)[1] for line in res.stdout.splitlines() if line.startswith("sandbox dir: ")]
    pids = [
        int(line.split("init pid ")[1].rstrip(")")) for line in res.stdout.splitlines() if "init pid" in line
    ]
    assert len(dirs) == 1
    assert len(pids) == 1
    return Path(dirs[0]), pids[0]


def test_orphan_cleanup_leaves_a_kept_sandbox_up(other_base: Path) -> None:
    sandbox_dir, init_pid = _up_kept(other_base, "kept", 2239)
    ns = _pidns(init_pid)
    assert "kept up for manual work" in _sandbox_cli(other_base, "status").stdout
    # an orphan beside it (its owner gone, not kept) is still removed
    orphan = _orphan(other_base, 2240)
    res = _sandbox_cli(other_base, "down", "--all", "--orphaned")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        f"removed {orphan[0]}",
        f"left up {sandbox_dir}: kept for manual work by `up`; stop it with: "
        f"{sys.executable} -m tests.sandbox down {sandbox_dir}",
    ]
    assert _pidns(init_pid) == ns  # the same machine, still up and reachable
    machine = Sandbox.attach(sandbox_dir)["kept"]  # a handle only: no teardown of its own
    out = subprocess.run(machine.ssh_argv(["hostname"]), capture_output=True, text=True, check=True).stdout
    assert out.strip() == "kept"
    snap = _snapshot(machine)
    res = _sandbox_cli(other_base, "down", str(sandbox_dir))
    assert res.returncode == 0, res.stderr
    _assert_gone(snap)


def test_down_all_removes_a_kept_sandbox(other_base: Path) -> None:
    sandbox_dir, _ = _up_kept(other_base, "kept2", 2241)
    snap = _snapshot(Sandbox.attach(sandbox_dir)["kept2"])
    res = _sandbox_cli(other_base, "down", "--all")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"removed {sandbox_dir}"]
    _assert_gone(snap)


def test_a_kept_sandbox_whose_machines_died_is_an_orphan(other_base: Path) -> None:
    """After a reboot (here: its machine's init killed) nothing runs that a person could use."""
    sandbox_dir, init_pid = _up_kept(other_base, "kept4", 2243)
    ns = _pidns(init_pid)
    os.kill(init_pid, signal.SIGKILL)  # the machine this test brought up: its pid namespace ends
    _wait_for(lambda: _procs_in_pidns(ns) == [])
    res = _sandbox_cli(other_base, "down", "--all", "--orphaned")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"removed {sandbox_dir}"]
    assert not sandbox_dir.exists()
