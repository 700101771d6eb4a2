"""The commands beside ``sync`` never harm a live run (``cleanup`` refuses it, exit 3) nor invent
one (an unknown run id is exit 2 and creates nothing)."""

from __future__ import annotations

import json

from tests.integration.helpers import (
    STATE,
    ObservedSync,
    assert_one_error_line,
    dummy_config,
    leftovers,
    run_cli,
    tagged,
    write_config,
)
from tests.sandbox import Sandbox

LOCK = f"{STATE}/sync.lock"


def test_cleanup_refuses_a_live_sync(sb: Sandbox) -> None:
    source, target = sb["source"], sb["target"]
    # the checks below run in the source's 20 s (with room for a busy machine); the target's part
    # is short: the run then ends by itself, untouched
    write_config(source, dummy_config(source_duration=20, target_duration=1))
    run = ObservedSync.start(sb)
    try:
        run.wait_task("Work on the source")
        holder = json.loads(source.path(LOCK).read_text())
        assert tagged(target) or tagged(source), "the job runs nothing tagged: nothing to protect"
        for argv in (
            ["cleanup", "target", "-i", str(sb.inventory_path)],
            ["cleanup", "target", "--run", run.run_id, "-i", str(sb.inventory_path)],
        ):
            result = run_cli(sb, *argv)
            line = assert_one_error_line(result, 3)
            assert "a sync is running: another sync holds the lock" in line
            for part in (f"pid {holder['pid']}", "target target", f"run_id {run.run_id}", "started "):
                assert part in line, (part, line)
            assert f"kill -TERM {holder['pid']}" in line
            assert not run.exited(), "cleanup killed the live run"
        code = run.wait(180)
        assert code == 0, run.output()
        assert run.job_status() == {"dummy_success": "succeeded"}
    finally:
        if not run.exited():
            run.driver.terminate()
            run.wait(120)
    assert leftovers(sb) == {}


def test_cleanup_of_an_unknown_run_creates_nothing(sb: Sandbox) -> None:
    source = sb["source"]
    state = source.path(STATE)
    before = sorted(str(p.relative_to(state)) for p in state.rglob("*")) if state.exists() else None
    result = run_cli(sb, "cleanup", "target", "--run", "20990101T000000Z-beef", "-i", str(sb.inventory_path))
    line = assert_one_error_line(result, 2)
    assert "--run 20990101T000000Z-beef: no such run on this machine" in line
    after = sorted(str(p.relative_to(state)) for p in state.rglob("*")) if state.exists() else None
    assert after == before
    assert not source.path(f"{STATE}/runs/20990101T000000Z-beef").exists()


def test_cleanup_of_a_dead_run_still_works(sb: Sandbox) -> None:
    """The guard leaves cleanup's purpose intact: a run that ended (here: completed) is cleaned."""
    source = sb["source"]
    write_config(source, dummy_config(source_duration=0, target_duration=0))
    run = ObservedSync.start(sb)
    assert run.wait(180) == 0, run.output()
    result = run_cli(sb, "cleanup", "target", "--run", run.run_id, "-i", str(sb.inventory_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"cleaning up run {run.run_id}" in result.stdout
    assert not source.path(LOCK).exists(), "cleanup left its lock behind"
    assert leftovers(sb) == {}
