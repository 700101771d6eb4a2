"""Abort latency of pc-switcher against sandbox machines (needs root).

    python -m bench.abort_latency [--trials N] [--seed S] [--side-trials M]

Brings up a sandbox (machines ``source`` and ``target``), then runs N trials of ``pc-switcher sync``
(job dummy_success, 2 s on the source, 4 s async on the target) inside ``source`` with a Ctrl+C
(SIGINT to the driver) at a random moment of the run, drawn uniformly from its whole length
(agent start, validation, pre_sync, source loop, remote async task). An OUTSIDE observer — a thread
of this process polling both machines' process lists every ~10 ms — measures:

(a) signal → the last *process of the run* gone on both machines, where a process of the run is
    * on the source: a process tagged ``PCSWITCHER_RUN_ID=<run>`` (job modules and their children),
      or a process of one of the run's *job* playbooks: ansible-playbook, its workers, their ssh
      clients (recognised by the ``PCSWITCHER_INVOCATION`` mark that every process runner starts
      inherits; orphans reparented to init included);
    * on the target: a process beyond the machine's baseline that is tagged with the run, or whose
      command line names the run (``PCSWITCHER_RUN_ID=<run> /usr/bin/python3`` shells, the run's
      temp dir), and every descendant of those;
    * NOT counted: the abort machinery itself — the driver, its two agents (the ``monitor`` processes
      and the ssh ControlMaster / sshd session that carry them), and the cleanup playbook with its own
      connection and remote ``pcswitcher_agent.py sweep``; they end with the driver and are covered by
    (a*) signal → nothing beyond the baseline on either machine (driver, agents, ssh included);
(b) signal → the driver's exit.

Also, with fewer trials (``--side-trials``, default 3): free space on the target's /home pushed below
``runtime_minimum`` during the async task (fallocate) → driver exit, and the link cut (SIGSTOP of the
target's sshd session processes, link_timeout 3 s) → driver exit. Goals: (a) ≤ 1.0 s p95,
(b) ≤ 3.0 s p95. The measured runs: bench/abort_latency_results.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from tests.integration.helpers import REPO, STATE, TAG, ObservedSync, dummy_config, write_config
from tests.sandbox import Machine, Sandbox

LOGS = f"{STATE}/logs"
MARK = "PCSWITCHER_INVOCATION"
MiB = 1 << 20
GOAL_A = 1.0
GOAL_B = 3.0


def _config(config: dict[str, Any]) -> dict[str, Any]:
    """Turn off sections a sandbox cannot serve (btrfs snapshots of the host's /), if the schema has them."""
    from pcswitcher.config.schema import config_schema
    from pcswitcher.jobs.discovery import discover_jobs

    if "snapshots" in config_schema(discover_jobs(REPO))["properties"]:
        config.setdefault("snapshots", {"enabled": False})
    return config


# --------------------------------------------------------------------------------------------------
# the outside observer


def _ns_pids(ns: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == ns:
                    out.append(int(entry))
            except OSError:
                continue
    return out


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _ppid_state(pid: int) -> tuple[int, str]:
    data = _read(f"/proc/{pid}/stat")
    try:
        rest = data[data.rindex(b")") + 2 :].split()
        return int(rest[1]), rest[0].decode()
    except (ValueError, IndexError):
        return 0, "X"


@dataclass
class Snapshot:
    t: float
    job: int  # processes of the run, definition (a)
    extra: int  # anything beyond the baselines, definition (a*)


@dataclass
class Observer:
    """Polls both machines every ``period`` s and counts processes of the run (see module doc)."""

    source: Machine
    target: Machine
    period: float = 0.01
    run_id: str | None = None
    snapshots: list[Snapshot] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._ns = {
            "source": os.readlink(f"/proc/{self.source.init_pid}/ns/pid"),
            "target": os.readlink(f"/proc/{self.target.init_pid}/ns/pid"),
        }
        self._baseline = {p.pid for m in (self.source, self.target) for p in m.processes()} - {
            p.pid for m in (self.source, self.target) for p in m.extra_processes()
        }

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            job, extra = self.count()
            self.snapshots.append(Snapshot(t, job, extra))
            time.sleep(max(0.0, self.period - (time.monotonic() - t)))

    def count(self) -> tuple[int, int]:
        run = self.run_id
        tag = f"{TAG}={run}".encode() if run else None
        job = extra = 0
        for name, ns in self._ns.items():
            parents: dict[int, int] = {}
            matched: set[int] = set()
            for pid in _ns_pids(ns):
                if pid in self._baseline:
                    continue
                ppid, state = _ppid_state(pid)
                if state in {"Z", "X"}:
                    continue
                extra += 1
                parents[pid] = ppid
                if run is None or tag is None:
                    continue
                environ = _read(f"/proc/{pid}/environ").split(b"\0")
                cmdline = _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ")
                if b"pcswitcher_agent.py" in cmdline or b" monitor --run " in cmdline:
                    continue  # the agents and the cleanup playbook's sweep: abort machinery
                if tag in environ:
                    matched.add(pid)
                elif name == "source":
                    mark = next((e for e in environ if e.startswith(MARK.encode() + b"=")), b"")
                    if f"/runs/{run}/".encode() in mark and not mark.endswith(b"-cleanup"):
                        matched.add(pid)
                elif run.encode() in cmdline:
                    matched.add(pid)
            if name == "target":  # descendants of the run's processes on the target
                changed = True
                while changed:
                    changed = False
                    for pid, ppid in parents.items():
                        if pid not in matched and ppid in matched:
                            matched.add(pid)
                            changed = True
            job += len(matched)
        return job, extra

    def gone_after(self, since: float, key: Callable[[Snapshot], int]) -> float | None:
        """Seconds from ``since`` to the first snapshot with none left after the last one with some."""
        after = [s for s in self.snapshots if s.t >= since]
        last_busy = max((i for i, s in enumerate(after) if key(s) > 0), default=-1)
        if last_busy + 1 >= len(after):
            return None
        return after[last_busy + 1].t - since


# --------------------------------------------------------------------------------------------------
# one sync


def _wait_clean(sb: Sandbox, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while any(m.extra_processes() for m in sb.machines.values()):
        if time.monotonic() > deadline:
            raise RuntimeError("the machines did not become clean between trials")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------------
# the measurements


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _row(name: str, values: list[float], goal: float | None = None) -> str:
    if not values:
        return f"{name:<46} {'-':>6} {'-':>6} {'-':>6}  n=0"
    p95 = _pct(values, 0.95)
    verdict = "" if goal is None else f"  goal p95 ≤ {goal:.1f} s: {'met' if p95 <= goal else 'MISSED'}"
    return (
        f"{name:<46} {statistics.median(values):6.2f} {p95:6.2f} {max(values):6.2f}  n={len(values)}{verdict}"
    )


def ctrl_c_trials(sb: Sandbox, trials: int, rng: random.Random, run_length: float) -> dict[str, list[float]]:
    source, target = sb.machines["source"], sb.machines["target"]
    write_config(source, _config(dummy_config(2, 4)))
    out: dict[str, list[float]] = {"a": [], "a*": [], "b": []}
    for index in range(1, trials + 1):
        _wait_clean(sb)
        observer = Observer(source, target)
        observer.start()
        run = ObservedSync.start(sb)
        run.wait_record(lambda r: str(r.get("message", "")).startswith("pc-switcher run"))
        t0 = time.monotonic()
        path = run.log_path
        assert path is not None
        observer.run_id = path.stem
        delay = rng.uniform(0, run_length)
        time.sleep(max(0.0, t0 + delay - time.monotonic()))
        signalled = time.monotonic()
        run.driver.send_signal(signal.SIGINT)
        exited = run.wait_exit()
        time.sleep(1.0)  # let the observer see the end
        observer.stop()
        a = observer.gone_after(signalled, lambda s: s.job)
        a_all = observer.gone_after(signalled, lambda s: s.extra)
        b = exited - signalled
        print(
            f"  trial {index:2d}: Ctrl+C at {delay:5.2f} s → rc {run.rc}; (a) {_fmt(a)}  (a*) {_fmt(a_all)}"
            f"  (b) {b:.2f} s",
            flush=True,
        )
        if a is not None:
            out["a"].append(a)
        if a_all is not None:
            out["a*"].append(a_all)
        out["b"].append(b)
    return out


def _fmt(value: float | None) -> str:
    return "   -  " if value is None else f"{value:.2f} s"


def _free(machine: Machine, path: str) -> int:
    st = os.statvfs(machine.path(path))
    return st.f_bavail * st.f_frsize


def disk_trials(sb: Sandbox, trials: int) -> list[float]:
    source, target = sb.machines["source"], sb.machines["target"]
    config = dummy_config(1, 30)
    config["disk"] = {
        "preflight_minimum": "600MiB",
        "warning_threshold": "500MiB",
        "runtime_minimum": "400MiB",
        "paths": {"source": ["/home"], "target": ["/home"]},
    }  # interval: the default (1 s)
    write_config(source, _config(config))
    out = []
    for index in range(1, trials + 1):
        _wait_clean(sb)
        run = ObservedSync.start(sb)
        run.wait_record(lambda r: r.get("message") == "task: Work on the target")
        time.sleep(1.0)
        fill = "/home/pcs-bench-fill"
        target.run(["fallocate", "-l", str(_free(target, "/home") - 200 * MiB), fill], check=True)
        # btrfs reports the new free space (statvfs) only after a transaction commit, up to 30 s
        # later unless forced: commit now, so the figure measures pc-switcher, not btrfs
        target.run(["sync", "-f", fill], check=True)
        crossed = time.monotonic()
        try:
            exited = run.wait_exit()
        finally:
            target.run(["rm", "-f", fill])
            target.run(["sync", "-f", "/home"])
        print(f"  disk {index}: threshold crossed → exit {exited - crossed:.2f} s (rc {run.rc})", flush=True)
        out.append(exited - crossed)
    return out


def link_trials(sb: Sandbox, trials: int) -> list[float]:
    source, target = sb.machines["source"], sb.machines["target"]
    config = dummy_config(1, 30)
    config["link_timeout"] = 3
    write_config(source, _config(config))
    out = []
    for index in range(1, trials + 1):
        _wait_clean(sb)
        run = ObservedSync.start(sb)
        run.wait_record(lambda r: r.get("message") == "task: Work on the target")
        time.sleep(1.0)
        frozen = []
        for proc in target.extra_processes():
            with contextlib.suppress(psutil.Error):
                if " ".join(proc.cmdline()).startswith("sshd:"):
                    proc.send_signal(signal.SIGSTOP)
                    frozen.append(proc)
        cut = time.monotonic()
        try:
            exited = run.wait_exit()
        finally:
            for proc in frozen:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(signal.SIGCONT)
        print(
            f"  link {index}: sshd sessions frozen → exit {exited - cut:.2f} s (rc {run.rc})",
            flush=True,
        )
        out.append(exited - cut)
        _wait_clean(sb, 30)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.abort_latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--trials", type=int, default=20, help="Ctrl+C trials (default 20)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument("--side-trials", type=int, default=3, help="disk and link trials each (default 3)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("error: the benchmark needs root (sandbox machines)", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    print(f"abort latency benchmark: --trials {args.trials} --seed {seed} --side-trials {args.side_trials}")
    with Sandbox(size="2G") as sb:
        source = sb.add("source")
        sb.add("target")
        write_config(source, _config(dummy_config(2, 4)))
        warm = ObservedSync.start(sb)
        warm.wait_record(lambda r: str(r.get("message", "")).startswith("pc-switcher run"))
        t0 = time.monotonic()
        end = warm.wait_exit()
        run_length = (end - t0) * 0.9
        print(
            f"a full dummy_success sync (2 s source, 4 s target) takes {end - t0:.1f} s (rc {warm.rc}); "
            f"Ctrl+C drawn from [0, {run_length:.1f}] s after the run's first log record"
        )
        results = ctrl_c_trials(sb, args.trials, rng, run_length)
        disk = disk_trials(sb, args.side_trials) if args.side_trials else []
        link = link_trials(sb, args.side_trials) if args.side_trials else []
    print()
    print(f"{'measure (seconds)':<46} {'p50':>6} {'p95':>6} {'max':>6}")
    print(_row("(a) Ctrl+C → last process of the run gone", results["a"], GOAL_A))
    print(_row("(a*) Ctrl+C → nothing beyond baseline", results["a*"]))
    print(_row("(b) Ctrl+C → driver exit", results["b"], GOAL_B))
    print(_row("disk below runtime_minimum → driver exit", disk))
    print(_row("link cut (link_timeout 3 s) → driver exit", link))
    print(f"seed {seed}; observer period 10 ms; see the module doc for what counts as a process of the run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
