"""The way back: each sync carries pc-switcher, the config and the inventory to the target.

Run from this checkout (the tests' pc-switcher) nothing is installed: the install is not carried
(said once at INFO), the config and the inventory are. The installed case (``make install`` inside
a sandbox machine) is below.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator

import psutil
import pytest
import yaml

from tests import needs
from tests.integration.helpers import (
    CONFIG,
    REPO,
    describe,
    dummy_config,
    leftovers,
    log_records,
    run_sync,
    write_config,
)
from tests.sandbox import Machine, Sandbox

TARGET_CONFIG_DIR = "/root/.config/pc-switcher"
TARGET_INVENTORY = f"{TARGET_CONFIG_DIR}/inventory.yml"


@pytest.fixture(autouse=True)
def clean_machines(sb: Sandbox) -> Iterator[None]:
    assert leftovers(sb) == {}
    yield
    assert leftovers(sb) == {}


def _messages(sb: Sandbox) -> list[tuple[str, str]]:
    return [(str(r.get("level")), str(r.get("message"))) for r in log_records(sb.machines["source"])]


def test_from_a_checkout_the_config_and_inventory_go_and_the_install_does_not(sb: Sandbox) -> None:
    source, target = sb.machines["source"], sb.machines["target"]
    config_dir = target.path(TARGET_CONFIG_DIR)
    for name in ("config.yml", "inventory.yml", "config.yml.bak", "inventory.yml.bak"):
        (config_dir / name).unlink(missing_ok=True)
    write_config(source, dummy_config(0, 0))

    dry = run_sync(sb, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert not (config_dir / "config.yml").exists(), "a dry-run writes nothing"

    done = run_sync(sb)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (config_dir / "config.yml").read_bytes() == source.path(CONFIG).read_bytes()
    assert (config_dir / "inventory.yml").read_bytes() == sb.inventory_path.read_bytes()
    assert (config_dir / "config.yml").stat().st_mode & 0o777 == 0o600
    messages = _messages(sb)
    not_carried = [m for level, m in messages if "pc-switcher is not carried" in m]
    assert len(not_carried) == 1, messages
    assert "runs from a checkout" in not_carried[0]
    assert ("INFO", not_carried[0]) in messages
    warnings = [m for level, m in messages if level in {"WARNING", "ERROR", "CRITICAL"}]
    # the first sync and the snapshots (off in a sandbox) warn; nothing of the carry does
    assert [m for m in warnings if "first sync" not in m and "snapshots are disabled" not in m] == []
    assert not target.path("/opt/pc-switcher").exists()

    # another config: the target's previous one is kept as .bak; the same inventory is left alone
    previous = (config_dir / "config.yml").read_bytes()
    write_config(source, dummy_config(0, 1))
    again = run_sync(sb)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (config_dir / "config.yml.bak").read_bytes() == previous
    assert (config_dir / "config.yml").read_bytes() == source.path(CONFIG).read_bytes()
    assert not (config_dir / "inventory.yml.bak").exists()
    wrote = [m for _, m in _messages(sb) if m.startswith("wrote ")]
    assert wrote == [f"wrote config.yml to target:{TARGET_CONFIG_DIR} (the previous config.yml kept as .bak)"]


# --------------------------------------------------------------------------------------------------
# installed: A -> B, work on B, B -> A (the way back)

PREFIX = "/opt/pc-switcher"
LINK = "/usr/local/bin/pc-switcher"
WORK = "/home/work"
PATH = "PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sh(machine: Machine, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``bash -c SCRIPT`` as root in the machine, with a login-like environment (no checkout on PATH)."""
    env = ["env", "-i", PATH, "HOME=/root", "USER=root", "LANG=C.UTF-8"]
    return machine.run([*env, "bash", "-c", script, "bash", *args], cwd="/root")


