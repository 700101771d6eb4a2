"""The session log: JSON lines, levels, redaction, finding and rendering logs."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from pcswitcher.errors import UsageError
from pcswitcher.run.logs import (
    NO_END,
    RedactingFilter,
    latest_log,
    list_logs,
    redact,
    redact_fields,
    render_log,
    setup_logging,
    shutdown_logging,
)


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    yield
    shutdown_logging()


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_json_line_fields(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "20261127T235000Z-3f9a.jsonl"
    log = setup_logging(path, "DEBUG", None, "INFO")
    log.info("copied", extra={"job": "dummy_success", "host": "target1", "fields": {"files": 12, "ok": True}})
    log.warning("plain")
    logging.getLogger("pcswitcher.jobs.runner").error("from a child logger", extra={"job": "j"})
    shutdown_logging()

    first, second, third = read_lines(path)
    assert first["level"] == "INFO"
    assert first["job"] == "dummy_success"
    assert first["host"] == "target1"
    assert first["message"] == "copied"
    assert first["files"] == 12
    assert first["ok"] is True
    stamp = str(first["time"])
    assert stamp.endswith("Z")
    assert len(stamp) == len("2026-11-27T23:50:01.123Z")
    assert stamp[10] == "T"
    assert second == {**second, "job": None, "host": None, "message": "plain", "level": "WARNING"}
    assert third["job"] == "j"
    assert third["level"] == "ERROR"


def test_fields_do_not_overwrite_core_keys(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    log = setup_logging(path, "DEBUG", None, "INFO")
    log.info("real", extra={"fields": {"message": "fake", "level": "x"}})
    shutdown_logging()
    (record,) = read_lines(path)
    assert record["message"] == "real"
    assert record["level"] == "INFO"
    assert record["field_message"] == "fake"


def test_exception_is_logged_and_redacted(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    log = setup_logging(path, "DEBUG", None, "INFO")
    try:
        raise RuntimeError("boom password=hunter2")
    except RuntimeError:
        log.exception("failed")
    shutdown_logging()
    (record,) = read_lines(path)
    assert "RuntimeError" in str(record["exception"])
    assert "hunter2" not in path.read_text()


def test_dirs_and_file_are_private(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "run.jsonl"
    setup_logging(path, "INFO", None, "INFO").info("x")
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "b").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_file_and_terminal_levels_are_independent(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    terminal = ListHandler()
    log = setup_logging(path, "DEBUG", terminal, "WARNING")
    log.debug("d")
    log.info("i")
    log.warning("w")
    assert [r.getMessage() for r in terminal.records] == ["w"]
    assert [r["message"] for r in read_lines(path)] == ["d", "i", "w"]

    path2 = tmp_path / "run2.jsonl"
    terminal2 = ListHandler()
    log = setup_logging(path2, "ERROR", terminal2, "DEBUG")
    log.debug("d")
    log.error("e")
    assert [r.getMessage() for r in terminal2.records] == ["d", "e"]
    assert [r["message"] for r in read_lines(path2)] == ["e"]


def test_setup_is_idempotent(tmp_path: Path) -> None:
    terminal = ListHandler()
    setup_logging(tmp_path / "one.jsonl", "INFO", terminal, "INFO")
    log = setup_logging(tmp_path / "two.jsonl", "INFO", terminal, "INFO")
    log.info("once")
    assert [r.getMessage() for r in terminal.records] == ["once"]
    assert len(log.handlers) == 2
    assert (tmp_path / "one.jsonl").read_text() == ""
    assert len(read_lines(tmp_path / "two.jsonl")) == 1
    assert sum(isinstance(f, RedactingFilter) for f in terminal.filters) == 1


def test_bad_level_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        setup_logging(tmp_path / "run.jsonl", "LOUD", None, "INFO")


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("password=hunter2 user=bob", "hunter2", "user=bob"),
        ("passwd: hunter2", "hunter2", "passwd: ***"),
        ("ansible_become_pass=s3cr3t", "s3cr3t", "ansible_become_pass=***"),
        ("GITHUB_TOKEN=ghp_abc123", "ghp_abc123", "GITHUB_TOKEN=***"),
        ("token: abc123, next: 5", "abc123", "next: 5"),
        ('{"password": "abc def", "name": "x"}', "abc def", '"name": "x"'),
        ("{'api_key': 'zzz'}", "zzz", "{'api_key': '***'}"),
        ("client_secret = topsecret", "topsecret", "client_secret = ***"),
        ("private_key: AAAAB3", "AAAAB3", "private_key: ***"),
        ("Authorization: Bearer xyz.abc", "xyz.abc", "Authorization: Bearer ***"),
        ("curl -H 'authorization: Basic dXNlcjpw' url", "dXNlcjpw", "url"),
        ("Cookie: session=abc; other=def\nnext", "abc", "\nnext"),
        ("git clone https://bob:pa55@example.com/r.git", "pa55", "https://bob:***@example.com/r.git"),
        ("opts: password=x9", "x9", "opts: password=***"),
    ],
)
def test_redact_message_text(text: str, secret: str, kept: str) -> None:
    result = redact(text)
    assert secret not in result
    assert "***" in result
    assert kept in result


def test_redact_private_key_blocks() -> None:
    text = (
        "key follows\n-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAsecret\nBBBB\n"
        "-----END OPENSSH PRIVATE KEY-----\ndone"
    )
    assert redact(text) == "key follows\n***\ndone"
    assert redact("-----BEGIN RSA PRIVATE KEY-----\nMIIEtruncated") == "***"
    public = "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----"
    assert redact(public) == public


@pytest.mark.parametrize(
    "text",
    [
        "copying photos/2024 (50%)",
        "Permission denied (publickey,password).",
        "password authentication failed for bob",
        "cannot read /etc/passwd: permission denied",
        "ssh://git@example.com/repo.git",
        "https://example.com:8443/path?x=1",
        "rsync: 12 files, 3 MB",
        "",
    ],
)
def test_normal_text_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_redact_nested_fields() -> None:
    fields = {
        "Password": "x",
        "nested": {"db": {"api_key": 1, "name": "pg"}, "items": [{"become_pass": "p"}, "token=abc"]},
        "Authorization": "Bearer q",
        "cookie_jar": ["a"],
        "count": 3,
    }
    result = redact_fields(fields)
    assert result == {
        "Password": "***",
        "nested": {"db": {"api_key": "***", "name": "pg"}, "items": [{"become_pass": "***"}, "token=***"]},
        "Authorization": "***",
        "cookie_jar": "***",
        "count": 3,
    }
    assert fields["Password"] == "x"  # noqa: S105 - the caller's dict is not changed


def test_secrets_never_reach_file_or_terminal(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    terminal = ListHandler()
    log = setup_logging(path, "DEBUG", terminal, "DEBUG")
    log.info("login with password=%s", "hunter2", extra={"fields": {"cfg": {"secret": "s3"}, "ok": "yes"}})
    log.info("Authorization: Bearer tok123")
    text = path.read_text()
    assert "hunter2" not in text
    assert '"cfg": {"secret": "***"}' in text
    assert "tok123" not in text
    assert '"ok": "yes"' in text
    assert terminal.records[0].getMessage() == "login with password=***"
    assert "tok123" not in terminal.records[1].getMessage()


@pytest.mark.timeout(30)
def test_redact_does_not_backtrack_on_big_text() -> None:
    """Linear, not catastrophic backtracking: on this text a backtracking pattern runs for hours;
    the timeout only ends such a hang (redaction speed is no test's business)."""
    big = "A" * 300_000 + " " + "a.b-c_" * 50_000 + " password"
    assert redact(big) == big


def test_list_logs_newest_first(tmp_path: Path) -> None:
    assert list_logs(tmp_path / "missing") == []
    assert latest_log(tmp_path) is None
    names = ["20261127T235000Z-aaaa", "20261128T000000Z-bbbb", "20261126T120000Z-cccc"]
    for name in names:
        (tmp_path / f"{name}.jsonl").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("x")
    result = [p.name for p in list_logs(tmp_path)]
    assert result == [
        "20261128T000000Z-bbbb.jsonl",
        "20261127T235000Z-aaaa.jsonl",
        "20261126T120000Z-cccc.jsonl",
    ]
    assert latest_log(tmp_path) == tmp_path / "20261128T000000Z-bbbb.jsonl"


def test_list_logs_by_mtime_without_run_id(tmp_path: Path) -> None:
    old, new = tmp_path / "zzz.jsonl", tmp_path / "aaa.jsonl"
    old.write_text("")
    new.write_text("")
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(new, (2_000_000, 2_000_000))
    assert list_logs(tmp_path) == [new, old]


def test_render_log_tolerates_broken_lines(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    log = setup_logging(path, "DEBUG", None, "INFO")
    log.debug("hidden detail")
    log.info("copied", extra={"job": "dummy_success", "host": "target1", "fields": {"files": 12}})
    log.error("it broke")
    shutdown_logging()
    with path.open("a") as handle:
        handle.write("not json at all\n")
        handle.write('["a list"]\n')
        handle.write('{"time": "2026-11-27T23:50:01.1')  # truncated last line

    buffer = io.StringIO()
    render_log(path, Console(file=buffer, width=200, force_terminal=False), min_level="INFO")
    out = buffer.getvalue()
    assert "hidden detail" not in out
    assert "[dummy_success@target1] copied" in out
    assert "files=12" in out
    assert "ERROR" in out
    assert "it broke" in out
    assert "not json at all" in out
    assert '["a list"]' in out
    assert '{"time": "2026-11-27T23:50:01.1' in out
    assert "Traceback" not in out
    assert "T23:50" not in out.splitlines()[0]  # times are shown as local "YYYY-MM-DD HH:MM:SS"


def test_render_log_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        render_log(tmp_path / "nope.jsonl", Console(file=io.StringIO()))


# --------------------------------------------------------------------------- `pc-switcher logs`

_END_JOBS = [
    {
        "name": "folder_sync",
        "status": "succeeded",
        "duration": 0.5007221989999948,
        "changed": 1,
        "detail": "18,935 files (937.5 MiB) sent, 11 deleted",
        "result": {"folder_sync_result": {"files_transferred": 18935, "bytes": 983050438}},
    },
    {
        "name": "dummy_fail",
        "status": "skipped",
        "duration": 0.0,
        "changed": 0,
        "detail": "disabled",
        "result": {},
    },
]


def _write_run_log(state: Path) -> Path:
    """A log like a failed sync's: long paths, an ERROR line, the end record with its jobs."""
    path = state / "pc-switcher" / "logs" / "20261127T235000Z-3f9a.jsonl"
    long_path = "/home/alice/" + "/".join(f"folder-{i:02d}" for i in range(20)) + "/file.txt"
    log = setup_logging(path, "DEBUG", None, "INFO")
    log.debug("task: Sync the folders with rsync", extra={"job": "folder_sync"})
    log.info(
        "copied %s", long_path, extra={"job": "folder_sync", "host": "target1", "fields": {"ratio": 1 / 3}}
    )
    log.error("job folder_sync failed: rsync said no", extra={"fields": {"abort_cause": "job_failed"}})
    outcome = "sync to target1 failed: job folder_sync failed: rsync said no"
    log.error(
        "finished: %s, exit code 1",
        outcome,
        extra={"fields": {"exit_code": 1, "outcome": outcome, "jobs": _END_JOBS, "log": str(path)}},
    )
    shutdown_logging()
    return path


def _cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_STATE_HOME": str(state), "COLUMNS": "80"}
    argv = [sys.executable, "-c", "from pcswitcher.cli.commands import entry; entry()", "logs", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_logs_piped_prints_plain_lines_at_any_width(tmp_path: Path) -> None:
    path = _write_run_log(tmp_path)
    result = _cli(tmp_path, "--last")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    records = [line for line in lines if not line.startswith("    ")]
    assert len(records) == 4, lines  # one line per record: never wrapped at 80 columns
    assert any(len(line) > 80 for line in records)
    long_path = "/home/alice/" + "/".join(f"folder-{i:02d}" for i in range(20)) + "/file.txt"
    assert f"[folder_sync@target1] copied {long_path}  ratio=0.333" in result.stdout
    assert "\x1b[" not in result.stdout  # no colours into a pipe
    last = records[-1]
    assert "ERROR" in last
    outcome = "sync to target1 failed: job folder_sync failed: rsync said no"
    assert last.endswith(f"finished: {outcome}, exit code 1  exit_code=1  log={path}")
    # the jobs of the end record: one readable line each, numbers rounded, no Python reprs
    jobs = [line.strip() for line in lines if line.startswith("      - ")]
    assert jobs[0].startswith("- name=folder_sync  status=succeeded  duration=0.501  changed=1")
    assert 'detail="18,935 files (937.5 MiB) sent, 11 deleted"' in jobs[0]
    assert "0.5007221989999948" not in result.stdout
    assert jobs[1] == "- name=dummy_fail  status=skipped  duration=0  changed=0  detail=disabled"
    assert "(name=" not in result.stdout


def test_logs_level_warning_shows_why_a_run_failed(tmp_path: Path) -> None:
    _write_run_log(tmp_path)
    result = _cli(tmp_path, "--last", "--level", "warning")
    assert result.returncode == 0, result.stderr
    records = [line for line in result.stdout.splitlines() if not line.startswith("    ")]
    assert [line.split()[2] for line in records] == ["ERROR", "ERROR"]
    assert "job folder_sync failed: rsync said no" in records[0]
    assert "exit code 1" in records[1]


def test_logs_json_prints_the_raw_records(tmp_path: Path) -> None:
    path = _write_run_log(tmp_path)
    with path.open("a") as handle:
        handle.write('{"time": "2026-11-27T23:50:01.1')  # a truncated last line is not a record
    result = _cli(tmp_path, "--last", "--json")
    assert result.returncode == 0, result.stderr
    raw = path.read_text().splitlines()[:-1]
    assert result.stdout.splitlines() == raw
    assert json.loads(result.stdout.splitlines()[-1])["jobs"][0]["duration"] == 0.5007221989999948
    warnings = _cli(tmp_path, "--last", "--json", "--level", "WARNING")
    assert [json.loads(line)["level"] for line in warnings.stdout.splitlines()] == ["ERROR", "ERROR"]
    listing = _cli(tmp_path, "--json")
    assert [json.loads(line)["run_id"] for line in listing.stdout.splitlines()] == [path.stem]


def test_a_log_without_its_end_says_so(tmp_path: Path) -> None:
    path = tmp_path / "pc-switcher" / "logs" / "20261127T235000Z-dead.jsonl"
    log = setup_logging(path, "DEBUG", None, "INFO")
    log.info("pc-switcher run 20261127T235000Z-dead: a -> b")
    log.warning("Sync interrupted by user")  # then SIGKILL: no end record
    shutdown_logging()
    result = _cli(tmp_path, "--last")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == NO_END
    assert NO_END not in _cli(tmp_path, "--last", "--json").stdout  # --json: the records only
    # a log with its end record: nothing added, whatever --level hides
    _write_run_log(tmp_path)
    for level in ("DEBUG", "CRITICAL"):
        assert NO_END not in _cli(tmp_path, "--last", "--level", level).stdout
