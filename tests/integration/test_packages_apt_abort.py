"""Random-moment interrupts of the packages_apt job on root machines (issue 15, "Abort and rollback").

Each trial starts ``pc-switcher sync --only packages_apt`` in the root machine ``source`` towards the
root machine ``target``; the sync installs 11 packages: 10 from the local test repositories
(tests/apt_repos.py) and ``pcs-slow`` from a flat repository of this module, whose postinst runs for
4 s (so that an interrupt can reach the target while dpkg works: the 10 tiny packages are installed
in well under a second, less than an abort takes to arrive). The driver gets Ctrl+C (SIGINT) or
SIGTERM, at random: either at a random moment of the whole run (validation, the apt-get update, the
install), or at a random moment of the first half of pcs-slow's postinst (mid-dpkg). After each
trial:

* exit code 130 (SIGINT) or 143 (SIGTERM) (0 when the sync ended just before the signal came:
  at most a third of the trials may);
* nothing of the run is left (tests/integration/test_abort.py's ``assert_clean``: no process beyond
  either machine's baseline, no tagged process, no ssh master, no run dir, both locks free), and in
  particular no apt-get, apt, dpkg, dpkg-deb or apt method (file, http, gpgv) process in either
  machine;
* a following sync succeeds and converges (every package of the sync installed on the target, its
  files there; an interrupted dpkg run repaired first), and ``dpkg --audit`` on the target prints
  nothing. Each trial prints whether the interrupt left dpkg half done (``dpkg --audit`` before that
  sync), and the set how many did.

Then the packages are purged from the target, so the next trial installs them again. Both machines
live for the whole module. The seed is printed: ``PCS_APT_ABORT_SEED`` replays a set,
``PCS_APT_ABORT_TRIALS`` sizes it (default 6).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests import needs
from tests.apt_repos import BENCH, TestRepos, build_test_repos, installed_version
from tests.integration.helpers import ObservedSync, run_sync, sandbox_config, write_config
from tests.integration.test_abort import assert_clean
from tests.integration.test_packages_apt import JOB, apt, give_repos, ok, run
from tests.sandbox import Machine, Sandbox

# run alone, after the others (Makefile `integration`):
# the interrupt window is calibrated from one timed sync, then used
pytestmark = pytest.mark.serial

PACKAGES = (*BENCH[:10], "pcs-slow")
APT_PROCESSES = frozenset({"apt", "apt-get", "dpkg", "dpkg-deb", "http", "file", "gpgv"})
# the exit codes of an interrupted sync (from the moment ObservedSync.start returns: the driver
# catches SIGTERM from the start of its own code, and Ctrl+C is always caught by Python)
EXIT_CODES = {signal.SIGINT: {130}, signal.SIGTERM: {143}}


SLOW = "pcs-slow"  # its postinst takes SLOW_SECONDS: an interrupt can land while dpkg configures it
SLOW_SECONDS = 4
SLOW_LIST = "/etc/apt/sources.list.d/pcs-slow.list"
SLOW_MOUNT = "/srv/pcs-slow"


def slow_repo(top: Path) -> Path:
    """A flat repository (trusted, no signature: a file: URI on a read-only bind) with ``pcs-slow``
    1.0, whose postinst runs for SLOW_SECONDS (like a package that builds a cache); it installs
    /usr/share/pcs-test/pcs-slow as the test repositories' packages do."""
    tree, repo = top / "tree", top / "repo"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr/share/pcs-test").mkdir(parents=True)
    repo.mkdir()
    (tree / "usr/share/pcs-test" / SLOW).write_text(f"{SLOW} 1.0\n")
    (tree / "DEBIAN/control").write_text(
        f"Package: {SLOW}\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: pc-switcher tests <t@example.invalid>\nDescription: a package with a slow postinst\n"
    )
    postinst = tree / "DEBIAN/postinst"
    postinst.write_text(f"#!/bin/sh\nset -e\nsleep {SLOW_SECONDS}\n")
    postinst.chmod(0o755)
    for argv in (
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(repo / f"{SLOW}_1.0_all.deb")],
        ["dpkg-scanpackages", "--multiversion", "."],
    ):
        res = subprocess.run(argv, cwd=repo, capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stderr
    (repo / "Packages").write_text(res.stdout)
    return repo


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """Root machines without Debian's sources (offline apt); the source has the test repositories,
    the slow one, the 10 packages and pcs-slow, the target nothing of them."""
    needs.tools(needs.ROOT_MACHINE_TOOLS)
    repos: TestRepos = build_test_repos()
    binds = {"/srv/pcs-apt": repos.dir, SLOW_MOUNT: slow_repo(tmp_path_factory.mktemp("slow"))}
    with Sandbox() as sandbox:
        for name in ("source", "target"):
            machine = sandbox.add(name, root=True, ro_binds=binds)
            run(machine, "rm", "-f", "/etc/apt/sources.list")
            run(machine, "find", "/etc/apt/sources.list.d", "-mindepth", "1", "-delete")
            apt(machine, "update")
        source = sandbox["source"]
        source.path(SLOW_LIST).write_text(f"deb [trusted=yes] file:{SLOW_MOUNT} ./\n")
        give_repos(source, repos.files)
        apt(source, "install", *PACKAGES)
        write_config(source, sandbox_config({JOB: True}))
        yield sandbox


def installed(machine: Machine) -> dict[str, str]:
    """The status of each package of the sync in the machine (dpkg's db:Status-Status)."""
    res = machine.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *PACKAGES], timeout=60)
    return dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)


