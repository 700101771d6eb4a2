"""Benchmark of the packages_apt job against the raw apt commands, on root machines (needs root).

    python -m bench.packages [--rounds 3] [--noops 3] [--timeline] [--json]

One root machine ``source`` (its own Debian root, offline: Debian's sources removed) has the local
test repositories of tests/apt_repos.py (bound read-only at /srv/pcs-apt) and the 20 ``pcs-bench-NN``
packages. Each round brings up fresh root targets that have the same repositories (their files and
an ``apt-get update``) and none of the packages, and times, in turn:

* raw: ``ssh TARGET apt-get install -y <the 20 packages>`` run in the source (the command a person
  would type; same ssh options as pc-switcher's tests: key, checked host key), on one fresh target;
  also ``apt-get update`` before it, as a separate figure;
* the job: ``pc-switcher sync TARGET --only packages_apt`` on another fresh target: the whole CLI
  run and the job's own time (its ``duration`` in the run's log: its playbook from the gate to its
  end), then ``--noops`` no-op syncs of the same target (the job's own time each).

Medians over the rounds. Goals (issue 15): the job's own time for a no-op ≤ 2 s; the install ≤ 1.2×
the raw ``apt-get install``. When a goal is missed, the job's tasks with the most time are listed
(from the log, within the job's own time: a task's time is until the job's next record); ``--timeline``
prints every timed run's log.
The measured runs: bench/packages_results.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from datetime import datetime
from typing import Any

from tests.apt_repos import BENCH, TestRepos, build_test_repos, install_files
from tests.integration.helpers import log_records, sandbox_config, start_sync, write_config
from tests.sandbox import Machine, Sandbox

JOB = "packages_apt"
NOOP_GOAL = 2.0
RATIO_GOAL = 1.2
TIMELINE = False  # --timeline: print each pc-switcher run's log with times


def _run(machine: Machine, argv: list[str], timeout: float = 900) -> float:
    started = time.monotonic()
    res = machine.run(argv, timeout=timeout)
    elapsed = time.monotonic() - started
    if res.returncode != 0:
        raise RuntimeError(f"{machine.name}: {argv[:4]} failed (rc {res.returncode}): {res.stderr[-2000:]}")
    return elapsed


def _apt(machine: Machine, *args: str) -> float:
    return _run(machine, ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y", *args])


def new_machine(sb: Sandbox, name: str, repos: TestRepos) -> Machine:
    """A fresh root machine, offline, with the test repositories and apt's lists of them."""
    machine = sb.add(name, root=True, ro_binds={"/srv/pcs-apt": repos.dir})
    _run(machine, ["rm", "-f", "/etc/apt/sources.list"])
    _run(machine, ["find", "/etc/apt/sources.list.d", "-mindepth", "1", "-delete"])
    install_files(machine.path("/"), repos.files)
    _apt(machine, "update")
    return machine


def ssh_argv(sb: Sandbox, target: Machine, *remote: str) -> list[str]:
    """``ssh root@TARGET REMOTE...`` from inside the source: the sandbox's key, the host key checked."""
    return [
        "ssh", "-F", "/dev/null", "-i", str(sb.client_key), "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={sb.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-p", str(target.port), "-l", "root", target.address, *remote,
    ]  # fmt: skip


def raw(sb: Sandbox, target: Machine) -> tuple[float, float]:
    """The raw commands on a fresh target: (apt-get update, apt-get install -y <20>) seconds."""
    apt_get = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y"]
    update = _run(sb["source"], ssh_argv(sb, target, *apt_get, "update"))
    install = _run(sb["source"], ssh_argv(sb, target, *apt_get, "install", *BENCH))
    print(f"  raw on {target.name}: apt-get update {update:.2f} s, apt-get install {install:.2f} s")
    return update, install


def job(sb: Sandbox, target: Machine) -> tuple[float, float, list[dict[str, Any]]]:
    """One ``pc-switcher sync TARGET --only packages_apt``: (whole run, the job's own time, its log)."""
    wall = time.time()
    started = time.monotonic()
    sync = start_sync(sb, "--only", JOB, target=target.name)
    rc, out = sync.wait(timeout=900)
    elapsed = time.monotonic() - started
    if rc != 0:
        raise RuntimeError(f"pc-switcher sync {target.name} failed (rc {rc}):\n{out[-3000:]}")
    records = log_records(sb["source"])
    if TIMELINE:
        for record in records:
            at = datetime.fromisoformat(str(record["time"])).timestamp() - wall
            print(f"      {at:6.2f} {record['level']:7} {str(record['message'])[:100]}")
    seconds = job_seconds(records)
    print(f"  pc-switcher sync {target.name}: {elapsed:.2f} s (job {seconds:.2f} s)")
    return elapsed, seconds, records


