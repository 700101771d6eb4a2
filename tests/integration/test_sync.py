"""End to end: the real ``pc-switcher`` CLI inside the sandbox machine ``source``, syncing to ``target``.

One pair of machines serves the whole module (the tests do not interfere); every test starts and
ends with both machines clean (no process beyond the baseline, no ``/tmp/pcswitcher-*``).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import yaml

from pcswitcher.run.logs import list_logs
from tests.integration.folder_sync_helpers import bind_mount, sh
from tests.integration.helpers import (
    PC_SWITCHER,
    STATE,
    ObservedSync,
    assert_one_error_line,
    in_namespace_pid,
    leftovers,
    log_records,
    run_cli,
    run_id_of,
    run_sync,
    sandbox_config,
    start_sync,
    wait_for_path,
    write_config,
)
from tests.integration.outcome import assert_log_ends
from tests.sandbox import Machine, Sandbox

Record = dict[str, Any]


@pytest.fixture(autouse=True)
def clean_machines(sb: Sandbox) -> Iterator[None]:
    """Each test starts on clean machines and must leave them clean."""
    assert leftovers(sb) == {}
    yield
    assert leftovers(sb) == {}


def _time(record: Record) -> datetime:
    return datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))


def _messages(records: list[Record], **where: Any) -> list[str]:
    return [str(r["message"]) for r in records if all(r.get(k) == v for k, v in where.items())]


def _final(records: list[Record]) -> Record:
    final = [r for r in records if "exit_code" in r]
    assert len(final) == 1, "one 'finished' record"
    return final[0]


def _statuses(records: list[Record]) -> dict[str, str]:
    return {job["name"]: job["status"] for job in _final(records)["jobs"]}


def _phases(records: list[Record]) -> tuple[set[str], list[str]]:
    """Jobs whose tasks ran before "all N job(s) validated" (a set), and after it (in order, runs
    collapsed). Before the mark there is no order: the first job's checks run in its own held
    playbook alongside the other jobs' (docs/architecture.md, the gate)."""
    validated = next(
        (i for i, r in enumerate(records) if re.fullmatch(r"all \d+ job\(s\) validated", r["message"])),
        len(records),
    )

    def runs(part: list[Record]) -> list[str]:
        order: list[str] = []
        for record in part:
            job = record.get("job")
            if job and str(record["message"]).startswith("task: ") and (not order or order[-1] != job):
                order.append(str(job))
        return order

    return set(runs(records[:validated])), runs(records[validated:])


def _summary(stdout: str) -> dict[str, str]:
    """``Summary:`` rows of the terminal output: job -> status."""
    rows: dict[str, str] = {}
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Summary:")
    for line in lines[start + 1 :]:
        match = re.match(r"^\s+(\w+)\s+(succeeded|failed|skipped|not run|aborted)\b", line)
        if not match:
            break
        rows[match.group(1)] = match.group(2)
    return rows