def apt_processes(machine: Machine) -> list[str]:
    """The apt and dpkg processes running in the machine (its whole PID namespace)."""
    found = []
    for proc in machine.processes():
        with contextlib.suppress(psutil.Error):
            if proc.name() in APT_PROCESSES:
                found.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
    return found


def _postinst_running(machine: Machine) -> bool:
    """pcs-slow's postinst runs in the machine (dpkg is configuring it)."""
    for proc in machine.processes():
        with contextlib.suppress(psutil.Error):
            if any(part.endswith(f"/{SLOW}.postinst") for part in proc.cmdline()):
                return True
    return False


@pytest.fixture(scope="module")
def sync_seconds(sb: Sandbox) -> float:
    """How long an uninterrupted sync of the 10 packages takes here (the window of the random
    moments); its target is then purged of them again."""
    source, target = sb["source"], sb["target"]
    started = time.monotonic()
    ok(run_sync(sb, "--only", JOB, timeout=600))
    took = time.monotonic() - started
    assert installed(target) == installed(source) == dict.fromkeys(PACKAGES, "installed")
    apt(target, "purge", *PACKAGES)
    print(f"\nan uninterrupted sync of {len(PACKAGES)} packages: {took:.1f} s")
    return took


def _interrupt(
    run_: ObservedSync, target: Machine, mid_dpkg: bool, window: float, rng: random.Random
) -> tuple[set[int], str]:
    """Wait for the moment, send the signal; returns the exit codes it means ({0}: the sync had
    ended before the moment came) and what happened (for messages). ``window``: the moments after the
    start are within its first ``window`` seconds; those after dpkg started, within 0.3 s of it (an
    install of the 10 packages is over in about a second).

    The sleeps ARE the behaviour under test: an interrupt at a random moment."""
    sig = rng.choice([signal.SIGINT, signal.SIGTERM])
    if mid_dpkg:
        deadline = time.monotonic() + 180
        while not _postinst_running(target):
            assert not run_.exited(), f"the sync ended before dpkg configured {SLOW}:\n{run_.output()}"
            assert time.monotonic() < deadline, f"dpkg never configured {SLOW} on the target"
            time.sleep(0.005)  # a poll of the target's processes
        delay = rng.uniform(0, SLOW_SECONDS / 2)
    else:
        delay = rng.uniform(0, window)
    time.sleep(delay)
    what = f"{sig.name} {'in the slow postinst' if mid_dpkg else 'after the start'} +{delay:.2f}s"
    try:
        if run_.exited():
            raise psutil.NoSuchProcess(run_.driver.pid)
        run_.signal(sig)
    except psutil.NoSuchProcess:
        return {0}, f"{what}: the sync had ended"
    return EXIT_CODES[sig], what


@pytest.mark.timeout(3600)
def test_random_interrupts_then_a_sync_converges(sb: Sandbox, sync_seconds: float) -> None:
    trials = int(os.environ.get("PCS_APT_ABORT_TRIALS") or 6)
    seed = int(os.environ.get("PCS_APT_ABORT_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"\npackages_apt abort trials: PCS_APT_ABORT_SEED={seed} PCS_APT_ABORT_TRIALS={trials}")
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    source, target = sb["source"], sb["target"]
    kinds = [index % 2 == 1 for index in range(trials)]  # every other trial: mid-dpkg
    rng.shuffle(kinds)
    late = 0  # trials whose sync ended before the signal came
    half_done = 0  # trials that left dpkg half done (the next sync repairs it)
    ran = 0  # the trials that ran to their end: the set's size is a promise of this test
    for index, mid_dpkg in enumerate(kinds, start=1):
        observed = ObservedSync.start(sb, "--only", JOB)
        expected, what = _interrupt(observed, target, mid_dpkg, 0.6 * sync_seconds, rng)
        rc = observed.wait(180)
        context = f"seed {seed}, trial {index}/{trials} ({what})"
        log = observed.log_path  # none when the interrupt came before the run's log was opened
        print(f"{context}: run {log.stem if log else '(before its log)'} rc {rc}")
        if rc == 0:  # the sync ended as the signal came (a moment late in a fast run)
            late += 1
        else:
            assert rc in expected, f"{context}: exit code {rc}:\n{observed.output()}"
        assert_clean(sb, context)
        assert apt_processes(source) == apt_processes(target) == [], context
        audit = target.run(["dpkg", "--audit"], timeout=60).stdout  # before the repair: printed only
        half_done += bool(audit.strip())
        print(f"{context}: dpkg --audit before the next sync: {len(audit.splitlines())} line(s)")
        ok(run_sync(sb, "--only", JOB, timeout=600))
        got = installed(target)
        assert got == dict.fromkeys(PACKAGES, "installed"), f"{context}: after the following sync: {got}"
        assert [installed_version(target.path("/"), n) for n in PACKAGES] == ["1.0"] * len(PACKAGES), context
        assert run(target, "dpkg", "--audit") == "", context
        assert_clean(sb, f"{context}: after the following sync")
        apt(target, "purge", *PACKAGES)  # the next trial installs them again
        ran += 1
    print(f"{half_done} of {trials} trials left dpkg half done (dpkg --audit not clean), {late} ended first")
    assert ran == trials, f"{ran} of {trials} trials ran"
    assert late <= trials // 3, (
        f"{late} of {trials} syncs ended before their interrupt: not a set of interrupts"
    )
