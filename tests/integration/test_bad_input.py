"""Bad input: every malformed config, inventory or argument ends as ONE line ``error: …`` on stderr
that names the problem (and file:line:col for config errors) and the fix, with the documented exit
code, no traceback, and nothing started on the target.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from tests.integration.helpers import PC_SWITCHER, STATE, assert_one_error_line, leftovers, sandbox_config
from tests.sandbox import Sandbox

DIR = "/root/bad"
CONFIG = f"{DIR}/config.yml"


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        sandbox.add("source")
        sandbox.add("target")
        good = yaml.safe_dump(sandbox_config({"dummy_success": True}), sort_keys=False)
        _write(sandbox, CONFIG, good)
        yield sandbox


def _write(sb: Sandbox, path: str, text: str) -> str:
    host = sb["source"].path(path)
    host.parent.mkdir(parents=True, exist_ok=True)
    host.write_text(text)
    return path


def _inventory(sb: Sandbox, **target_vars: Any) -> str:
    """The sandbox inventory with the target's vars changed (None removes one)."""
    data = yaml.safe_load(sb.inventory_path.read_text())
    host = data["all"]["hosts"]["target"]
    for key, value in target_vars.items():
        if value is None:
            host.pop(key, None)
        else:
            host[key] = value
    return yaml.safe_dump(data, sort_keys=False)


@dataclass
class Case:
    id: str
    expect: list[str]  # substrings of the error line (a regex when it starts with ^)
    config: str | None = None  # text of the config file (default: a good one)
    inventory: Callable[[Sandbox], str] | None = None  # text of the inventory (default: the sandbox's)
    inventory_name: str = "inventory.yml"
    args: list[str] = field(default_factory=list)
    argv: list[str] | None = None  # the whole argv after pc-switcher (replaces the sync command)
    code: int = 2


GOOD_JOBS = "jobs:\n  dummy_success: true\n"