def _summary_details(stdout: str) -> dict[str, str]:
    """``Summary:`` rows of the plain output: job -> detail (after status and duration)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Summary:")
    rows: dict[str, str] = {}
    for line in lines[start + 1 :]:
        match = re.match(r"^\s+(\w+)\s+(?:succeeded|failed|skipped|not run|aborted)\s+\S+\s*(.*)$", line)
        if not match:
            break
        rows[match.group(1)] = match.group(2)
    return rows


# --------------------------------------------------------------------------- the reference success


@dataclass
class Run:
    result: subprocess.CompletedProcess[str]
    records: list[Record]
    log_lines: list[str]
    stale_pid: int


@pytest.fixture(scope="module")
def success(sb: Sandbox) -> Run:
    """dummy_success (6 s on the source, 9 s on the target) with dummy_fail disabled, started over
    a stale lock file left by a dead process."""
    source = sb["source"]
    stale_pid = 4_000_000  # above pid_max: never a live process
    lock = source.path(f"{STATE}/sync.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": stale_pid, "role": "source", "target": "target", "run_id": "x"}))
    write_config(
        source,
        sandbox_config(
            {"dummy_fail": False, "dummy_success": True},
            dummy_success={"source_duration": 6, "target_duration": 9},
        ),
    )
    result = run_sync(sb)
    logs = list_logs(source.path(f"{STATE}/logs"))
    lines = logs[0].read_text().splitlines() if logs else []
    return Run(result, log_records(source), lines, stale_pid)


def test_success_exits_0_and_reports(success: Run) -> None:
    assert success.result.returncode == 0, success.result.stdout[-3000:] + success.result.stderr
    assert "Traceback" not in success.result.stdout + success.result.stderr
    assert "sync to target completed" in success.result.stdout
    assert _summary(success.result.stdout)["dummy_success"] == "succeeded"
    assert _statuses(success.records)["dummy_success"] == "succeeded"
    end = assert_log_ends(success.records, 0)
    assert end["message"] == "finished: sync to target completed, exit code 0"
    # the summary in the job's words (its declaration), not Ansible's changed-task count
    assert _summary_details(success.result.stdout)["dummy_success"] == (
        "worked 6.0s on the source, 9.0s on the target"
    )
    assert "changed" not in _summary_details(success.result.stdout)["dummy_success"]
    # the job's progress and relayed lines all come before its summary line
    lines = success.result.stdout.splitlines()
    done = next(i for i, line in enumerate(lines) if "dummy_success: succeeded" in line)
    assert any("[dummy_success@target] " in line for line in lines[:done])
    assert not [line for line in lines[done + 1 :] if "[dummy_success" in line], lines[done:]
    changed = [r for r in success.records if r.get("job") == "dummy_success" and "changed" in r]
    assert changed, "the count of changed tasks is in the log"
    assert changed[-1]["message"].endswith("task(s) changed")


def test_the_targets_disks_are_flushed_before_its_history_record(success: Run) -> None:
    messages = _messages(success.records)
    flushed = next(i for i, m in enumerate(messages) if m.startswith("target's disks flushed in "))
    recorded = next(i for i, m in enumerate(messages) if m.startswith("sync history recorded"))
    assert flushed < recorded
    assert "/run/pcs-btrfs" in messages[flushed], "the sandbox target's btrfs is one of them"


def test_log_is_json_lines_with_the_fields(success: Run) -> None:
    assert success.log_lines
    for line in success.log_lines:
        record = json.loads(line)
        assert isinstance(record, dict)
        assert {"time", "level", "job", "host", "message"} <= set(record), line
        assert record["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
        _time(record)
    assert run_id_of(success.records)


def test_log_has_info_from_both_hosts(success: Run) -> None:
    info = [r for r in success.records if r["level"] == "INFO" and r["job"] == "dummy_success"]
    assert "source work: 2/6 s" in _messages(info, host="source")
    assert "target work: 2/9 s" in _messages(info, host="target")


def test_log_has_the_warnings_from_the_source_and_the_target(success: Run) -> None:
    warning = _messages(success.records, level="WARNING", job="dummy_success", host="source")
    assert any("source warning at 6 s" in m for m in warning), warning
    simulated = _messages(success.records, level="WARNING", job="dummy_success", host="target")
    assert any("simulated error at 8 s on the target" in m for m in simulated), simulated
    # a successful sync has no ERROR line
    assert not [r for r in success.records if r["level"] in {"ERROR", "CRITICAL"}]
    # and the terminal showed them
    assert "source warning at 6 s" in success.result.stdout
    assert "simulated error at 8 s on the target (reference job: not a real problem)" in success.result.stdout


def test_progress_arrives_while_the_remote_task_runs(success: Run, sb: Sandbox) -> None:
    records = success.records
    end = next(r for r in records if r["job"] == "dummy_success" and r["message"] == "ok: Work on the target")
    progress = {
        str(r["message"]): r
        for r in records
        if r["host"] == "target" and str(r["message"]).startswith("target work: ")
    }
    for step in (2, 4, 6):
        assert _time(progress[f"target work: {step}/9 s"]) < _time(end)
    # the terminal showed the target's progress
    assert re.search(r"\[dummy_success@target\] \d+% target work", success.result.stdout)
    # relayed live, not at the task's end: watched in a run of its own, the target's first progress
    # line is in the log while the task still runs
    write_config(
        sb["source"],
        sandbox_config({"dummy_success": True}, dummy_success={"source_duration": 1, "target_duration": 6}),
    )
    run = ObservedSync.start(sb)
    first = run.wait_record(
        lambda r: r.get("host") == "target" and str(r.get("message", "")).startswith("target work: "),
        timeout=120,
        what="the target's first progress line",
    )
    ended = [r for r in run.records() if r.get("message") == "ok: Work on the target"]
    assert not ended, f"{first['message']!r} was relayed only when the task had ended"
    assert run.wait() == 0, run.output()


def test_disabled_job_is_skipped_and_not_run(success: Run) -> None:
    assert _summary(success.result.stdout)["dummy_fail"] == "skipped"
    assert _statuses(success.records)["dummy_fail"] == "skipped"
    assert not [r for r in success.records if r["job"] == "dummy_fail"]
    assert "dummy_fail (validate)" not in success.result.stdout


def test_stale_lock_does_not_block(success: Run, sb: Sandbox) -> None:
    assert success.result.returncode == 0
    assert f"cleared a stale lock left by pid {success.stale_pid}" in _messages(success.records)
    assert not sb["source"].path(f"{STATE}/sync.lock").exists(), "the lock is removed on release"


def test_logs_last_renders_the_newest_log(success: Run, sb: Sandbox) -> None:
    newest = log_records(sb["source"])
    result = run_cli(sb, "logs", "--last")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert run_id_of(newest) in out
    for line in out.splitlines():
        assert not line.lstrip().startswith("{"), line
        assert '"level":' not in line
        assert '"message":' not in line
    if run_id_of(newest) == run_id_of(success.records):
        assert "dummy_success" in out
        assert "source warning at 6 s" in out
        assert "target work: 2/9 s" in out
        assert "WARNING" in out
    info_only = run_cli(sb, "logs", "--last", "--level", "INFO")
    assert info_only.returncode == 0
    assert "task: " not in info_only.stdout


def test_logs_lists_the_logs(success: Run, sb: Sandbox) -> None:
    result = run_cli(sb, "logs")
    assert result.returncode == 0, result.stderr
    assert run_id_of(success.records) in result.stdout
    logs_dir = sb["source"].path(f"{STATE}/logs")
    for path in logs_dir.glob("*.jsonl"):
        assert path.stem in result.stdout


# --------------------------------------------------------------------------- failure and order


def test_failed_job_stops_the_sync(sb: Sandbox) -> None:
    source = sb["source"]
    write_config(
        source,
        sandbox_config(
            {"dummy_fail": True, "dummy_success": True},
            dummy_fail={"fail_at": 1, "duration": 3},
            dummy_success={"source_duration": 1, "target_duration": 1},
        ),
    )
    result = run_sync(sb)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    assert "dummy_fail failed at 1 s as configured" in output
    records = log_records(source)
    errors = _messages(records, level="ERROR")
    assert any("dummy_fail failed at 1 s as configured" in m for m in errors), errors
    summary = _summary(result.stdout)
    assert summary["dummy_fail"] == "failed"
    assert summary["dummy_success"] == "not run"
    assert _statuses(records) == {"dummy_fail": "failed", "dummy_success": "not run"}
    validated, ran = _phases(records)
    assert validated == {"dummy_fail", "dummy_success"}
    assert ran == ["dummy_fail"], "dummy_success ran after the failure"
    assert not _messages(records, job="dummy_success", message="task: Work on the source")
    assert_log_ends(records, 1, "dummy_fail failed at 1 s as configured")
    # what `logs --last --level warning` shows of a failed run: why, and how it ended
    shown = run_cli(sb, "logs", "--last", "--level", "warning")
    assert shown.returncode == 0, shown.stderr
    assert "dummy_fail failed at 1 s as configured" in shown.stdout
    assert "finished: sync to target aborted: job dummy_fail failed" in shown.stdout
    end = next(line for line in shown.stdout.splitlines() if "finished: " in line)
    assert " ERROR " in end, end
    assert ", exit code 1" in end, end


def test_jobs_run_in_config_order(sb: Sandbox) -> None:
    source = sb["source"]
    write_config(
        source,
        sandbox_config(
            {"dummy_success": True, "dummy_fail": True},
            dummy_fail={"fail_at": 0, "duration": 1},
            dummy_success={"source_duration": 0, "target_duration": 0},
        ),
    )
    result = run_sync(sb)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr
    records = log_records(source)
    validated, ran = _phases(records)
    assert validated == {"dummy_success", "dummy_fail"}, "every job validates before any job runs"
    assert ran == ["dummy_success", "dummy_fail"]
    assert _statuses(records) == {"dummy_success": "succeeded", "dummy_fail": "failed"}
    steps = re.findall(r"Step (\d)/2 (\w+) \((validate|sync)\)", result.stdout)
    assert steps == [
        ("1", "dummy_success", "validate"),
        ("2", "dummy_fail", "validate"),
        ("1", "dummy_success", "sync"),
        ("2", "dummy_fail", "sync"),
    ]


def test_a_failed_validation_runs_no_job(sb: Sandbox) -> None:
    source, target = sb["source"], sb["target"]
    write_config(
        source,
        sandbox_config(
            {"dummy_fail": True, "dummy_success": True},
            dummy_fail={"fail_at": 1, "duration": 2},
            dummy_success={"source_duration": 1, "target_duration": 1},
        ),
    )
    async_dir = target.path("/root/.ansible_async")
    before = set(async_dir.iterdir()) if async_dir.is_dir() else set()
    # validation fails on the target (its options are good: config check would refuse bad ones):
    # no sleep there, a non-executable file over it in the target's own mount namespace
    sh(target, "rm -f /root/no-sleep && : > /root/no-sleep && chmod 0644 /root/no-sleep")
    with bind_mount(target, "/root/no-sleep", "/usr/bin/sleep"):
        result = run_sync(sb)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    assert "needs bash and sleep on the target" in output
    records = log_records(source)
    validated, ran = _phases(records)
    assert validated == {"dummy_fail", "dummy_success"}
    assert ran == [], "a job ran its sync phase although a validation failed"
    sync_tasks = {
        "task: Work on the target until the configured failure",
        "task: Prepare the target",
        "task: Work on the source",
        "task: Work on the target",
    }
    assert not [r for r in records if r["message"] in sync_tasks]
    assert not [r for r in records if str(r["message"]).startswith(("dummy_fail work", "target work"))]
    statuses = _statuses(records)
    assert statuses["dummy_success"] == "failed"
    assert statuses["dummy_fail"] != "succeeded"
    assert_log_ends(records, 1, "needs bash and sleep on the target")
    after = set(async_dir.iterdir()) if async_dir.is_dir() else set()
    assert after == before, "an async job ran on the target"


# --------------------------------------------------------------------------- --only and --dry-run


def _json_result(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def test_only_runs_the_subset_in_config_order(sb: Sandbox) -> None:
    source = sb["source"]
    write_config(
        source,
        sandbox_config(
            {"dummy_fail": True, "dummy_success": True},
            dummy_fail={"fail_at": 1, "duration": 1},
            dummy_success={"source_duration": 1, "target_duration": 1},
        ),
    )
    # both, named out of order: they run in config order (a dry-run: dummy_fail does not fail)
    both = run_sync(sb, "--dry-run", "--json", "--only", "dummy_success,dummy_fail")
    assert both.returncode == 0, both.stdout[-2000:] + both.stderr[-3000:]
    steps = re.findall(r"Step \d/2 (\w+) \((validate|sync)\)", both.stderr)
    assert steps == [
        ("dummy_fail", "validate"),
        ("dummy_success", "validate"),
        ("dummy_fail", "sync"),
        ("dummy_success", "sync"),
    ]
    # one: the other is skipped, never started
    one = run_sync(sb, "--dry-run", "--json", "--only", "dummy_success")
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-3000:]
    jobs = {job["name"]: (job["status"], job["detail"]) for job in _json_result(one)["jobs"]}
    assert jobs["dummy_success"][0] == "succeeded"
    assert jobs["dummy_fail"] == ("skipped", "not in --only")
    assert "dummy_fail (validate)" not in one.stderr
    assert "dummy_fail (sync)" not in one.stderr


@pytest.mark.parametrize(
    ("only", "expected"),
    [("no_such_job", "unknown job 'no_such_job'"), ("dummy_fail", "job 'dummy_fail' is not enabled")],
)
def test_only_with_a_job_that_cannot_run(sb: Sandbox, only: str, expected: str) -> None:
    write_config(sb["source"], sandbox_config({"dummy_fail": False, "dummy_success": True}))
    line = assert_one_error_line(run_sync(sb, "--only", only), 2)
    assert expected in line


def _tree(machine: Machine, *roots: str) -> list[str]:
    """Every entry under ``roots`` (inside the machine) with its type, size and mtime."""
    script = 'for r in "$@"; do test ! -e "$r" || find "$r" -printf "%p %y %s %T@\\n"; done | sort'
    return sh(machine, script, *roots).stdout.splitlines()


def test_dry_run_changes_nothing(sb: Sandbox) -> None:
    """A dry-run looks at everything and changes nothing on either machine: no file of the synced
    folders (tree, sizes, mtimes), no history record, no state, no log."""
    source, target = sb["source"], sb["target"]
    sh(source, "mkdir -p /home/dry/sub && echo new > /home/dry/sub/new.txt && echo same > /home/dry/same")
    sh(target, "mkdir -p /home/dry && echo old > /home/dry/old.txt && echo differs > /home/dry/same")
    config = sandbox_config(
        {"dummy_success": True, "folder_sync": True},
        dummy_success={"source_duration": 2, "target_duration": 2},
        folder_sync={"folders": [{"source": "/home/dry"}]},
    )
    write_config(source, config)
    roots = ("/home", STATE)  # the synced folders and pc-switcher's state (history, logs, runs)
    # but the lock: a dry-run takes it too (it rewrites the lock file, and so its directory's mtime)
    lock = (STATE, f"{STATE}/sync.lock")

    def tree(machine: Machine) -> list[str]:
        return [line for line in _tree(machine, *roots) if line.split(" ", 1)[0] not in lock]

    before = {m.name: tree(m) for m in (source, target)}
    try:
        result = run_sync(sb, "--dry-run")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr
        out = result.stdout
        assert "DRY-RUN" in out
        assert "Would run a 2 s loop on the source" in out
        assert "would have worked" in out
        for line in ("source work: ", "target work: ", "preparing the target", "source warning"):
            assert line not in out, f"{line!r}: a dummy loop ran in a dry-run"
        assert "sub/new.txt" in out + result.stderr, "the dry-run did not look at what it would transfer"
        assert "sync to target completed (dry-run)" in out
        for machine in (source, target):
            after = tree(machine)
            changed = sorted(set(after) ^ set(before[machine.name]))
            assert after == before[machine.name], f"a dry-run changed {machine.name}: {changed}"
    finally:
        for machine in (source, target):
            sh(machine, "rm -rf /home/dry")


# --------------------------------------------------------------------------- the lock


def test_a_second_sync_meets_the_lock(sb: Sandbox) -> None:
    source = sb["source"]
    write_config(
        source,
        sandbox_config({"dummy_success": True}, dummy_success={"source_duration": 60, "target_duration": 1}),
    )
    first = start_sync(sb)
    try:
        wait_for_path(source, f"{STATE}/sync.lock")
        runs_before = sorted(p.name for p in source.path(f"{STATE}/runs").glob("*"))
        second = run_sync(sb, timeout=60)
        line = assert_one_error_line(second, 3)
        # its first job's playbook, started before the lock, was stopped and left nothing
        assert sorted(p.name for p in source.path(f"{STATE}/runs").glob("*")) == runs_before
        assert "another sync holds the lock" in line
        assert f"pid {in_namespace_pid(first.driver)}" in line
        assert "target target" in line
        assert first.handle.poll() is None, "the first sync was disturbed"
    finally:
        code, out = first.interrupt()
    assert code == 130, out[-3000:]
    assert "Traceback" not in out
    # the lock is free again: a dry-run goes through
    assert run_sync(sb, "--dry-run").returncode == 0


def test_the_cli_exit_leaves_no_temp_files(sb: Sandbox) -> None:
    """The console script ends with os._exit after the exit handlers (cli.entry): Ansible's own
    temp dir of the driver process (``ansible-local-*``) is still removed, and the exit code and
    the last lines still come out."""
    source = sb["source"]
    write_config(
        source,
        sandbox_config({"dummy_success": True}, dummy_success={"source_duration": 1, "target_duration": 1}),
    )
    before = sorted(p.name for p in source.path("/tmp").glob("ansible-local-*"))
    result = run_sync(sb, "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert json.loads(result.stdout)["exit_code"] == 0  # stdout flushed before the exit
    assert "sync to target completed" in result.stderr
    assert sorted(p.name for p in source.path("/tmp").glob("ansible-local-*")) == before
    failed = run_sync(sb, target="nope")
    assert failed.returncode == 2
    assert "unknown target 'nope'" in failed.stderr


def test_target_named_by_its_address(sb: Sandbox) -> None:
    """TARGET may be the host's ansible_host: the first job's playbook, started early with TARGET
    as its limit, is started again with the host's inventory name."""
    source = sb["source"]
    write_config(
        source,
        sandbox_config({"dummy_success": True}, dummy_success={"source_duration": 1, "target_duration": 9}),
    )
    result = run_sync(sb, target=sb["target"].address)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    records = log_records(source)
    assert _statuses(records)["dummy_success"] == "succeeded"
    # the job ran on the host (a playbook limited to the address would match no host and do nothing)
    assert any(
        m.startswith("simulated error at") for m in _messages(records, job="dummy_success", host="target")
    )
    assert "sync to target completed" in result.stdout
    assert leftovers(sb) == {}


