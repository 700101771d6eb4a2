"""The start-up shortcuts of `pc-switcher`: they give the same results as the slow paths they skip.

The jobs' YAML files are parsed by libyaml; the CLI imports rich, jsonschema and yaml only in the
commands that use them, and plain output never loads the live display.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pcswitcher.config.init_text import default_config_text
from pcswitcher.jobs.discovery import JobSpec, discover_jobs, load_yaml_text

PROJECT = Path(__file__).parent / "fixtures" / "project"
REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def jobs() -> dict[str, JobSpec]:
    return discover_jobs(PROJECT)


# --- job files: libyaml (as Ansible reads them), errors from PyYAML --------------------------------


@pytest.mark.parametrize("text", ["a: 1\nb: [x, y]\n", "a: {b: 1\n", "a:\n\tb: 1\n", "", "x\x07\n"])
def test_job_yaml_errors_are_pyyamls(text: str) -> None:
    def outcome(load: Any) -> object:
        try:
            return load(text)
        except yaml.YAMLError as exc:
            return str(exc)

    assert outcome(load_yaml_text) == outcome(yaml.safe_load)


def test_the_jobs_files_read_the_same_with_libyaml_and_pyyaml() -> None:
    files = sorted([*REPO.glob("roles/*/meta/*.yml"), *PROJECT.glob("roles/*/meta/*.yml")])
    assert files
    for file in files:
        text = file.read_text(encoding="utf-8")
        assert load_yaml_text(text) == yaml.safe_load(text), file


# --- what `pc-switcher sync` imports before its first subprocess ---------------------------------

PROBE = """
import sys
from pathlib import Path
import pcswitcher.cli.commands
heavy = [m for m in sys.modules if m.split(".")[0] in {"rich", "jsonschema", "yaml"}]
assert not heavy, f"importing the CLI imports {heavy}"
import pcswitcher.run.driver
from pcswitcher.config.settings import load_config
from pcswitcher.jobs.discovery import discover_jobs
from pcswitcher.run.ui import Ui
from rich.console import Console
import io
config = load_config(Path(sys.argv[1]), discover_jobs(Path(sys.argv[2])))
assert config.jobs
ui = Ui(Console(file=io.StringIO()), interactive=False)
ui.start("t", "r", ["demo"], False)
ui.step(1, 1, "demo", "sync")
ui.progress("demo", None, 50.0, "item")
ui.job_finished("demo", "succeeded", 1.0)
ui.summary([("demo", "succeeded", 1.0, "")], "done")
heavy = sorted(m for m in ("rich.progress", "rich.live", "rich.table") if m in sys.modules)
assert not heavy, heavy
"""


def test_the_cli_imports_little_and_plain_output_needs_no_live_display(
    tmp_path: Path, jobs: dict[str, JobSpec]
) -> None:
    config = tmp_path / "config.yml"
    config.write_text(default_config_text(jobs))
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(config), str(PROJECT)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- the console script's quick exit (cli.entry) ---------------------------------------------------

ENTRY = """
import atexit, sys
atexit.register(lambda: print("exit handler ran", file=sys.stderr))
sys.argv[0] = "pc-switcher"
from pcswitcher.cli.commands import entry
entry()
"""


@pytest.mark.parametrize(
    ("args", "code", "stdout", "stderr"),
    [
        (["--version"], 0, "pc-switcher, version", ""),
        (["sync"], 2, "", "error: Missing argument 'TARGET'"),
        (
            ["logs", "--level", "LOUD"],
            2,
            "",
            "error: Invalid value for '--level': 'LOUD' is not one of DEBUG,",
        ),
    ],
)
def test_the_console_script_keeps_exit_codes_output_and_exit_handlers(
    args: list[str], code: int, stdout: str, stderr: str
) -> None:
    """entry() ends with os._exit: stdout and stderr still arrive in full through pipes, the exit
    handlers still run (Ansible removes its temp dir in one), the exit code is main()'s."""
    result = subprocess.run(
        [sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == code, result.stderr
    assert stdout in result.stdout
    assert stderr in result.stderr
    assert result.stderr.rstrip().endswith("exit handler ran"), result.stderr
