"""Hostile config files: every one is refused with one line ``<file>:<line>:<col>: ...`` and exit 2,
before anything expands, blocks or reads more than a config's worth of bytes (pcswitcher.config.settings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pcswitcher.config.file import MAX_CONFIG_BYTES, MAX_CONFIG_NODES
from pcswitcher.config.formats import path_problem
from pcswitcher.config.settings import load_config
from pcswitcher.errors import ConfigError, ExitCode
from pcswitcher.jobs.discovery import JobSpec, discover_jobs

PROJECT = Path(__file__).parent / "fixtures" / "project"
GOOD = "jobs:\n  demo: true\n"


@pytest.fixture(scope="module")
def jobs() -> dict[str, JobSpec]:
    return discover_jobs(PROJECT)


def refused(path: Path, jobs: dict[str, JobSpec]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, jobs)
    error = info.value
    assert "\n" not in error.message
    assert "\n" not in (error.hint or "")
    assert error.message.startswith(f"{path}:")
    assert error.hint
    assert error.exit_code == ExitCode.USAGE
    return error


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


# --- paths of the global config ----------------------------------------------------------------

# Every path setting of the global config, as YAML that puts VALUE there (a JSON string: any escape).
PATH_SETTINGS = {
    "history.path": "history:\n  path: {v}\n",
    "snapshots.location.source": "snapshots:\n  location:\n    source: {v}\n",
    "snapshots.location.target": "snapshots:\n  location:\n    target: {v}\n",
    "snapshots.subvolumes.source[0]": "snapshots:\n  subvolumes:\n    source: [{v}]\n",
    "snapshots.subvolumes.target[1]": "snapshots:\n  subvolumes:\n    target: [/home, {v}]\n",
    "disk.paths.source[0]": "disk:\n  paths:\n    source: [{v}]\n",
    "disk.paths.target[0]": "disk:\n  paths:\n    target: [{v}]\n",
}
CONTROL = [
    '"/home/fz/ke\\nep"',
    '"/root/h\\tx"',
    '"/root/x\\r"',
    '"/a\\u007fb"',
    '"/a\\u0085b"',
    '"/a\\u2028b"',
]
CONTROL += ['"/a\\u200bb"', '"/a\\u0000b"', '"/a\\eb"']
NOT_NORMAL = ["/home/../etc", "/home/./x", "//home", "/home//x", "/home/..", "/home/x//"]
NOT_ABSOLUTE = ["home", '"~/x"', '"$(reboot)"', '"-rf"', '""', "./x"]


@pytest.mark.parametrize("setting", PATH_SETTINGS)
@pytest.mark.parametrize("value", CONTROL + NOT_NORMAL + NOT_ABSOLUTE)
def test_bad_global_path_is_refused(
    tmp_path: Path, jobs: dict[str, JobSpec], setting: str, value: str
) -> None:
    path = write(tmp_path, GOOD + PATH_SETTINGS[setting].format(v=value))
    error = refused(path, jobs)
    assert f": {setting}: " in error.message
    assert any(word in error.message for word in ("control or invisible", "normalised", "not an absolute"))


def test_a_block_scalar_s_trailing_newline_is_refused(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    path = write(tmp_path, GOOD + "history:\n  path: |\n    /root/history.json\n")
    error = refused(path, jobs)
    assert error.message.endswith(
        "history.path: '/root/history.json\\n' contains U+000A, a control or "
        "invisible character (a path is one line of printable characters)"
    )
    assert error.message.startswith(f"{path}:4:9:")


@pytest.mark.parametrize("value", ["/", "/home", "/home/", "/srv/a b", "/home/fz/été", "/home/-x", "/x/'q'"])
def test_good_global_paths_pass(tmp_path: Path, jobs: dict[str, JobSpec], value: str) -> None:
    assert path_problem(value) is None
    config = load_config(write(tmp_path, GOOD + f"history:\n  path: {value!r}\n"), jobs)
    assert config.history.path == value


def test_path_problem_names_the_normal_form() -> None:
    assert "write '/etc'" in (path_problem("/home/../etc") or "")
    assert "write '/home/x'" in (path_problem("/home//x") or "")


# --- numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf", "+.inf", ".Inf"])
@pytest.mark.parametrize(
    "setting",
    [
        "link_timeout: {v}\n",
        "disk:\n  interval: {v}\n",
        "demo:\n  ratio: {v}\n",
        "demo:\n  count: {v}\n",
    ],
)
def test_non_finite_numbers_are_refused(
    tmp_path: Path, jobs: dict[str, JobSpec], setting: str, value: str
) -> None:
    error = refused(write(tmp_path, GOOD + setting.format(v=value)), jobs)
    assert "expected a number" in error.message or "expected an integer" in error.message
    assert ".nan (not a number)" in error.message or ".inf (infinity)" in error.message


def test_finite_floats_still_pass(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    config = load_config(write(tmp_path, GOOD + "link_timeout: 1.5e+3\ndemo:\n  ratio: 0.25\n"), jobs)
    assert config.link_timeout == 1500.0


# --- YAML aliases and nesting ------------------------------------------------------------------


def _laughs(levels: int, width: int = 10) -> str:
    lines = ["x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_before_expanding(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    # 10**9 values once expanded: refused from the composed nodes, never constructed nor validated
    error = refused(write(tmp_path, GOOD + _laughs(9)), jobs)
    assert f"more than {MAX_CONFIG_NODES} values once its YAML aliases are expanded" in error.message


def test_billion_laughs_inside_a_list_of_a_setting(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    text = GOOD + "demo:\n  paths:\n    - &p0 [/a, /b, /c, /d, /e, /f, /g, /h, /i, /j]\n"
    text += "".join(f"    - &p{i} [{', '.join([f'*p{i - 1}'] * 10)}]\n" for i in range(1, 9))
    error = refused(write(tmp_path, text), jobs)
    assert "YAML aliases" in error.message


def test_merge_key_bomb_is_refused(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    text = "a0: &a0 {k: 1}\n" + "".join(
        f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}], k{i}: 1}}\n" for i in range(1, 60)
    )
    error = refused(write(tmp_path, GOOD + text), jobs)
    assert "YAML aliases" in error.message


def test_recursive_alias_is_refused(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    error = refused(write(tmp_path, GOOD + "demo:\n  paths: &loop [/a, *loop]\n"), jobs)
    assert error.message.startswith(f"{tmp_path / 'config.yml'}:4:10: a YAML alias refers to a list")


def test_deep_nesting_is_refused(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    depth = 200_000
    error = refused(write(tmp_path, GOOD + "x: " + "[" * depth + "]" * depth + "\n"), jobs)
    assert "nests lists or mappings too deeply" in error.message


def test_a_few_aliases_are_fine(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    text = GOOD + "demo:\n  paths: &p [/home, /srv]\ndisk:\n  paths:\n    source: *p\n    target: *p\n"
    config = load_config(write(tmp_path, text), jobs)
    assert config.disk.source_paths == ("/home", "/srv")


# --- what is read ------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_a_device_is_not_read(jobs: dict[str, JobSpec], device: str) -> None:
    error = refused(Path(device), jobs)
    assert error.message == f"{device}:1:1: the config path is not a regular file (a device, FIFO or socket)"


def test_a_fifo_is_not_opened_for_waiting(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    fifo = tmp_path / "config.yml"
    os.mkfifo(fifo)  # nobody writes to it: reading it would block forever
    assert "not a regular file" in refused(fifo, jobs).message


def test_a_symlink_to_a_device_is_not_read(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    link = tmp_path / "config.yml"
    link.symlink_to("/dev/zero")
    assert "not a regular file" in refused(link, jobs).message


def test_a_directory_is_not_read(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    assert refused(tmp_path, jobs).message == f"{tmp_path}:1:1: the config path is a directory"


def test_a_huge_file_is_not_read_whole(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    path = tmp_path / "config.yml"
    with path.open("w") as file:
        file.write(GOOD)
        file.truncate(MAX_CONFIG_BYTES + 1)  # sparse: costs no disk
    assert "is larger than 1024 KiB" in refused(path, jobs).message


def test_a_file_of_exactly_the_limit_is_read(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    text = GOOD + "#" + "x" * (MAX_CONFIG_BYTES - len(GOOD) - 2) + "\n"
    assert len(text) == MAX_CONFIG_BYTES
    assert load_config(write(tmp_path, text), jobs).enabled_jobs()[0].name == "demo"


def test_not_utf8(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    path = tmp_path / "config.yml"
    path.write_bytes(GOOD.encode() + b"# caf\xe9\n")
    assert refused(path, jobs).message == f"{path}:3:6: the config file is not UTF-8 text"


def test_unreadable_for_its_user(tmp_path: Path) -> None:
    """A real permission denial (as root, nothing is denied: the check runs as nobody)."""
    tmp_path.chmod(0o755)
    path = tmp_path / "config.yml"
    path.write_text(GOOD)
    path.chmod(0o000)
    code = (
        "import sys; from pathlib import Path; from pcswitcher.config.settings import load_config;"
        "from pcswitcher.errors import ConfigError\n"
        "try:\n    load_config(Path(sys.argv[1]), {})\n"
        "except ConfigError as e:\n    print(e.message); print(e.hint)\n"
    )
    argv = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        sys.executable,
        "-c",
        code,
        str(path),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/", check=False)
    assert result.stdout.splitlines() == [
        f"{path}:1:1: cannot read the config file: Permission denied",
        "check its permissions (it must be readable by you)",
    ], result.stderr