# --------------------------------------------------------------------------- init and the CLI


XDG = "/root/xdg-init"


def _init(sb: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return sb["source"].run(["env", f"XDG_CONFIG_HOME={XDG}", PC_SWITCHER, "init", *args], timeout=60)


def test_init_writes_a_config_that_works(sb: Sandbox) -> None:
    source = sb["source"]
    directory = source.path(f"{XDG}/pc-switcher")
    assert not directory.exists()
    first = _init(sb)
    assert first.returncode == 0, first.stderr
    config = directory / "config.yml"
    inventory = directory / "inventory.yml"
    assert config.is_file()
    assert inventory.is_file()
    assert yaml.safe_load(inventory.read_text())["all"]["hosts"]
    written = config.read_text()

    again = _init(sb)
    line = assert_one_error_line(again, 2)
    assert "already exists" in line
    assert "--force" in line
    assert config.read_text() == written

    forced = _init(sb, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (directory / "config.yml.bak").read_text() == written
    assert (directory / "inventory.yml.bak").is_file()

    # the written config loads: enable dummy_success (only), dry-run with it
    data = yaml.safe_load(written)
    assert data["jobs"]["dummy_success"] is False
    text = re.sub(
        r"^(  )(\w+): (true|false)$",
        lambda m: f"{m.group(1)}{m.group(2)}: {'true' if m.group(2) == 'dummy_success' else 'false'}",
        written,
        flags=re.MULTILINE,
    )
    if "snapshots" in data:
        text = re.sub(
            r"^(snapshots:\n(?:  #.*\n)*  enabled: )true$", r"\1false", text, count=1, flags=re.MULTILINE
        )
    loaded = yaml.safe_load(text)
    assert [name for name, on in loaded["jobs"].items() if on] == ["dummy_success"]
    config.write_text(text)
    result = run_sync(sb, "--dry-run", "-c", f"{XDG}/pc-switcher/config.yml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "sync to target completed (dry-run)" in result.stdout


def _commands() -> list[list[str]]:
    from pcswitcher.cli.commands import cli

    names: list[list[str]] = [[]]
    for name, command in sorted(cli.commands.items()):
        names.append([name])
        sub = getattr(command, "commands", None)
        if isinstance(sub, dict):
            names += [[name, s] for s in sorted(sub)]
    return names


def test_version_help_and_completion(sb: Sandbox) -> None:
    from pcswitcher import __version__

    version = run_cli(sb, "--version")
    assert version.returncode == 0
    assert __version__ in version.stdout
    for command in _commands():
        result = run_cli(sb, *command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage:" in result.stdout, command
        assert result.stderr == "", command
    completion = run_cli(sb, "completion", "bash")
    assert completion.returncode == 0
    assert "_PC_SWITCHER_COMPLETE" in completion.stdout
    assert "complete " in completion.stdout
    # the script works: bash accepts it
    check = sb["source"].run(["bash", "-n", "-c", completion.stdout])
    assert check.returncode == 0, check.stderr