def job_seconds(records: list[dict[str, Any]]) -> float:
    for record in records:
        jobs = record.get("jobs")
        for entry in jobs if isinstance(jobs, list) else []:
            if isinstance(entry, dict) and entry.get("name") == JOB:
                return float(entry.get("duration") or 0.0)
    raise RuntimeError("no duration of the packages_apt job in the run's log")


def breakdown(records: list[dict[str, Any]], top: int = 8) -> list[tuple[float, str]]:
    """Where the job's own time went: each of the job's records until its next one, clipped to the
    job's own time (its last record minus its duration), longest first."""
    mine = [(datetime.fromisoformat(str(r["time"])).timestamp(), str(r.get("message"))[:90]) for r in records]
    mine = [m for m, r in zip(mine, records, strict=True) if r.get("job") == JOB]
    if not mine:
        return []
    end = mine[-1][0]
    begin = end - job_seconds(records)
    spans = [
        (min(end, later) - max(begin, at), message)
        for (at, message), (later, _next) in itertools.pairwise(mine)
        if later > begin
    ]
    return sorted(spans, reverse=True)[:top]


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: at least 1 (each goal needs a figure)")
    return value


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def bench(sb: Sandbox, repos: TestRepos, rounds: int, noops: int) -> dict[str, Any]:
    updates, installs, cli_runs, job_runs, noop_runs = [], [], [], [], []
    slowest_install: list[dict[str, Any]] = []
    slowest_noop: list[dict[str, Any]] = []
    for index in range(1, rounds + 1):
        update, install = raw(sb, new_machine(sb, f"raw{index}", repos))
        updates.append(update)
        installs.append(install)
        target = new_machine(sb, f"job{index}", repos)
        whole, own, records = job(sb, target)
        cli_runs.append(whole)
        job_runs.append(own)
        if own >= max(job_runs):
            slowest_install = records
        for _ in range(noops):
            _whole, own, records = job(sb, target)
            noop_runs.append(own)
            if own >= max(noop_runs):
                slowest_noop = records
    figures = {
        "job_extra": _median([job_ - raw_ for job_, raw_ in zip(job_runs, installs, strict=True)]),
        "raw_update": _median(updates),
        "raw_install": _median(installs),
        "cli_install": _median(cli_runs),
        "job_install": _median(job_runs),
        "job_noop": _median(noop_runs),
        "job_noop_max": max(noop_runs),
    }
    report(figures, rounds, noops, slowest_install, slowest_noop)
    return figures


def report(
    f: dict[str, Any],
    rounds: int,
    noops: int,
    install_log: list[dict[str, Any]],
    noop_log: list[dict[str, Any]],
) -> None:
    ratio = f["job_install"] / f["raw_install"]
    with_update = f["job_install"] / (f["raw_install"] + f["raw_update"])
    print(f"\n== packages_apt, {len(BENCH)} packages (medians of {rounds} installs, {rounds * noops} no-ops)")
    print(
        f"raw apt-get install over ssh   {f['raw_install']:6.2f} s "
        f"(apt-get update before it {f['raw_update']:.2f} s)"
    )
    print(
        f"job install (its own time)     {f['job_install']:6.2f} s (whole CLI run {f['cli_install']:.2f} s)"
    )
    print(
        f"install ratio job/raw          {ratio:6.2f}x (goal <= {RATIO_GOAL}x) "
        f"{'OK' if ratio <= RATIO_GOAL else 'MISSED'}"
        f"   against update + install {with_update:.2f}x"
    )
    print(f"  per round, job minus raw install: median {f['job_extra']:+.2f} s (the job's fixed cost)")
    noop_ok = f["job_noop"] <= NOOP_GOAL
    print(
        f"job no-op (its own time)       {f['job_noop']:6.2f} s (goal <= {NOOP_GOAL} s) "
        f"{'OK' if noop_ok else 'MISSED'}   slowest {f['job_noop_max']:.2f} s"
    )
    for missed, log, what in ((ratio > RATIO_GOAL, install_log, "install"), (not noop_ok, noop_log, "no-op")):
        if missed:
            print(f"where the slowest {what} run's time went (the job's records, until the next one):")
            for seconds, message in breakdown(log):
                print(f"  {seconds:6.2f} s  {message}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.packages", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=_at_least_one, default=3, help="fresh targets per variant (medians)")
    parser.add_argument("--noops", type=_at_least_one, default=3, help="no-op syncs after each job install")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--timeline", action="store_true", help="print each CLI run's log, timed")
    args = parser.parse_args(argv)
    global TIMELINE  # noqa: PLW0603 - a switch of this script, set once
    TIMELINE = args.timeline
    repos = build_test_repos()
    with Sandbox() as sb:
        source = new_machine(sb, "source", repos)
        _apt(source, "install", *BENCH)
        write_config(source, sandbox_config({JOB: True}))
        figures = bench(sb, repos, args.rounds, args.noops)
        if args.json:
            print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
