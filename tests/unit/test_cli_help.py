"""The command line a newcomer meets first: bare ``pc-switcher``, the help at 80 columns, the shell
completion of ``--level`` and ``--only``, and ``-c``/``-i`` for a file that does not exist yet.

Every test runs the installed console script (the real click, the real job discovery) with its own
XDG_CONFIG_HOME and XDG_STATE_HOME under tmp_path.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from pcswitcher.jobs.discovery import discover_jobs
from pcswitcher.paths import project_root

PC_SWITCHER = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "pc-switcher")


def run(
    home: Path, *args: str, columns: int = 80, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(home / "config home"),
        "XDG_STATE_HOME": str(home / "state"),
        "COLUMNS": str(columns),
        **(extra or {}),
    }
    return subprocess.run(
        [PC_SWITCHER, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def complete(home: Path, words: str) -> list[str]:
    """What bash completion offers for the last word of ``words`` (click's protocol)."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    result = run(
        home, extra={"_PC_SWITCHER_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    )
    assert result.returncode == 0, result.stderr
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line]


COMMANDS = [
    [],
    ["sync"],
    ["init"],
    ["logs"],
    ["cleanup"],
    ["config"],
    ["config", "check"],
    ["config", "reference"],
    ["snapshots"],
    ["snapshots", "list"],
    ["snapshots", "cleanup"],
    ["rollback"],
    ["completion"],
]


@pytest.mark.parametrize("group", [[], ["config"], ["snapshots"]])
def test_a_bare_group_prints_its_help(tmp_path: Path, group: list[str]) -> None:
    result = run(tmp_path, *group)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"Usage: pc-switcher {' '.join(group)}".rstrip() + " [OPTIONS] COMMAND")
    assert "Commands:" in result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c) or "top")
def test_help_fits_80_columns_and_no_summary_is_cut(tmp_path: Path, command: list[str]) -> None:
    result = run(tmp_path, *command, "--help", extra={"XDG_CONFIG_HOME": "/c"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    if "Commands:" in lines:
        summaries = lines[lines.index("Commands:") + 1 :]
        assert summaries
        for line in summaries:
            assert re.fullmatch(r"  [a-z]+ +\S.*[.)]", line), line  # one line, a whole sentence
            assert "..." not in line, line


def test_defaults_show_the_real_paths_whole(tmp_path: Path) -> None:
    """XDG_CONFIG_HOME (here with a space) moves the defaults; a path is never split across lines."""
    for command in (["sync"], ["init"], ["config", "check"], ["snapshots", "list"], ["rollback"]):
        text = run(tmp_path, *command, "--help").stdout
        for name in ("config.yml", "inventory.yml"):
            if command == ["config", "check"] and name == "inventory.yml":
                continue
            path = f"{tmp_path}/config home/pc-switcher/{name}"
            assert re.search(rf"\[default:\s+{re.escape(path)}\]", text), (command, text)
            assert any(f"[default: {path}]" in line for line in text.splitlines()), (command, text)
    home = run(tmp_path, "sync", "--help", extra={"XDG_CONFIG_HOME": ""}).stdout
    assert f"{Path.home()}/.config/pc-switcher/config.yml" in home


def test_level_lists_its_choices_and_completes(tmp_path: Path) -> None:
    text = run(tmp_path, "logs", "--help").stdout
    assert "DEBUG, INFO, WARNING, ERROR, CRITICAL" in text
    assert complete(tmp_path, "pc-switcher logs --level ") == [
        "DEBUG",
        "INFO",
        "WARNING",
        "ERROR",
        "CRITICAL",
    ]
    assert complete(tmp_path, "pc-switcher logs --level w") == ["WARNING"]
    assert complete(tmp_path, "pc-switcher logs --level x") == []
    bad = run(tmp_path, "logs", "--level", "LOUD")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "error: Invalid value for '--level': 'LOUD' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL "
        "— see `pc-switcher logs --help`"
    ]


def test_only_completes_the_discovered_jobs(tmp_path: Path) -> None:
    jobs = list(discover_jobs(project_root()))
    assert len(jobs) >= 2
    assert complete(tmp_path, "pc-switcher sync laptop --only ") == jobs
    first, second = jobs[0], jobs[1]
    assert complete(tmp_path, f"pc-switcher sync laptop --only {second[:3]}") == [
        j for j in jobs if j.startswith(second[:3])
    ]
    # after a comma: the other jobs, each with the names typed before it
    assert complete(tmp_path, f"pc-switcher sync laptop --only {first},") == [
        f"{first},{j}" for j in jobs if j != first
    ]
    assert complete(tmp_path, "pc-switcher sync laptop --only nope") == []


def test_a_missing_config_names_the_init_command_for_that_path(tmp_path: Path) -> None:
    config = tmp_path / "my dir" / "it's.yml"
    result = run(tmp_path, "config", "check", "-c", str(config))
    assert result.returncode == 2
    quoted = "'" + str(config).replace("'", "'\"'\"'") + "'"
    assert result.stderr.splitlines() == [
        f"error: {config}:1:1: the config file does not exist — "
        f"run `pc-switcher init -c {quoted}` to write a default config there"
    ]
    assert not config.parent.exists()
    # the hint, run as printed by a shell, makes the file, and only that one
    command = re.search(r"`(pc-switcher init [^`]+)`", result.stderr)
    assert command is not None
    made = subprocess.run(
        ["/bin/sh", "-c", command.group(1).replace("pc-switcher", PC_SWITCHER, 1)],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_STATE_HOME": str(tmp_path / "st")},
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in config.parent.iterdir()) == ["it's.yml"]
    assert not (tmp_path / "cfg").exists()
    assert not (tmp_path / "st").exists()
    checked = run(tmp_path, "config", "check", "-c", str(config))
    assert checked.returncode == 0, checked.stderr


def test_config_check_of_a_valid_config_names_the_jobs_it_would_run(tmp_path: Path) -> None:
    config = tmp_path / "config home" / "pc-switcher" / "config.yml"
    assert run(tmp_path, "init").returncode == 0
    result = run(tmp_path, "config", "check")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    enabled = [name for name, spec in discover_jobs(project_root()).items() if spec.default_enabled]
    assert enabled, "init enables the default jobs"
    line = result.stdout.strip()
    assert line.startswith(f"{config}: valid; jobs enabled in order: "), line
    assert sorted(line.rsplit(": ", 1)[1].split(", ")) == sorted(enabled), line


def test_init_writes_the_files_named_by_c_and_i(tmp_path: Path) -> None:
    config, inventory = tmp_path / "a" / "c.yml", tmp_path / "b" / "i.yml"
    result = run(tmp_path, "init", "-c", str(config), "-i", str(inventory))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "next: add your target to the inventory, then "
        f"`pc-switcher sync TARGET -c {config} -i {inventory} --dry-run`"
    )
    assert config.read_text().startswith("# pc-switcher configuration")
    assert inventory.read_text().startswith("# pc-switcher inventory")
    assert not (tmp_path / "config home").exists()
    only_inventory = tmp_path / "i2.yml"
    assert run(tmp_path, "init", "-i", str(only_inventory)).returncode == 0
    assert only_inventory.is_file()
    assert not (tmp_path / "config home").exists()
    same = run(tmp_path, "init", "-c", str(tmp_path / "x"), "-i", str(tmp_path / "." / "x"))
    assert same.returncode == 2
    assert "-c and -i both name" in same.stderr
    assert not (tmp_path / "x").exists()
    missing_inventory = run(tmp_path, "sync", "laptop", "-c", str(config), "-i", str(tmp_path / "none.yml"))
    assert missing_inventory.returncode == 2
    assert f"run `pc-switcher init -i {tmp_path}/none.yml` to write an example inventory there" in (
        missing_inventory.stderr
    )