def ok(machine: Machine, script: str, *args: str) -> str:
    res = sh(machine, script, *args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def read(machine: Machine, path: str) -> str:
    return ok(machine, 'cat -- "$1"', path)


def messages(machine: Machine) -> list[tuple[str, str]]:
    return [(str(r.get("level")), str(r.get("message"))) for r in log_records(machine)]


def pc_switcher(machine: Machine, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed command, as a person runs it (from /usr/local/bin on PATH, default config)."""
    return sh(machine, 'exec pc-switcher "$@"', *args)


@pytest.fixture(scope="module")
def ab() -> Iterator[Sandbox]:
    """Machines alpha (pc-switcher installed with `make install`, config and inventory in
    ~/.config/pc-switcher) and beta (nothing of pc-switcher); each has a private /opt, /usr/local."""
    needs.root("sandbox machines use namespaces, loop devices and mounts")
    with Sandbox() as sandbox:
        alpha, beta = sandbox.add("alpha"), sandbox.add("beta")
        ok(alpha, 'make -s -C "$1" install', str(REPO))
        config = {"jobs": {"folder_sync": True}, "folder_sync": {"folders": [{"source": WORK}]}}
        write_config(alpha, config)
        ok(alpha, 'cp -- "$1" /root/.config/pc-switcher/inventory.yml', str(sandbox.inventory_path))
        for machine in (alpha, beta):
            ok(machine, 'mkdir -p "$1" && echo "written on $(hostname)" > "$1/from-alpha"', WORK)
        yield sandbox


def test_the_way_back(ab: Sandbox) -> None:
    alpha, beta = ab.machines["alpha"], ab.machines["beta"]
    assert sh(beta, "command -v pc-switcher").returncode == 1, "beta starts without pc-switcher"
    record = json.loads(read(alpha, f"{PREFIX}/install.json"))

    # A -> B: the install, the config and the inventory go with the data
    first = pc_switcher(alpha, "sync", "beta", "--allow-first-sync")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert json.loads(read(beta, f"{PREFIX}/install.json")) == record
    assert ok(beta, 'readlink "$1"', LINK).strip() == f"{PREFIX}/venv/bin/pc-switcher"
    assert ok(beta, "pc-switcher --version").strip() == f"pc-switcher, version {record['version']}"
    assert read(beta, CONFIG) == read(alpha, CONFIG)
    assert read(beta, TARGET_INVENTORY) == read(alpha, TARGET_INVENTORY)
    carried = [m for _, m in messages(alpha) if m.startswith("carried pc-switcher")]
    assert len(carried) == 1, carried
    assert f"to beta:{PREFIX}" in carried[0]

    # work on B, then B -> A with B's own pc-switcher, config and inventory: a proper round trip
    ok(beta, 'echo "changed on beta" > "$1/from-beta"', WORK)
    back = pc_switcher(beta, "sync", "alpha")  # no flag: any history warning would refuse (no tty)
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-3000:]
    assert read(alpha, f"{WORK}/from-beta") == "changed on beta\n"
    records = log_records(beta)
    assert not [r for r in records if r.get("history_warning")]
    assert not [r for r in records if "out of order" in str(r.get("message"))]
    start = next(r for r in records if str(r.get("message")).startswith("pc-switcher run "))
    assert "beta -> alpha" in str(start["message"])
    same = [m for _, m in messages(beta) if "has this pc-switcher" in m]
    assert len(same) == 1, same
    assert same[0].startswith(
        f"alpha has this pc-switcher {record['version']} already ({PREFIX}): nothing copied"
    )
    assert json.loads(read(beta, "/root/.local/state/pc-switcher/history.json"))["last"]["role"] == "source"


def _install_stamp(machine: Machine) -> str:
    """Inode, size and mtime of every file of the install (what a copy would change)."""
    return ok(machine, 'find "$1" -path "*/__pycache__" -prune -o -printf "%i %s %T@ %p\\n" | sort', PREFIX)


def test_a_second_sync_copies_nothing(ab: Sandbox) -> None:
    alpha, beta = ab.machines["alpha"], ab.machines["beta"]
    before = _install_stamp(beta)
    done = pc_switcher(alpha, "sync", "beta")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _install_stamp(beta) == before
    same = [m for _, m in messages(alpha) if "has this pc-switcher" in m]
    assert len(same) == 1, same
    assert "nothing copied" in same[0]


def _set_record(machine: Machine, **values: str) -> str:
    """Rewrite the machine's install.json with ``values``; returns the previous text."""
    previous = read(machine, f"{PREFIX}/install.json")
    data = {**json.loads(previous), **values}
    ok(machine, 'printf "%s" "$2" > "$1"', f"{PREFIX}/install.json", json.dumps(data))
    return previous


def _state(machine: Machine) -> dict[str, str]:
    """What a refused sync must leave as it was on a machine."""
    return {
        "work": ok(machine, 'ls -l --time-style=+%s.%N -- "$1"', WORK),
        "history": read(machine, "/root/.local/state/pc-switcher/history.json"),
        "install": _install_stamp(machine),
        "config": ok(machine, 'ls -l --time-style=+%s.%N -- "$1"', TARGET_CONFIG_DIR),
    }


def test_a_newer_pc_switcher_on_the_target_is_refused(ab: Sandbox) -> None:
    alpha, beta = ab.machines["alpha"], ab.machines["beta"]
    ours = json.loads(read(alpha, f"{PREFIX}/install.json"))["version"]
    previous = _set_record(beta, version="99.0")
    try:
        ok(alpha, 'echo "newer on alpha" > "$1/from-alpha"', WORK)
        before = {name: _state(m) for name, m in ab.machines.items()}
        refused = pc_switcher(alpha, "sync", "beta", "--allow-out-of-order")
        assert refused.returncode == 1, refused.stdout[-3000:] + refused.stderr[-3000:]
        assert {name: _state(m) for name, m in ab.machines.items()} == before
        critical = [m for level, m in messages(alpha) if level == "CRITICAL"]
        assert len(critical) == 1, critical
        assert f"beta has pc-switcher 99.0 ({PREFIX}), newer than {ours} on this machine" in critical[0]
        assert "fix: update pc-switcher on this machine to 99.0" in critical[0]
        assert "Traceback" not in refused.stdout + refused.stderr
    finally:
        ok(beta, 'printf "%s" "$2" > "$1"', f"{PREFIX}/install.json", previous)


def test_another_python_on_the_target_warns_and_the_sync_goes_on(ab: Sandbox) -> None:
    """Faked on the source: alpha's install.json claims python 3.10 (beta's python3 is the host's
    3.11, the same for every sandbox machine): the install is not carried, the rest is."""
    alpha, beta = ab.machines["alpha"], ab.machines["beta"]
    previous = _set_record(alpha, python="3.10", id="0" * 64)
    try:
        before = _install_stamp(beta)
        ok(alpha, 'echo "python test" > "$1/from-alpha"', WORK)
        done = pc_switcher(alpha, "sync", "beta", "--allow-out-of-order")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert read(beta, f"{WORK}/from-alpha") == "python test\n"
        assert _install_stamp(beta) == before
        warnings = [m for level, m in messages(alpha) if level == "WARNING"]
        carry = [m for m in warnings if "is not carried" in m]
        assert len(carry) == 1, warnings
        assert "runs on python 3.10, beta's /usr/bin/python3 is 3.11" in carry[0]
        assert "fix: run `make install` on beta" in carry[0]
    finally:
        ok(alpha, 'printf "%s" "$2" > "$1"', f"{PREFIX}/install.json", previous)


def test_a_dry_run_carries_nothing(ab: Sandbox) -> None:
    alpha, beta = ab.machines["alpha"], ab.machines["beta"]
    ok(beta, 'rm -rf -- "$1" "$2"', PREFIX, LINK)
    dry = pc_switcher(alpha, "sync", "beta", "--dry-run")
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    assert sh(beta, 'test -e "$1" || test -L "$2"', PREFIX, LINK).returncode == 1
    assert "would carry pc-switcher" in dry.stdout + dry.stderr


def test_an_inventory_without_this_machine_is_named_at_the_end(ab: Sandbox) -> None:
    """The way back needs this machine in the inventory: a successful sync says so, once, last."""
    alpha = ab.machines["alpha"]
    inventory = yaml.safe_load(ab.inventory_path.read_text())
    del inventory["all"]["hosts"]["alpha"]
    ok(alpha, 'printf "%s" "$2" > "$1"', "/root/only-beta.yml", yaml.safe_dump(inventory))
    done = pc_switcher(alpha, "sync", "beta", "-i", "/root/only-beta.yml", "--allow-out-of-order")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = log_records(alpha)
    note = [str(r["message"]) for r in records if "does not list this machine" in str(r.get("message"))]
    assert note == [
        "inventory /root/only-beta.yml does not list this machine (alpha): add it, then "
        "`pc-switcher sync alpha` works on beta (the way back)"
    ]
    messages_ = [str(r.get("message")) for r in records]
    recorded = next(i for i, m in enumerate(messages_) if m.startswith("sync history recorded"))
    assert messages_.index(note[0]) > recorded, "at the end of the sync"
    assert next(r for r in records if r.get("message") == note[0])["level"] == "WARNING"


def _driver_of(handle: subprocess.Popen[str]) -> psutil.Process:
    """The pc-switcher process (host pid) under the host-side nsenter ``handle``."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for child in psutil.Process(handle.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if any(part.endswith("/pc-switcher") for part in child.cmdline()):
                    return child
        time.sleep(0.01)
    raise AssertionError("the driver did not start")


def _carrying(machine: Machine) -> bool:
    """The carry's rsync runs on the source (its argv names the install's path; folder_sync's not)."""
    for proc in machine.processes():
        with contextlib.suppress(psutil.Error):
            argv = proc.cmdline()
            if argv[:1] == ["rsync"] and f"{PREFIX}/" in argv:
                return True
    return False


def _left(machine: Machine, timeout: float = 15.0) -> list[str]:
    """Processes and run dirs of the run still on the machine after ``timeout`` s (empty: clean)."""
    deadline = time.monotonic() + timeout
    while True:
        procs = describe(machine.extra_processes())
        dirs = [str(p) for p in machine.path("/tmp").glob("pcswitcher-*")]
        if not procs + dirs or time.monotonic() > deadline:
            return procs + dirs
        time.sleep(0.05)


def test_ctrl_c_while_the_install_is_carried_leaves_nothing(ab: Sandbox) -> None:
    """Abort is the core promise, also in the carry: Ctrl+C while the install's rsync runs ends every
    process of the run on both machines (exit 130), and the next sync carries the install whole."""
    alpha, beta = ab.machines["alpha"], ab.machines["beta"]
    ok(beta, 'rm -rf -- "$1" "$2"', PREFIX, LINK)
    env = ["env", "-i", PATH, "HOME=/root", "USER=root", "LANG=C.UTF-8"]
    flags = ["--allow-first-sync", "--allow-out-of-order"]  # whatever ran before in this module
    argv = [*env, "pc-switcher", "sync", "beta", *flags]
    handle = alpha.popen(argv, cwd="/root", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        driver = _driver_of(handle)
        deadline = time.monotonic() + 180
        while not _carrying(alpha):
            if handle.poll() is not None:
                raise AssertionError(f"the sync ended before its carry:\n{handle.communicate()[0][-3000:]}")
            assert time.monotonic() < deadline, "no carry's copy within 180 s"
            time.sleep(0.02)
        driver.send_signal(signal.SIGINT)
        out, _ = handle.communicate(timeout=120)
    finally:
        if handle.poll() is None:
            handle.kill()
            handle.wait()
    assert handle.returncode == 130, out[-3000:]
    assert {name: _left(m) for name, m in ab.machines.items()} == {"alpha": [], "beta": []}
    assert sh(beta, 'test -e "$1/install.json"', PREFIX).returncode == 1, "a cut copy is no install"

    done = pc_switcher(alpha, "sync", "beta", *flags)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert read(beta, f"{PREFIX}/install.json") == read(alpha, f"{PREFIX}/install.json")
    assert ok(beta, "pc-switcher --version").strip() == ok(alpha, "pc-switcher --version").strip()
