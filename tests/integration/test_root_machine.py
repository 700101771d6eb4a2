"""Root machines (``Sandbox.add(name, root=True)``): each its own Debian system in namespaces.

Its own hostname, sshd and dpkg database (a package installed inside changes nothing on the host),
``/`` a btrfs subvolume, host dirs bound read-only where asked, pc-switcher from the checkout running
inside a root source and syncing /home to a root target, and a teardown that leaves nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests import apt_repos, needs
from tests.integration.folder_sync_helpers import build_tree, folder_config, itemize_pass, manifest
from tests.integration.helpers import (
    REPO,
    dummy_config,
    run_cli,
    run_sync,
    wait_until_clean,
    write_config,
)
from tests.integration.test_sandbox import (
    _assert_gone,
    _has,
    _host_mounts_mentioning,
    _loop_devices,
    _snapshot,
    _wait_for,
)
from tests.sandbox import Machine, Sandbox, SandboxError, down_all
from tests.sandbox.rootfs import Recipe, find_cache, host_mirror, list_caches

# run alone, after the others (Makefile `integration`):
# compares the host's dpkg status and /etc/passwd before and after
pytestmark = pytest.mark.serial

ROOT_TOOLS = {**needs.ROOT_MACHINE_TOOLS, "dpkg-scanpackages": "dpkg-dev"}
HOST_STATUS = Path("/var/lib/dpkg/status")
PROBE = "pcs-rootm-probe"


@pytest.fixture(scope="module")
def apt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host dir the machines see read-only at /srv/pcs-apt."""
    path = tmp_path_factory.mktemp("pcs-apt")
    (path / "hello.txt").write_text("from the host\n")
    return path


@pytest.fixture(scope="module")
def rsb(apt_dir: Path) -> Iterator[Sandbox]:
    """Root machines ``source`` and ``target`` (the helpers' names), shared by this module's tests."""
    needs.tools(ROOT_TOOLS)
    with Sandbox() as sandbox:
        for name in ("source", "target"):
            sandbox.add(name, root=True, ro_binds={"/srv/pcs-apt": apt_dir})
        yield sandbox


@pytest.fixture
def clean(rsb: Sandbox) -> Iterator[Sandbox]:
    """The module's machines, checked to run nothing beyond their baseline after each test."""
    yield rsb
    for machine in rsb.machines.values():
        assert wait_until_clean(machine) == [], machine.name


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tiny_deb(tmp: Path) -> Path:
    """``pcs-rootm-probe_1.0_all.deb``: one file, /usr/share/pcs-rootm-probe/hello."""
    return apt_repos.local_deb(tmp, PROBE, "probe\n", "root machine probe")