def _wrong_host_key(sb: Sandbox) -> str:
    """known_hosts that holds the *source's* key for the target's address: a changed host key."""
    target = sb["target"]
    key_type, key = (sb.dir / "source" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    _write(sb, f"{DIR}/known_hosts", f"[{target.address}]:{target.port} {key_type} {key}\n")
    return _inventory(sb, ansible_ssh_common_args=f"-o UserKnownHostsFile={DIR}/known_hosts")


CASES = [
    # ---- config
    Case(
        "config-missing", [f"^error: {DIR}/nope.yml:1:1: ", "does not exist", "pc-switcher init"], config=None
    ),
    Case(
        "config-invalid-yaml",
        [f"^error: {CONFIG}:3:2: ", "invalid YAML", "fix the YAML"],
        config=GOOD_JOBS + " bad: [\n",
    ),
    Case(
        "config-unknown-top-level-key",
        [f"^error: {CONFIG}:3:1: ", "unknown top-level key 'foo'", "valid keys are"],
        config=GOOD_JOBS + "foo: 1\n",
    ),
    Case(
        "config-unknown-job",
        [f"^error: {CONFIG}:2:3: ", "unknown job 'dummy_succes'", "did you mean 'dummy_success'"],
        config="jobs:\n  dummy_succes: true\n",
    ),
    Case(
        "config-wrong-type",
        [
            f"^error: {CONFIG}:4:20: ",
            "dummy_success.source_duration",
            "expected an integer",
            "write an integer",
        ],
        config=GOOD_JOBS + "dummy_success:\n  source_duration: five\n",
    ),
    Case(
        "config-job-section-not-a-mapping",
        [f"^error: {CONFIG}:3:", "dummy_success"],
        config=GOOD_JOBS + "dummy_success: [1, 2]\n",
    ),
    Case(
        "config-unknown-job-option",
        [f"^error: {CONFIG}:4:3: ", "unknown option 'speed'", "source_duration, target_duration"],
        config=GOOD_JOBS + "dummy_success:\n  speed: 3\n",
    ),
    Case(
        "config-bare-threshold",
        [f"^error: {CONFIG}:4:22: ", "disk.preflight_minimum", "bare number", "'20%'"],
        config=GOOD_JOBS + "disk:\n  preflight_minimum: 20\n",
    ),
    Case(
        "config-bad-threshold-unit",
        [f"^error: {CONFIG}:4:20: ", "disk.runtime_minimum", "unit"],
        config=GOOD_JOBS + "disk:\n  runtime_minimum: 5 parsecs\n",
    ),
    Case(
        "config-duplicate-key",
        [f"^error: {CONFIG}:3:3: ", "duplicate key 'dummy_success'", "line 2", "remove one"],
        config=GOOD_JOBS + "  dummy_success: false\n",
    ),
    Case(
        "config-bad-log-level",
        [f"^error: {CONFIG}:4:", "log_level.file", "LOUD"],
        config=GOOD_JOBS + "log_level:\n  file: LOUD\n",
    ),
    Case(
        "config-no-job-enabled",
        ["no job is enabled", "enable at least one job"],
        config="jobs:\n  dummy_success: false\n",
    ),
    # ---- inventory
    Case(
        "inventory-missing",
        [f"inventory {DIR}/none.yml does not exist", "pass -i/--inventory"],
        args=["-i", f"{DIR}/none.yml"],
    ),
    Case(
        "inventory-broken-ini",
        [f"^error: {DIR}/inventory.ini", "fix the inventory"],
        inventory=lambda sb: "[all\ntarget ansible_host=127.0.0.1\n",
        inventory_name="inventory.ini",
    ),
    Case(
        "inventory-broken-yaml",
        [f"^error: {DIR}/inventory.yml", "YAML", "fix the inventory"],
        inventory=lambda sb: "all:\n  hosts:\n    target: {ansible_host: [\n",
    ),
    Case(
        "inventory-unknown-target",
        ["unknown target 'nosuch'", "known hosts: source, target", "add nosuch to the inventory"],
        argv=["sync", "nosuch"],
    ),
    Case(
        "inventory-bad-port",
        ["host target", "ansible_port 'twentytwo' is not a number", "set ansible_port"],
        inventory=lambda sb: _inventory(sb, ansible_port="twentytwo"),
    ),
    Case(
        "inventory-local-connection",
        ["target target uses ansible_connection=local", "needs ssh", "remove ansible_connection"],
        inventory=lambda sb: _inventory(sb, ansible_connection="local"),
    ),
    # ---- arguments
    Case("cli-unknown-option", ["No such option '--bogus'", "pc-switcher sync --help"], args=["--bogus"]),
    Case("cli-only-empty", ["--only", "empty job name", "--only JOB[,JOB]"], args=["--only", ""]),
    Case("cli-only-comma", ["--only", "empty job name"], args=["--only", "dummy_success,"]),
    Case("cli-only-unknown", ["--only: unknown job 'nope'", "known jobs:"], args=["--only", "nope"]),
    Case("cli-missing-target", ["Missing argument 'TARGET'", "pc-switcher sync --help"], argv=["sync"]),
    Case("cli-unknown-command", ["No such command 'synk'", "--help"], argv=["synk", "target"]),
    Case(
        "cli-bad-log-level", ["--level 'LOUD' is not a level", "use DEBUG"], argv=["logs", "--level", "LOUD"]
    ),
    # ---- the target cannot be reached safely (exit 1)
    Case(
        "target-unreachable",
        ["target", "Connection refused", "check that sshd runs on the target"],
        inventory=lambda sb: _inventory(sb, ansible_port=2299),
        code=1,
    ),
    Case(
        "target-host-key-mismatch",
        ["target", "(?i)host key", "known_hosts"],
        inventory=_wrong_host_key,
        code=1,
    ),
]


def _run(sb: Sandbox, case: Case) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the case; returns the result and the expected parts of the error line."""
    expect = list(case.expect)
    config = CONFIG
    if case.id == "config-missing":
        config = f"{DIR}/nope.yml"
    elif case.config is not None:
        config = _write(sb, f"{DIR}/case.yml", case.config)
        expect = [e.replace(CONFIG, config) for e in expect]
    inventory = str(sb.inventory_path)
    if case.inventory is not None:
        inventory = _write(sb, f"{DIR}/{case.inventory_name}", case.inventory(sb))
    if case.argv is not None and case.argv[:1] != ["sync"]:
        argv = [PC_SWITCHER, *case.argv]
    else:
        head = case.argv or ["sync", "target"]
        argv = [PC_SWITCHER, *head, "-c", config, "-i", inventory, *case.args]
    return sb["source"].run(argv, timeout=90), expect


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line(sb: Sandbox, case: Case) -> None:
    target = sb["target"]
    before = sorted(p.name for p in target.path("/tmp").glob("pcswitcher-*"))
    runs = sb["source"].path(f"{STATE}/runs")
    runs_before = sorted(p.name for p in runs.glob("*"))
    result, expect = _run(sb, case)
    line = assert_one_error_line(result, case.code)
    assert " — " in line, f"no fix named: {line}"
    for expected in expect:
        if expected.startswith(("^", "(?i)")):
            assert re.search(expected, line), (expected, line)
        else:
            assert expected in line, (expected, line)
    # nothing started on the target (nor left on the source)
    assert sorted(p.name for p in target.path("/tmp").glob("pcswitcher-*")) == before
    assert leftovers(sb) == {}
    if case.code == 2:  # refused before the run: the first job's held playbook left no run state
        assert sorted(p.name for p in runs.glob("*")) == runs_before
    if case.code == 1:
        assert "task: " not in result.stdout
        assert "Step 1/" not in result.stdout, "the run went on after the connection failed"


def test_there_are_enough_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 15
