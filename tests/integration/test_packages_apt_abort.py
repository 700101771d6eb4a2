"""Random-moment interrupts of the packages_apt job on root machines (issue 15, "Abort and rollback").

Each trial starts ``pc-switcher sync --only packages_apt`` in the root machine ``source`` towards the
root machine ``target``; the sync installs 10 packages from the local test repositories
(tests/apt_repos.py). The driver gets Ctrl+C (SIGINT) or SIGTERM, at random: either at a random
moment of the whole run (validation, the apt-get update, the install), or at a random moment after
dpkg was seen running on the target (mid-dpkg). After each trial:

* exit code 130 (SIGINT) or 143 (SIGTERM);
* nothing of the run is left (tests/integration/test_abort.py's ``assert_clean``: no process beyond
  either machine's baseline, no tagged process, no ssh master, no run dir, both locks free), and in
  particular no apt-get, apt, dpkg, dpkg-deb or apt method (file, http, gpgv) process in either machine;
* a following sync succeeds and converges (the target has the source's test packages and versions,
  the repair of an interrupted dpkg included), and ``dpkg --audit`` on the target prints nothing.

Then the 10 packages are purged from the target, so the next trial installs them again. Both machines
live for the whole module. The seed is printed: ``PCS_APT_ABORT_SEED`` replays a set,
``PCS_APT_ABORT_TRIALS`` sizes it (default 6).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Iterator

import psutil
import pytest

from tests import needs
from tests.apt_repos import BENCH, TestRepos, build_test_repos, installed_version
from tests.integration.helpers import ObservedSync, run_sync, sandbox_config, write_config
from tests.integration.test_abort import assert_clean
from tests.integration.test_packages_apt import JOB, apt, give_repos, ok, run
from tests.sandbox import Machine, Sandbox

PACKAGES = BENCH[:10]
APT_PROCESSES = frozenset({"apt", "apt-get", "dpkg", "dpkg-deb", "http", "file", "gpgv"})
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    """Root machines without Debian's sources (offline apt); the source has the test repositories
    and the 10 packages, the target nothing of them."""
    needs.tools(needs.ROOT_MACHINE_TOOLS)
    repos: TestRepos = build_test_repos()
    with Sandbox() as sandbox:
        for name in ("source", "target"):
            machine = sandbox.add(name, root=True, ro_binds={"/srv/pcs-apt": repos.dir})
            run(machine, "rm", "-f", "/etc/apt/sources.list")
            run(machine, "find", "/etc/apt/sources.list.d", "-mindepth", "1", "-delete")
            apt(machine, "update")
        give_repos(sandbox["source"], repos.files)
        apt(sandbox["source"], "install", *PACKAGES)
        write_config(sandbox["source"], sandbox_config({JOB: True}))
        yield sandbox


def apt_processes(machine: Machine) -> list[str]:
    """The apt and dpkg processes running in the machine (its whole PID namespace)."""
    found = []
    for proc in machine.processes():
        with contextlib.suppress(psutil.Error):
            if proc.name() in APT_PROCESSES:
                found.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
    return found


def _dpkg_running(machine: Machine) -> bool:
    for proc in machine.processes():
        with contextlib.suppress(psutil.Error):
            if proc.name() == "dpkg":
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
    assert [installed_version(target.path("/"), n) for n in PACKAGES] == ["1.0"] * len(PACKAGES)
    assert [installed_version(source.path("/"), n) for n in PACKAGES] == ["1.0"] * len(PACKAGES)
    apt(target, "purge", *PACKAGES)
    print(f"\nan uninterrupted sync of {len(PACKAGES)} packages: {took:.1f} s")
    return took


def _interrupt(
    run_: ObservedSync, target: Machine, mid_dpkg: bool, window: float, rng: random.Random
) -> tuple[int, str]:
    """Wait for the moment (``window``: the random moments are within the first ``window`` seconds of
    the run), send the signal; returns the exit code it means and what happened (for messages).

    The sleeps ARE the behaviour under test: an interrupt at a random moment."""
    sig = rng.choice([signal.SIGINT, signal.SIGTERM])
    if mid_dpkg:
        deadline = time.monotonic() + 180
        while not _dpkg_running(target):
            assert not run_.exited(), f"the sync ended before dpkg ran on the target:\n{run_.output()}"
            assert time.monotonic() < deadline, "dpkg never ran on the target"
            time.sleep(0.005)  # a poll of the target's processes
        delay = rng.uniform(0, 1.5)
    else:
        delay = rng.uniform(0, window)
    time.sleep(delay)
    run_.signal(sig)
    return EXIT_CODES[
        sig
    ], f"{sig.name} {'after dpkg started' if mid_dpkg else 'after the start'} +{delay:.2f}s"


@pytest.mark.timeout(3600)
def test_random_interrupts_then_a_sync_converges(sb: Sandbox, sync_seconds: float) -> None:
    trials = int(os.environ.get("PCS_APT_ABORT_TRIALS") or 6)
    seed = int(os.environ.get("PCS_APT_ABORT_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"\npackages_apt abort trials: PCS_APT_ABORT_SEED={seed} PCS_APT_ABORT_TRIALS={trials}")
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    source, target = sb["source"], sb["target"]
    kinds = [index % 2 == 1 for index in range(trials)]  # every other trial: mid-dpkg
    rng.shuffle(kinds)
    half_done = 0  # trials that left dpkg half done (the next sync repairs it)
    ran = 0  # the trials that ran to their end: the set's size is a promise of this test
    for index, mid_dpkg in enumerate(kinds, start=1):
        observed = ObservedSync.start(sb, "--only", JOB)
        expected, what = _interrupt(observed, target, mid_dpkg, 0.8 * sync_seconds, rng)
        rc = observed.wait(180)
        context = f"seed {seed}, trial {index}/{trials} ({what})"
        log = observed.log_path  # none when the interrupt came before the run's log was opened
        print(f"{context}: run {log.stem if log else '(before its log)'} rc {rc}")
        assert rc == expected, f"{context}: exit code {rc}:\n{observed.output()}"
        assert_clean(sb, context)
        assert apt_processes(source) == apt_processes(target) == [], context
        audit = target.run(["dpkg", "--audit"], timeout=60).stdout  # before the repair: printed only
        half_done += bool(audit.strip())
        print(f"{context}: dpkg --audit before the next sync: {len(audit.splitlines())} line(s)")
        ok(run_sync(sb, "--only", JOB, timeout=600))
        got = {n: installed_version(target.path("/"), n) for n in PACKAGES}
        assert got == dict.fromkeys(PACKAGES, "1.0"), f"{context}: after the following sync: {got}"
        assert run(target, "dpkg", "--audit") == "", context
        assert_clean(sb, f"{context}: after the following sync")
        apt(target, "purge", *PACKAGES)  # the next trial installs them again
        ran += 1
    print(f"{half_done} of {trials} trials left dpkg half done (dpkg --audit not clean)")
    assert ran == trials, f"{ran} of {trials} trials ran"