def test_config_check_prints_every_problem_on_its_own_line(tmp_path: Path) -> None:
    from tests.unit.test_config import FIVE_PROBLEMS

    config = tmp_path / "config.yml"
    config.write_text(FIVE_PROBLEMS)
    result = run(tmp_path, "config", "check", "-c", str(config), columns=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    starts = [
        "2:16: jobs.folder_sync: expected true or false (run the job or not), got 'maybe' — write ",
        "4:13: log_level.terminal: 'loud' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL — use one of",
        "5:15: link_timeout: must be greater than 0, got 0 — fix link_timeout",
        "7:22: disk.preflight_minimum: a bare number (10) is ambiguous: ",
        "11:15: folder_sync.folders[0].target: target folder /etc is outside the places ",
        "12:1: unknown top-level key 'bogus' — valid keys are ",
    ]
    assert len(lines) == len(starts), lines
    for line, start in zip(lines, starts, strict=True):
        assert line.startswith(f"error: {config}:{start}"), line
        assert " — " in line, line  # each with its fix
    # sync keeps its one line: the first problem and where to see them all
    sync = run(tmp_path, "sync", "laptop", "-c", str(config))
    assert sync.returncode == 2
    assert sync.stderr.splitlines() == [
        f"error: {config}:2:16: jobs.folder_sync: expected true or false (run the job or not), got 'maybe' "
        "(+5 more) — write `folder_sync: true` to run the job or `folder_sync: false` to skip it; "
        f"`pc-switcher config check -c {config}` lists all 6"
    ]


@pytest.mark.parametrize(
    "name",
    [
        "a\nb.yml",
        "it's $(touch x) `y`.yml",
        "-dash.yml",
        "tab\there.yml",
        "back\\slash\x1b.yml",
        "ü\u2028.yml",
    ],
)
def test_a_hostile_config_name_gives_one_line_and_a_hint_that_works(tmp_path: Path, name: str) -> None:
    config = tmp_path / "d" / name
    result = run(tmp_path, "config", "check", "-c", str(config))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    command = re.search(r"`(pc-switcher init -c .+)` to write", lines[0])
    assert command is not None, lines
    made = subprocess.run(
        ["/bin/bash", "-c", command.group(1).replace("pc-switcher", PC_SWITCHER, 1)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_STATE_HOME": str(tmp_path / "st")},
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert os.listdir(tmp_path / "d") == [name]  # that file, and nothing the name could run
    assert os.listdir(tmp_path) == ["d"]  # no config dir, no state dir


def test_read_only_commands_create_no_state_dir(tmp_path: Path) -> None:
    """A fresh XDG_STATE_HOME stays empty: nothing is created by a command that only reads (the
    listing of snapshots runs its playbook on this machine, its files in a temp dir)."""
    config = tmp_path / "config.yml"
    config.write_text(f"jobs: {{}}\nsnapshots:\n  location:\n    source: {tmp_path}/snaps\n")
    state = tmp_path / "state"
    for args, code in [
        ([], 0),
        (["--help"], 0),
        (["--version"], 0),
        (["completion", "zsh"], 0),
        (["logs"], 0),
        (["logs", "--last", "--level", "warning"], 2),
        (["config", "check", "-c", str(config)], 0),
        (["config", "check"], 2),
        (["config", "reference"], 0),
        (["snapshots", "list", "-c", str(config)], 0),
    ]:
        result = run(tmp_path, *args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert not state.exists(), (args, sorted(map(str, state.rglob("*"))))
    assert not (tmp_path / "snaps").exists()
