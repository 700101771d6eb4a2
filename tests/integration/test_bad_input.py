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

from tests.integration.helpers import (
    PC_SWITCHER,
    STATE,
    assert_one_error_line,
    leftovers,
    log_records,
    sandbox_config,
)
from tests.integration.outcome import assert_log_ends
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
    argv: list[str] | None = None  # the whole argv after pc-switcher (replaces the sync command);
    # "{inventory}" in it is replaced by the inventory's path
    config_path: str | None = None  # the -c path given (instead of the written config)
    code: int = 2


GOOD_JOBS = "jobs:\n  dummy_success: true\n"


def _laughs(levels: int = 9) -> str:
    """A "billion laughs": 10**levels values once the aliases are expanded, inside a list."""
    lines = ["lol:", "  - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _wrong_host_key(sb: Sandbox) -> str:
    """known_hosts that holds the *source's* key for the target's address: a changed host key."""
    target = sb["target"]
    key_type, key = (sb.dir / "source" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    _write(sb, f"{DIR}/known_hosts", f"[{target.address}]:{target.port} {key_type} {key}\n")
    return _inventory(sb, ansible_ssh_common_args=f"-o UserKnownHostsFile={DIR}/known_hosts")


CASES = [
    # ---- config
    Case(
        "config-missing",
        [f"^error: {DIR}/nope.yml:1:1: ", "does not exist", f"pc-switcher init -c {DIR}/nope.yml`"],
        config=None,
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
    Case(
        "config-link-timeout-nan",
        [f"^error: {CONFIG}:3:15: ", "link_timeout: expected a number, got .nan", "write a number"],
        config=GOOD_JOBS + "link_timeout: .nan\n",
    ),
    Case(
        "config-interval-inf",
        [f"^error: {CONFIG}:4:13: ", "disk.interval: expected a number, got .inf"],
        config=GOOD_JOBS + "disk:\n  interval: .inf\n",
    ),
    Case(
        "config-job-option-minus-inf",
        [f"^error: {CONFIG}:4:20: ", "dummy_success.source_duration", "got -.inf"],
        config=GOOD_JOBS + "dummy_success:\n  source_duration: -.inf\n",
    ),
    Case(
        "config-history-path-newline",
        [f"^error: {CONFIG}:4:9: ", "history.path: '/root/h\\nx.json' contains U+000A", "fix history.path"],
        config=GOOD_JOBS + 'history:\n  path: "/root/h\\nx.json"\n',
    ),
    Case(
        "config-snapshot-location-block-scalar",
        [f"^error: {CONFIG}:5:13: ", "snapshots.location.target: '/snap\\n' contains U+000A"],
        config=GOOD_JOBS + "snapshots:\n  location:\n    target: |\n      /snap\n",
    ),
    Case(
        "config-subvolume-tab",
        [f"^error: {CONFIG}:5:14: ", "snapshots.subvolumes.source[0]", "U+0009"],
        config=GOOD_JOBS + 'snapshots:\n  subvolumes:\n    source: ["/ho\\tme"]\n',
    ),
    Case(
        "config-subvolume-dotdot",
        [f"^error: {CONFIG}:5:21: ", "subvolumes.target[1]", "not a normalised path", "write '/etc'"],
        config=GOOD_JOBS + "snapshots:\n  subvolumes:\n    target: [/home, /home/../etc]\n",
    ),
    Case(
        "config-disk-path-relative",
        [f"^error: {CONFIG}:5:14: ", "disk.paths.source[0]", "'$(reboot)' is not an absolute path"],
        config=GOOD_JOBS + "disk:\n  paths:\n    source: ['$(reboot)']\n",
    ),
    Case(
        "config-alias-bomb",
        [f"^error: {CONFIG}:1:1: ", "more than 20000 values once its YAML aliases are expanded"],
        config=GOOD_JOBS + _laughs(),
    ),
    Case(
        "config-recursive-alias",
        [f"^error: {CONFIG}:3:15: ", "a YAML alias refers to a list or mapping that contains it"],
        config=GOOD_JOBS + "link_timeout: &x [*x]\n",
    ),
    Case(
        "config-dev-zero",
        ["^error: /dev/zero:1:1: the config path is not a regular file", "give the path of a config file"],
        config_path="/dev/zero",
    ),
    Case(
        "config-dev-stdin",
        ["^error: /dev/stdin:1:1: the config path is not a regular file"],
        config_path="/dev/stdin",
    ),
    Case("config-directory", ["is a directory", "--help"], config_path="/root"),
    # ---- inventory
    Case(
        "inventory-missing",
        [
            f"inventory {DIR}/none.yml does not exist",
            f"pc-switcher init -i {DIR}/none.yml`",
            "pass -i/--inventory",
        ],
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
    *[
        Case(
            f"inventory-port-{port}",
            ["host target", f"ansible_port {port} is not a TCP port (1-65535)", "set ansible_port"],
            inventory=lambda sb, port=port: _inventory(sb, ansible_port=port),  # type: ignore[misc]
        )
        for port in (70000, 0, -1)
    ],
    Case(
        "inventory-port-float",
        ["host target", "ansible_port 22.5 is not a number"],
        inventory=lambda sb: _inventory(sb, ansible_port=22.5),
    ),
    Case(
        "inventory-driver-var",
        ["host target: pcswitcher_environment is not a pc-switcher host var", "remove it"],
        inventory=lambda sb: _inventory(sb, pcswitcher_environment={"PCSWITCHER_RUN_ID": ""}),
    ),
    Case(
        "inventory-host-var-typo",
        ["pcswitcher_histroy_path is not a pc-switcher host var", "did you mean pcswitcher_history_path?"],
        inventory=lambda sb: _inventory(sb, pcswitcher_histroy_path="/root/h.json"),
    ),
    Case(
        "inventory-history-path-relative",
        ["pcswitcher_history_path: 'h.json' is not an absolute path", "fix pcswitcher_history_path"],
        inventory=lambda sb: _inventory(sb, pcswitcher_history_path="h.json"),
    ),
    Case(
        "inventory-snapshot-location-newline",
        ["pcswitcher_snapshots_location: '/snap\\nx' contains U+000A"],
        inventory=lambda sb: _inventory(sb, pcswitcher_snapshots_location="/snap\nx"),
    ),
    Case(
        "inventory-subvolumes-not-a-list",
        ["pcswitcher_snapshots_subvolumes: expected a non-empty list of absolute paths, got '/home'"],
        inventory=lambda sb: _inventory(sb, pcswitcher_snapshots_subvolumes="/home"),
    ),
    Case(
        "inventory-subvolumes-dotdot",
        ["pcswitcher_snapshots_subvolumes: '/home/../etc' is not a normalised path"],
        inventory=lambda sb: _inventory(sb, pcswitcher_snapshots_subvolumes=["/home", "/home/../etc"]),
    ),
    Case(
        "inventory-dev-zero",
        ["inventory /dev/zero is not a regular file", "-i/--inventory"],
        args=["-i", "/dev/zero"],
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
        "cli-bad-log-level",
        ["'LOUD' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL", "pc-switcher logs --help"],
        argv=["logs", "--level", "LOUD"],
    ),
    *[
        Case(
            f"cli-rollback-session-{name}",
            [f"--session {session!r} is not a session id", "snapshots list"],
            argv=["rollback", "target", "--session", session, "-i", "{inventory}", "-c", CONFIG, "--yes"],
        )
        for name, session in (("dotdot", "../x"), ("newline", "x\n"), ("dash", "-rf"), ("slash", "a/b"))
    ],
    Case(
        "cli-cleanup-run-malformed",
        ["--run '../../etc' is not a run id", "pc-switcher logs"],
        argv=["cleanup", "target", "--run", "../../etc", "-i", "{inventory}"],
    ),
    Case(
        "cli-cleanup-run-unknown",
        ["--run 20990101T000000Z-dead: no such run on this machine", "pc-switcher logs"],
        argv=["cleanup", "target", "--run", "20990101T000000Z-dead", "-i", "{inventory}"],
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
    elif case.config_path is not None:
        config = case.config_path
    elif case.config is not None:
        config = _write(sb, f"{DIR}/case.yml", case.config)
        expect = [e.replace(CONFIG, config) for e in expect]
    inventory = str(sb.inventory_path)
    if case.inventory is not None:
        inventory = _write(sb, f"{DIR}/{case.inventory_name}", case.inventory(sb))
    if case.argv is not None and case.argv[:1] != ["sync"]:
        argv = [PC_SWITCHER, *(part.replace("{inventory}", inventory) for part in case.argv)]
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
        # the run's log ends with the same reason and the exit code
        end = assert_log_ends(log_records(sb["source"]), 1, line.removeprefix("error: "))
        assert end["outcome"] == f"sync to target failed: {line.removeprefix('error: ').split(' — ')[0]}"


def test_there_are_enough_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 15