def test_own_hostname_sshd_and_debian(clean: Sandbox) -> None:
    host_sshd = os.stat("/usr/sbin/sshd")
    for machine in clean.machines.values():
        assert machine.root
        res = subprocess.run(
            machine.ssh_argv(
                ["sh", "-c", "hostname; cat /etc/hostname; . /etc/os-release; echo $ID $VERSION_ID"]
            ),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.split("\n")[:3] == [machine.name, machine.name, "debian 12"]
        # the listener is the machine's own sshd binary, not the host's
        sshd = [p for p in machine.processes() if p.name() == "sshd"]
        assert sshd, machine.name
        own = os.stat(f"/proc/{sshd[0].pid}/exe")
        assert (own.st_dev, own.st_ino) != (host_sshd.st_dev, host_sshd.st_ino)
        assert os.stat(machine.path("/usr/sbin/sshd")).st_ino == own.st_ino
        assert machine.path("/etc/hostname").read_text() == f"{machine.name}\n"


def test_dpkg_database_is_its_own(clean: Sandbox, tmp_path: Path) -> None:
    source, target = clean["source"], clean["target"]
    deb = _tiny_deb(tmp_path)
    host_before = _sha256(HOST_STATUS)
    target_before = _sha256(target.path("/var/lib/dpkg/status"))
    source.path(f"/tmp/{deb.name}").write_bytes(deb.read_bytes())
    res = source.run(["dpkg", "-i", f"/tmp/{deb.name}"])
    assert res.returncode == 0, res.stderr
    try:
        listed = source.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", PROBE])
        assert listed.stdout == "install ok installed 1.0", listed.stderr
        assert source.path(f"/usr/share/{PROBE}/hello").read_text() == "probe\n"
        assert _sha256(HOST_STATUS) == host_before
        assert not Path(f"/usr/share/{PROBE}").exists()
        host_query = subprocess.run(["dpkg-query", "-W", PROBE], capture_output=True, text=True, check=False)
        assert host_query.returncode == 1, host_query.stdout
        assert target.run(["dpkg-query", "-W", PROBE]).returncode == 1
        assert _sha256(target.path("/var/lib/dpkg/status")) == target_before
    finally:
        removed = source.run(["dpkg", "--purge", PROBE])
        source.path(f"/tmp/{deb.name}").unlink()
    assert removed.returncode == 0, removed.stderr
    assert _sha256(HOST_STATUS) == host_before


def test_apt_is_offline_and_installs_from_a_bound_repository(
    clean: Sandbox, apt_dir: Path, tmp_path: Path
) -> None:
    """No Debian source in the machine; a flat repository on the read-only bind serves apt."""
    source = clean["source"]
    assert source.run(["apt-get", "indextargets"]).stdout.strip() == ""  # no source, no lists
    assert source.path("/usr/share/pcs-sandbox/debian.list").read_text().startswith("deb http")
    repo = apt_dir / "flat"
    repo.mkdir()
    shutil.copy(_tiny_deb(tmp_path), repo)
    scan = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."], cwd=repo, capture_output=True, text=True, check=False
    )
    assert scan.returncode == 0, scan.stderr
    (repo / "Packages").write_text(scan.stdout)
    lst = source.path("/etc/apt/sources.list.d/pcs-flat.list")
    lst.write_text("deb [trusted=yes] file:/srv/pcs-apt/flat ./\n")
    try:
        update = source.run(["apt-get", "update"], timeout=120)
        assert update.returncode == 0, update.stdout + update.stderr
        assert "http" not in update.stdout
        res = source.run(["apt-get", "install", "-y", "-q", PROBE], timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert source.path(f"/usr/share/{PROBE}/hello").read_text() == "probe\n"
        assert subprocess.run(["dpkg-query", "-W", PROBE], capture_output=True, check=False).returncode == 1
    finally:
        source.run(["dpkg", "--purge", PROBE])
        lst.unlink()
        shutil.rmtree(repo)


def test_services_cannot_start(clean: Sandbox) -> None:
    """policy-rc.d answers 101: maintainer scripts' invoke-rc.d starts nothing."""
    target = clean["target"]
    assert target.run(["/usr/sbin/policy-rc.d", "ssh", "start"]).returncode == 101
    res = target.run(["invoke-rc.d", "ssh", "start"])
    assert "policy-rc.d denied execution of start" in res.stderr, res.stdout + res.stderr
    assert [p.name() for p in target.extra_processes()] == []


def test_root_is_a_btrfs_subvolume(clean: Sandbox) -> None:
    for machine in clean.machines.values():
        show = machine.run(["btrfs", "subvolume", "show", "/"])
        assert show.returncode == 0, show.stderr
        assert show.stdout.splitlines()[0].strip() == "rootfs"
        for mnt, sub in (("/", "/rootfs"), ("/home", "/home"), ("/root", "/root")):
            res = machine.run(["findmnt", "-n", "-o", "FSTYPE,FSROOT", "--mountpoint", mnt])
            assert res.stdout.split() == ["btrfs", sub], (machine.name, mnt, res.stdout)
        subvols = machine.run(["btrfs", "subvolume", "list", machine.btrfs_top]).stdout
        assert {"path base", "path rootfs", "path home", "path root"} <= {
            " ".join(line.split()[-2:]) for line in subvols.splitlines()
        }
        # a snapshot of / works inside (what the btrfs_snapshots role does)
        snap = f"{machine.btrfs_top}/snap-test"
        res = machine.run(["btrfs", "-q", "subvolume", "snapshot", "-r", "/", snap])
        assert res.returncode == 0, res.stderr
        assert machine.run(["btrfs", "-q", "subvolume", "delete", snap]).returncode == 0


def test_the_kernels_settings_are_read_only(clean: Sandbox) -> None:
    """/sys and /proc/sys are the host kernel's: a package's postinst must not change them."""
    for mnt in ("/sys", "/proc/sys"):
        res = clean["target"].run(["findmnt", "-n", "-o", "OPTIONS", "--mountpoint", mnt])
        assert res.returncode == 0, res.stderr
        assert "ro" in res.stdout.strip().split(","), (mnt, res.stdout)


def test_login_user_with_sudo(clean: Sandbox) -> None:
    """A root machine's /etc is its own: a login user with a sudoers rule is added there only."""
    target = clean["target"]
    host_passwd = _sha256(Path("/etc/passwd"))
    target.add_login_user("rootmuser", 1301)
    try:
        argv = target.ssh_argv(["sudo", "-n", "id", "-u"])
        argv[argv.index("-l") + 1] = "rootmuser"
        res = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "0"
        assert "rootmuser" not in clean["source"].path("/etc/passwd").read_text()
        assert _sha256(Path("/etc/passwd")) == host_passwd
    finally:
        script = (
            "sed -i '/^rootmuser:/d' /etc/passwd /etc/group /etc/shadow /etc/gshadow"
            " && rm -rf /etc/sudoers.d/pcs-rootmuser /home/rootmuser"
        )
        assert target.run(["sh", "-c", script]).returncode == 0


def test_ro_binds_are_read_only(clean: Sandbox, apt_dir: Path) -> None:
    machine = clean["source"]
    assert machine.path("/srv/pcs-apt/hello.txt").read_text() == "from the host\n"
    res = machine.run(["touch", "/srv/pcs-apt/new"])
    assert res.returncode == 1
    assert "Read-only file system" in res.stderr
    assert not (apt_dir / "new").exists()


def test_pc_switcher_runs_inside_with_the_machines_python(clean: Sandbox) -> None:
    res = run_cli(clean, "--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("pc-switcher, version ")
    # the venv's python is the machine's /usr/bin/python3 (Debian's 3.11, as on the host)
    link = os.readlink(REPO / ".venv/bin/python3")
    assert link == "/usr/bin/python3", link
    version = clean["source"].run(
        [str(REPO / ".venv/bin/python"), "-c", "import sys; print(sys.version_info[:2])"]
    )
    assert version.stdout.strip() == "(3, 11)", version.stderr
    write_config(clean["source"], folder_config([{"source": "/home"}]))
    res = run_cli(clean, "config", "check")
    assert res.returncode == 0, res.stdout + res.stderr


def test_sync_home_from_root_source_to_root_target(clean: Sandbox) -> None:
    source, target = clean["source"], clean["target"]
    data = "/home/user/data"
    build_tree(source, data)
    write_config(source, folder_config([{"source": "/home"}]))
    res = run_sync(clean, "--only", "folder_sync")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert manifest(target, data) == manifest(source, data)
    assert itemize_pass(clean, data) == []
    assert not Path(data).exists()  # nothing of it on the host


# --------------------------------------------------------------------------- lifecycle


def test_teardown_leaves_nothing(sandbox_factory: Callable[..., Sandbox]) -> None:
    sb = sandbox_factory("rsolo", root=True)
    machine = sb["rsolo"]
    snap = _snapshot(machine)
    subprocess.run(machine.ssh_argv(["sh", "-c", "nohup sleep 317 >/dev/null 2>&1 &"]), check=True)
    _wait_for(lambda: _has(machine.extra_processes(), ["sleep", "317"]))
    sb.down()
    _assert_gone(snap)


def test_bad_inputs_one_line_each(sandbox_factory: Callable[..., Sandbox], tmp_path: Path) -> None:
    sb = sandbox_factory()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ro_binds": {"/srv/x": tmp_path}}, "ro_binds (/srv/x) is for root machines"),
        ({"root": True, "ro_binds": {"/etc/apt": tmp_path}}, "not a plain absolute path under /srv"),
        ({"root": True, "ro_binds": {"/srv/../etc": tmp_path}}, "not a plain absolute path"),
        ({"root": True, "ro_binds": {"/srv/x": tmp_path / "missing"}}, "must be an existing absolute dir"),
        ({"root": True, "private_etc": True}, "are for plain machines"),
    ]
    for kwargs, message in cases:
        with pytest.raises(SandboxError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            sb.add("bad", **kwargs)
        assert "\n" not in str(err.value)
    assert sb.machines == {}


def test_cli_up_root_then_down(apt_dir: Path) -> None:
    needs.tools(ROOT_TOOLS)
    base = Path(os.path.abspath(f"/var/tmp/pcswitcher-rootm-test-{os.getpid()}"))
    cli = [sys.executable, "-m", "tests.sandbox", "--base-dir", str(base)]
    try:
        res = subprocess.run(
            [*cli, "up", "--root", "clir", "--port", "2244", "--ro-bind", f"/srv/pcs-apt={apt_dir}"],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
            timeout=300,
        )
        assert res.returncode == 0, res.stderr
        dirs = [
            line.split(": ", 1)[1] for line in res.stdout.splitlines() if line.startswith("sandbox dir: ")
        ]
        assert len(dirs) == 1
        with Sandbox.attach(Path(dirs[0])) as sb:
            machine = sb["clir"]
            assert machine.root
            assert machine.run(["btrfs", "subvolume", "show", "/"]).returncode == 0
            assert machine.path("/srv/pcs-apt/hello.txt").read_text() == "from the host\n"
            snap = _snapshot(machine)
        _assert_gone(snap)
    finally:
        down_all(base)
        shutil.rmtree(base)


_BUILDER = """
import sys
import time
from pathlib import Path
from tests.sandbox.rootfs import Recipe, ensure_root_cache, host_mirror
ensure_root_cache(Recipe(mirror=host_mirror()), Path(sys.argv[1]))
"""


def _processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if any(text in part for part in proc.cmdline()):
                found.append(proc)
    return found


def test_a_killed_cache_build_leaves_nothing_and_is_not_used(tmp_path: Path) -> None:
    """The builder SIGKILLed while mmdebstrap runs: its namespace ends (no process, mount or loop
    device left) and its half-built cache is not found."""
    needs.tools(ROOT_TOOLS)
    base = tmp_path / "cache"
    builder = subprocess.Popen([sys.executable, "-c", _BUILDER, str(base)], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not [p for p in _processes_mentioning(str(base)) if "mmdebstrap" in " ".join(p.cmdline())]:
            assert builder.poll() is None, "the builder ended before mmdebstrap ran"
            assert time.monotonic() < deadline, "mmdebstrap did not start"
            time.sleep(0.05)
        mmdebstrap = next(
            p for p in _processes_mentioning(str(base)) if "mmdebstrap" in " ".join(p.cmdline())
        )
        pidns = os.readlink(f"/proc/{mmdebstrap.pid}/ns/pid")
    finally:
        builder.kill()
        builder.wait()
    _wait_for(lambda: _processes_mentioning(str(base)) == [], 30)
    _wait_for(lambda: not [p for p in psutil.pids() if _pidns_or_none(p) == pidns], 30)
    images = list(base.glob("root/.build-*/root.img"))
    assert len(images) == 1
    _wait_for(lambda: _loop_devices(images[0]) == "", 10)
    assert _host_mounts_mentioning(str(base)) == []
    assert find_cache(Recipe(mirror=host_mirror()), base) is None
    assert list_caches(base) == []


def _pidns_or_none(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def test_molecule_platform_with_pcs_root(tmp_path: Path, apt_dir: Path) -> None:
    """molecule's create (tests/molecule/create.yml passes the platforms as JSON) brings up a root
    machine for a platform with ``pcs_root: true``, with its ``pcs_ro_binds``."""
    needs.tools(ROOT_TOOLS)
    ephemeral, instances = tmp_path / "ephemeral", tmp_path / "instances.yml"
    platforms = [{"name": "target", "pcs_root": True, "pcs_ro_binds": {"/srv/pcs-apt": str(apt_dir)}}]
    module = [sys.executable, "-m", "tests.integration.molecule_sandbox"]
    create = [*module, "create", "--ephemeral", str(ephemeral), "--instance-config", str(instances)]
    res = subprocess.run(
        [*create, "target", "--platforms-json", json.dumps(platforms)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=300,
    )
    try:
        assert res.returncode == 0, res.stderr
        state = json.loads(res.stdout)
        machine = Sandbox.attach(Path(state["dir"]))["target"]  # a handle: molecule's destroy tears down
        snap = _snapshot(machine)
        assert machine.root
        assert machine.path("/srv/pcs-apt/hello.txt").read_text() == "from the host\n"
    finally:
        destroy = [*module, "destroy", "--ephemeral", str(ephemeral), "--instance-config", str(instances)]
        done = subprocess.run(destroy, capture_output=True, text=True, cwd=REPO, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    _assert_gone(snap)


def test_rollback_of_root_gives_back_the_package_set(clean: Sandbox, tmp_path: Path) -> None:
    """With the target's ``/`` in ``snapshots.subvolumes.target``, a sync snapshots it and
    ``pc-switcher rollback`` undoes a package installed after the sync (dpkg status and /etc/apt)."""
    source, target = clean["source"], clean["target"]
    location = f"{target.btrfs_top}/snapshots"
    config = dummy_config(1, 1)
    config["snapshots"] = {
        "subvolumes": {"source": ["/home"], "target": ["/"]},
        "location": {"source": location, "target": location},
    }
    write_config(source, config)
    status_before = _sha256(target.path("/var/lib/dpkg/status"))
    apt_before = _tree_digest(target, "/etc/apt")
    res = run_sync(clean, "--only", "dummy_success")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    deb = _tiny_deb(tmp_path)
    target.path(f"/root/{deb.name}").write_bytes(deb.read_bytes())
    res = target.run(["dpkg", "-i", f"/root/{deb.name}"])
    assert res.returncode == 0, res.stderr
    target.path("/etc/apt/sources.list.d/pcs-probe.list").write_text("deb file:///srv/pcs-apt ./\n")
    assert _sha256(target.path("/var/lib/dpkg/status")) != status_before
    res = run_cli(clean, "rollback", "target", "-i", str(clean.inventory_path), "--yes")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert target.run(["dpkg-query", "-W", PROBE]).returncode == 1
    assert _sha256(target.path("/var/lib/dpkg/status")) == status_before
    assert _tree_digest(target, "/etc/apt") == apt_before
    assert not target.path(f"/usr/share/{PROBE}").exists()
    target.path(f"/root/{deb.name}").unlink()  # /root is its own subvolume: not rolled back


def _tree_digest(machine: Machine, path: str) -> str:
    res = machine.run(
        [
            "sh",
            "-c",
            'cd "$1" && find . -printf "%p %m %s\\n" | sort && cat $(find . -type f | sort)',
            "sh",
            path,
        ]
    )
    assert res.returncode == 0, res.stderr
    return hashlib.sha256(res.stdout.encode()).hexdigest()
