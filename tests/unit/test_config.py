"""The config file: schema, error locations, thresholds, the default text (pcswitcher.config.settings)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from pcswitcher import paths
from pcswitcher.config.init_text import default_config_text, example_inventory_text
from pcswitcher.config.schema import config_schema
from pcswitcher.config.settings import Config, load_config
from pcswitcher.config.units import Threshold, parse_threshold
from pcswitcher.errors import ConfigError, ExitCode
from pcswitcher.jobs.discovery import JobSpec, discover_jobs

PROJECT = Path(__file__).parent / "fixtures" / "project"
GiB = 1024**3


@pytest.fixture(scope="module")
def jobs() -> dict[str, JobSpec]:
    return discover_jobs(PROJECT)


def load(tmp_path: Path, jobs: dict[str, JobSpec], text: str) -> Config:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return load_config(path, jobs)


def fail(tmp_path: Path, jobs: dict[str, JobSpec], text: str) -> ConfigError:
    """The ConfigError for ``text``; its message is checked to be one line starting with the file."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, jobs, text)
    error = info.value
    assert "\n" not in error.message
    assert error.message.startswith(f"{tmp_path / 'config.yml'}:")
    assert error.hint
    assert error.exit_code == ExitCode.USAGE
    return error


def where(error: ConfigError) -> str:
    """``line:col: message`` of an error (without the file name)."""
    return error.message.split("config.yml:", 1)[1]


# --- valid configs -----------------------------------------------------------------------------


def test_minimal_config_gets_all_defaults(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    config = load(tmp_path, jobs, "link_timeout: 5\n")
    assert config.path == tmp_path / "config.yml"
    assert config.jobs == ()
    assert config.enabled_jobs() == []
    assert config.file_log_level == "DEBUG"
    assert config.terminal_log_level == "INFO"
    assert config.link_timeout == 5.0
    disk = config.disk
    assert disk.preflight_minimum == Threshold("20%", 20.0, None)
    assert disk.warning_threshold == Threshold("15%", 15.0, None)
    assert disk.runtime_minimum == Threshold("5%", 5.0, None)
    assert disk.interval == 1.0
    assert disk.source_paths == ("/", "/home")
    assert disk.target_paths == ("/", "/home")


def test_full_config(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    config = load(
        tmp_path,
        jobs,
        """\
jobs:
  other: true
  needs: false
  demo: true
log_level:
  file: INFO
  terminal: WARNING
disk:
  preflight_minimum: 50GiB
  warning_threshold: "10%"
  runtime_minimum: 500MB
  interval: 0.5
  paths:
    source: [/, /home]
    target: [/srv]
link_timeout: 2.5
demo:
  count: 7
  limits: {label: y}
other:
  level: 4
""",
    )
    # config order is run order
    assert [job.name for job in config.jobs] == ["other", "needs", "demo"]
    assert [job.name for job in config.enabled_jobs()] == ["other", "demo"]
    demo = config.jobs[2]
    assert demo.enabled is True
    assert demo.settings["count"] == 7
    assert demo.settings["message"] == "hello"  # default from the argspec
    assert demo.settings["limits"] == {"max_files": 100, "label": "y"}
    assert config.jobs[0].settings == {"level": 4}
    assert config.jobs[1].settings == {}  # disabled, required option unset: fine
    assert config.file_log_level == "INFO"
    assert config.terminal_log_level == "WARNING"
    assert config.link_timeout == 2.5
    assert config.disk.preflight_minimum.size == 50 * GiB
    assert config.disk.warning_threshold.percent == 10.0
    assert config.disk.runtime_minimum.size == 500_000_000
    assert config.disk.interval == 0.5
    assert config.disk.source_paths == ("/", "/home")
    assert config.disk.target_paths == ("/srv",)


def test_section_of_a_job_not_listed_is_validated(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    assert load(tmp_path, jobs, "other:\n  level: 2\n").jobs == ()
    error = fail(tmp_path, jobs, "other:\n  level: two\n")
    assert where(error) == "2:10: other.level: expected an integer, got 'two'"


def test_section_of_a_disabled_job_is_validated(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    error = fail(tmp_path, jobs, "jobs:\n  demo: false\ndemo:\n  mode: slow\n")
    assert where(error) == "4:9: demo.mode: 'slow' is not one of fast, safe"


def test_empty_sections_mean_defaults(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    config = load(tmp_path, jobs, "jobs:\nlog_level:\ndisk:\n  paths:\ndemo:\n")
    assert config.jobs == ()
    assert config.disk.source_paths == ("/", "/home")


def test_enabled_job_with_required_option(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    config = load(tmp_path, jobs, "jobs:\n  needs: true\nneeds:\n  host: example\n")
    assert config.jobs[0].settings == {"host": "example"}


# --- file level errors ---------------------------------------------------------------------------


def test_missing_file(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yml", jobs)
    assert info.value.message == f"{tmp_path / 'nope.yml'}:1:1: the config file does not exist"
    assert "pc-switcher init" in (info.value.hint or "")


def test_directory_instead_of_file(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, jobs)


def test_not_utf8(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    path = tmp_path / "config.yml"
    path.write_bytes(b"jobs: {}\nlink_timeout: 5 # caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, jobs)
    assert info.value.message == f"{path}:2:22: the config file is not UTF-8 text"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("jobs:\n  demo: [true\nlink_timeout: 5\n", "3:13: invalid YAML: while parsing a flow sequence"),
        ("jobs:\n  demo: true\n bad: 1\n", "3:2: invalid YAML:"),
        ("a: b\n c: d\n", "2:3: invalid YAML: mapping values are not allowed here"),
        ("jobs: {}\n---\njobs: {}\n", "2:1: invalid YAML: expected a single document in the stream"),
        ("link_timeout: \t5\x07\n", "1:17: invalid YAML: the character U+0007 is not allowed"),
    ],
)
def test_invalid_yaml(tmp_path: Path, jobs: dict[str, JobSpec], text: str, expected: str) -> None:
    error = fail(tmp_path, jobs, text)
    assert where(error).startswith(expected)
    assert "YAML" in (error.hint or "")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "null\n"])
def test_empty_file(tmp_path: Path, jobs: dict[str, JobSpec], text: str) -> None:
    error = fail(tmp_path, jobs, text)
    assert where(error) == "1:1: the config file is empty"
    assert "pc-switcher init" in (error.hint or "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- jobs\n", "1:1: the config must be a mapping of settings, not a list"),
        ("# config\njobs\n", "2:1: the config must be a mapping of settings, not 'jobs'"),
        ("42\n", "1:1: the config must be a mapping of settings, not 42"),
    ],
)
def test_top_level_not_a_mapping(tmp_path: Path, jobs: dict[str, JobSpec], text: str, expected: str) -> None:
    assert where(fail(tmp_path, jobs, text)) == expected


# --- schema errors -------------------------------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    error = fail(tmp_path, jobs, "jobs: {}\n\nlog_levle:\n  file: INFO\n")
    assert where(error) == "3:1: unknown top-level key 'log_levle' (did you mean 'log_level'?)"
    assert error.hint == (
        "valid keys are jobs, log_level, disk, link_timeout, snapshots, history and a section per job "
        "(demo, needs, other)"
    )


def test_unknown_top_level_key_without_close_match(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    assert where(fail(tmp_path, jobs, "zzz: 1\n")) == "1:1: unknown top-level key 'zzz'"


def test_unknown_job(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    error = fail(tmp_path, jobs, "jobs:\n  demo: true\n  othre: true\n")
    assert where(error) == "3:3: unknown job 'othre' in jobs (did you mean 'other'?)"
    assert error.hint == "known jobs: demo, needs, other"


def test_section_for_unknown_job(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    error = fail(tmp_path, jobs, "dmeo:\n  count: 1\n")
    assert where(error) == "1:1: unknown top-level key 'dmeo' (did you mean 'demo'?)"


@pytest.mark.parametrize("value", ["yes please", "1", "'true'", "[true]"])
def test_job_enabled_not_bool(tmp_path: Path, jobs: dict[str, JobSpec], value: str) -> None:
    error = fail(tmp_path, jobs, f"jobs:\n  demo: {value}\n")
    assert re.fullmatch(
        r"2:9: jobs\.demo: expected true or false \(run the job or not\), got .+", where(error)
    )
    assert error.hint == "write `demo: true` to run the job or `demo: false` to skip it"


def test_jobs_not_a_mapping(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    error = fail(tmp_path, jobs, "jobs: [demo, other]\n")
    assert where(error) == "1:7: jobs: expected a mapping, got a list"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("demo:\n  count: '5'\n", "2:10: demo.count: expected an integer, got '5'"),
        ("demo:\n  count: 5.0\n", "2:10: demo.count: expected an integer, got 5.0"),
        ("demo:\n  count: true\n", "2:10: demo.count: expected an integer, got true"),
        ("demo:\n  verbose: 1\n", "2:12: demo.verbose: expected true or false, got 1"),
        ("demo:\n  message: 5\n", "2:12: demo.message: expected a string, got 5"),
        ("demo:\n  message:\n", "2:11: demo.message: expected a string, got nothing (null)"),
        ("demo:\n  paths: /home\n", "2:10: demo.paths: expected a list, got '/home'"),
        ("demo:\n  paths: [/a, 3]\n", "2:15: demo.paths[1]: expected a string, got 3"),
        ("demo:\n  limits: []\n", "2:11: demo.limits: expected a mapping, got a list"),
        ("demo:\n  limits:\n    max_files: x\n", "3:16: demo.limits.max_files: expected an integer, got 'x'"),
        ("demo: 5\n", "1:7: demo: expected a mapping, got 5"),
        ("link_timeout: fast\n", "1:15: link_timeout: expected a number, got 'fast'"),
        ("link_timeout: true\n", "1:15: link_timeout: expected a number, got true"),
        ("disk:\n  interval: '1'\n", "2:13: disk.interval: expected a number, got '1'"),
        ("disk: on\n", "1:7: disk: expected a mapping, got true"),
        ("log_level:\n  file: 10\n", "2:9: log_level.file: expected a string, got 10"),
        ("disk:\n  paths:\n    source: /\n", "3:13: disk.paths.source: expected a list, got '/'"),
    ],
)
def test_wrong_type(tmp_path: Path, jobs: dict[str, JobSpec], text: str, expected: str) -> None:
    assert where(fail(tmp_path, jobs, text)) == expected


def test_wrong_type_hint_names_the_setting(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    error = fail(tmp_path, jobs, "demo:\n  count: '5'\n")
    assert error.hint == "write an integer for demo.count (How many times.); write the number without quotes"


def test_unknown_option(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    error = fail(tmp_path, jobs, "demo:\n  count: 1\n  mdoe: fast\n")
    assert where(error) == "3:3: unknown option 'mdoe' for job 'demo' (did you mean 'mode'?)"
    assert error.hint == (
        "options of demo: message, count, verbose, ratio, paths, mode, tags, limits, rules, extra"
    )


def test_long_option_name_is_unknown(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    error = fail(tmp_path, jobs, "other:\n  other_level: 1\n")
    assert where(error) == "2:3: unknown option 'other_level' for job 'other' (did you mean 'level'?)"


def test_unknown_nested_key(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    error = fail(tmp_path, jobs, "demo:\n  limits: {max_files: 1, lable: x}\n")
    assert where(error) == "2:26: unknown key 'lable' in demo.limits (did you mean 'label'?)"
    assert error.hint == "valid keys in demo.limits: max_files, label"
    error = fail(tmp_path, jobs, "disk:\n  intervall: 2\n")
    assert where(error) == "2:3: unknown key 'intervall' in disk (did you mean 'interval'?)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("demo:\n  mode: fsat\n", "2:9: demo.mode: 'fsat' is not one of fast, safe (did you mean 'fast'?)"),
        ("demo:\n  tags: [a, d]\n", "2:13: demo.tags[1]: 'd' is not one of a, b, c"),
        (
            "log_level:\n  terminal: debug\n",
            "2:13: log_level.terminal: 'debug' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL "
            "(did you mean 'DEBUG'?)",
        ),
    ],
)
def test_not_in_choices(tmp_path: Path, jobs: dict[str, JobSpec], text: str, expected: str) -> None:
    error = fail(tmp_path, jobs, text)
    assert where(error) == expected
    assert (error.hint or "").startswith("use one of: ")


def test_required_option_of_enabled_job_without_section(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    error = fail(tmp_path, jobs, "jobs:\n  demo: true\n  needs: true\n")
    assert where(error) == "3:3: job 'needs' is enabled but its option 'host' has no default and is not set"
    assert error.hint == "add a section `needs:` with `host: ...` (The host to talk to.), or disable the job"


def test_required_option_missing_in_section(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    error = fail(tmp_path, jobs, "jobs:\n  needs: false\nneeds:\n  hots: x\n")
    # both problems are reported: the missing option (at the section) first, in file order
    assert where(error) == "3:1: job 'needs' needs the option 'host', which has no default (+1 more)"
    error = fail(tmp_path, jobs, "demo:\n  rules:\n    - dst: /x\n")
    assert where(error) == "3:7: demo.rules[0]: the setting 'src' is missing"


def test_duplicate_keys(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    error = fail(tmp_path, jobs, "jobs:\n  demo: true\n  other: true\n  demo: false\n")
    assert where(error) == "4:3: duplicate key 'demo' in jobs (first defined at line 2)"
    assert "remove one" in (error.hint or "")
    error = fail(tmp_path, jobs, "link_timeout: 5\ndisk: {}\nlink_timeout: 6\n")
    assert where(error) == "3:1: duplicate key 'link_timeout' in the config (first defined at line 1)"
    error = fail(tmp_path, jobs, "demo:\n  limits: {label: a, label: b}\n")
    assert where(error) == "2:22: duplicate key 'label' in demo.limits (first defined at line 2)"


def test_merge_keys_are_not_duplicates(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    text = "demo: &d\n  count: 2\n  message: hi\nother:\n  level: 1\n"
    assert load(tmp_path, jobs, text).jobs == ()
    text = "demo:\n  limits: &l {max_files: 1, label: a}\n  rules: [{<<: {src: /a}, src: /b}]\n"
    assert load(tmp_path, jobs, text + "jobs: {demo: true}\n").jobs[0].settings["rules"] == [
        {"src": "/b", "dst": "/"}
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("disk:\n  preflight_minimum: 20\n", "2:22: disk.preflight_minimum: a bare number (20) is ambiguous"),
        ("disk:\n  runtime_minimum: '50'\n", "2:20: disk.runtime_minimum: a bare number (50) is ambiguous"),
        ("disk:\n  warning_threshold: 120%\n", "2:22: disk.warning_threshold: a percentage must be between"),
        ("disk:\n  warning_threshold: 5 parsecs\n", "2:22: disk.warning_threshold: unknown unit 'parsecs'"),
        ("disk:\n  warning_threshold: 5XB\n", "2:22: disk.warning_threshold: unknown unit 'XB' in '5XB'"),
        ("disk:\n  warning_threshold: true\n", "2:22: disk.warning_threshold: expected a percentage"),
        ("disk:\n  warning_threshold: -5%\n", "2:22: disk.warning_threshold: '-5%' is not a threshold"),
    ],
)
def test_threshold_errors(tmp_path: Path, jobs: dict[str, JobSpec], text: str, expected: str) -> None:
    error = fail(tmp_path, jobs, text)
    assert where(error).startswith(expected)
    if "percentage must be" not in expected:
        assert "'20%'" in error.message  # the accepted forms are named
        assert "'50GiB'" in error.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("disk:\n  interval: 0\n", "2:13: disk.interval: must be greater than 0, got 0"),
        ("link_timeout: -1\n", "1:15: link_timeout: must be greater than 0, got -1"),
        ("disk:\n  paths:\n    target: []\n", "3:13: disk.paths.target: must list at least 1 item(s)"),
        (
            "disk:\n  paths:\n    source: [/, home]\n",
            "3:17: disk.paths.source[1]: 'home' is not an absolute path (it must start with /)",
        ),
    ],
)
def test_value_errors(tmp_path: Path, jobs: dict[str, JobSpec], text: str, expected: str) -> None:
    assert where(fail(tmp_path, jobs, text)).startswith(expected)


def test_several_problems_first_in_file_order(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    text = """\
link_timeout: 0
jobs:
  demo: maybe
  bogus: true
demo:
  count: '1'
  mode: slow
disk:
  preflight_minimum: 10
"""
    error = fail(tmp_path, jobs, text)
    assert where(error) == "1:15: link_timeout: must be greater than 0, got 0 (+5 more)"
    error = fail(tmp_path, jobs, text.replace("link_timeout: 0", "link_timeout: 1"))
    assert where(error).startswith("3:9: jobs.demo: expected true or false")
    assert where(error).endswith(" (+4 more)")


def test_one_problem_per_value(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    # 5 is both the wrong type and not a choice: reported once, as a type error
    error = fail(tmp_path, jobs, "demo:\n  mode: 5\n")
    assert where(error) == "2:9: demo.mode: expected a string, got 5"


# --- thresholds ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "percent", "size"),
    [
        ("20%", 20.0, None),
        ("0%", 0.0, None),
        ("100%", 100.0, None),
        ("12.5%", 12.5, None),
        ("50GiB", None, 50 * GiB),
        ("50G", None, 50 * GiB),
        ("50GB", None, 50 * 10**9),
        ("500MB", None, 500 * 10**6),
        ("500MiB", None, 500 * 2**20),
        ("1.5TiB", None, int(1.5 * 2**40)),
        ("2T", None, 2 * 2**40),
        ("3TB", None, 3 * 10**12),
        ("100K", None, 102_400),
        ("100KB", None, 100_000),
        ("100KiB", None, 102_400),
        ("4096B", None, 4096),
        ("0B", None, 0),
        ("10 GiB", None, 10 * GiB),
    ],
)
def test_parse_threshold(text: str, percent: float | None, size: int | None) -> None:
    threshold = parse_threshold(text)
    assert threshold == Threshold(text, percent, size)
    assert str(threshold) == text


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (50, "a bare number (50) is ambiguous"),
        (0.5, "a bare number (0.5) is ambiguous"),
        ("50", "a bare number (50) is ambiguous"),
        ("101%", "a percentage must be between 0% and 100%"),
        ("50gb", "unknown unit 'gb'"),
        ("50 GIB", "unknown unit 'GIB'"),
        ("", "'' is not a threshold"),
        ("%", "'%' is not a threshold"),
        ("GiB", "'GiB' is not a threshold"),
        ("1,5GiB", "'1,5GiB' is not a threshold"),
        (True, "expected a percentage"),
        (None, "expected a percentage"),
        ([], "expected a percentage"),
    ],
)
def test_parse_threshold_errors(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_threshold(value)


def test_threshold_breached() -> None:
    percent = parse_threshold("10%")
    assert percent.breached(free=9, total=100)
    assert not percent.breached(free=10, total=100)
    assert not percent.breached(free=50, total=100)
    size = parse_threshold("1K")
    assert size.breached(free=1023, total=10**9)
    assert not size.breached(free=1024, total=10**9)


# --- schema, default config, inventory ---------------------------------------------------------------


def test_config_schema(jobs: dict[str, JobSpec]) -> None:
    schema = config_schema(jobs)
    Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    assert list(props) == [
        "jobs",
        "log_level",
        "disk",
        "link_timeout",
        "snapshots",
        "history",
        "demo",
        "needs",
        "other",
    ]
    assert schema["additionalProperties"] is False
    assert props["jobs"]["properties"]["demo"] == {
        "description": "A demo job with options of every type",
        "type": "boolean",
    }
    assert props["demo"]["properties"] == jobs["demo"].schema()["properties"]

    def documented(node: dict[str, object], path: str) -> None:
        for key, sub in node.get("properties", {}).items():  # type: ignore[attr-defined]
            assert sub.get("description"), f"{path}.{key} has no description"
            if key not in jobs and path == "":
                assert "default" in sub, f"{path}.{key} has no default"
            documented(sub, f"{path}.{key}")

    documented(schema, "")


def test_default_config_round_trips(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    text = default_config_text(jobs)
    config = load(tmp_path, jobs, text)
    # every job is listed, enabled per default_enabled; a job with required options starts disabled
    assert [(job.name, job.enabled) for job in config.jobs] == [
        ("demo", True),
        ("needs", False),
        ("other", False),
    ]
    assert config.jobs[0].settings == jobs["demo"].defaults()
    assert config.file_log_level == "DEBUG"
    assert config.disk.preflight_minimum.text == "20%"
    assert config.link_timeout == 5.0
    # descriptions appear as comments, options are commented out with their defaults
    assert "  # A demo job with options of every type\n  demo: true\n" in text
    assert "  # How many times.\n  # count: 3\n" in text
    assert '  # Folders to sync.\n  # paths: ["/home"]\n' in text
    assert "# needs:\n" in text
    assert '  preflight_minimum: "20%"\n' in text


def test_default_config_uncommented_options_load(tmp_path: Path, jobs: dict[str, JobSpec]) -> None:
    """Uncommenting the default of every option gives the same settings."""
    text = default_config_text(jobs)
    uncommented = re.sub(r"(?m)^  # (\w+: [^ #].*)$", r"  \1", text)  # not the required `host:`
    assert "\n  count: 3\n" in uncommented
    config = load(tmp_path, jobs, uncommented)
    assert config.jobs[0].settings == jobs["demo"].defaults()
    assert load(tmp_path, jobs, text) == config


def test_default_config_without_jobs(tmp_path: Path) -> None:
    config = load(tmp_path, {}, default_config_text({}))
    assert config.jobs == ()


def test_default_config_is_yaml_with_comments(jobs: dict[str, JobSpec]) -> None:
    data = yaml.safe_load(default_config_text(jobs))
    assert list(data) == [
        "jobs",
        "log_level",
        "disk",
        "link_timeout",
        "snapshots",
        "history",
        "demo",
        "other",
    ]
    assert list(data["jobs"]) == ["demo", "needs", "other"]


def test_example_inventory() -> None:
    text = example_inventory_text()
    assert text == (paths.project_root() / "inventory" / "example.yml").read_text()
    data = yaml.safe_load(text)
    host = data["all"]["hosts"]["workstation2"]
    assert {"ansible_host", "ansible_user", "ansible_port"} <= set(host)
    assert "ansible_ssh_private_key_file" in text
    assert "TARGET" in text


# --- every problem of a file (`pc-switcher config check`) --------------------------------------

FIVE_PROBLEMS = """\
jobs:
  folder_sync: maybe
log_level:
  terminal: loud
link_timeout: 0
disk:
  preflight_minimum: 10
folder_sync:
  folders:
    - source: /home
      target: /etc
bogus: 1
"""


def test_every_problem_is_listed_with_its_place(tmp_path: Path) -> None:
    """Schema (type, enum, minimum, format), the job's option hook and an unknown key: all six, in
    file order, each with file:line:col and its fix; the hook runs although other sections are bad."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, discover_jobs(paths.project_root()), FIVE_PROBLEMS)
    path = tmp_path / "config.yml"
    problems = info.value.problems or []
    assert [message for message, _ in problems] == [
        f"{path}:2:16: jobs.folder_sync: expected true or false (run the job or not), got 'maybe'",
        f"{path}:4:13: log_level.terminal: 'loud' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
        f"{path}:5:15: link_timeout: must be greater than 0, got 0",
        f"{path}:7:22: disk.preflight_minimum: a bare number (10) is ambiguous: write a percentage of the "
        "file system like '20%' or a size like '50GiB', '500MB', '1.5TiB', '100K' (B, K/KB/KiB, M/MB/MiB, "
        "G/GB/GiB, T/TB/TiB; KB = 1000 bytes, K = KiB = 1024 bytes)",
        f"{path}:11:15: folder_sync.folders[0].target: target folder /etc is outside the places a mirror "
        "with delete may write (/home, /root, and below /srv, /opt, /var)",
        f"{path}:12:1: unknown top-level key 'bogus'",
    ]
    assert all(hint for _, hint in problems)
    # the one-line error of other commands: the first, how many more, and where to see them all
    assert info.value.message == problems[0][0] + " (+5 more)"
    assert (info.value.hint or "").endswith(f"`pc-switcher config check -c {path}` lists all 6")


def test_a_section_that_breaks_its_schema_is_not_given_to_the_hook(tmp_path: Path) -> None:
    """The hook expects schema-valid settings: a folder without a source is the schema's problem
    only, and the hook still checks the other jobs' sections."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, discover_jobs(paths.project_root()), "folder_sync:\n  folders:\n    - target: /etc\n")
    assert [m.split("config.yml:", 1)[1] for m, _ in info.value.problems or []] == [
        "3:7: folder_sync.folders[0]: the setting 'source' is missing"
    ]


HOOK = """
def option_problems(settings):
    host = settings["host"]  # required: a hook may rely on it
    bad = host == "bad"
    return [{"path": ["host"], "problem": "'bad' is a bad host", "fix": "name a good one"}] if bad else []
"""


def test_hooks_get_only_sections_with_their_required_options(tmp_path: Path) -> None:
    """A job enabled without its required option is reported by the required check; its hook is
    not run (it may rely on the option), nor does it hide the other problems."""
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project)
    plugins = project / "roles" / "needs" / "filter_plugins"
    plugins.mkdir()
    (plugins / "needs_options.py").write_text(HOOK)
    jobs = discover_jobs(project)
    with pytest.raises(ConfigError) as info:
        load(tmp_path, jobs, "jobs:\n  needs: true\nlink_timeout: 0\n")
    assert [m.split("config.yml:", 1)[1] for m, _ in info.value.problems or []] == [
        "2:3: job 'needs' is enabled but its option 'host' has no default and is not set",
        "3:15: link_timeout: must be greater than 0, got 0",
    ]
    with pytest.raises(ConfigError) as info:
        load(tmp_path, jobs, "jobs:\n  needs: true\nneeds:\n  host: bad\nlink_timeout: 0\n")
    assert [m.split("config.yml:", 1)[1] for m, _ in info.value.problems or []] == [
        "4:9: needs.host: 'bad' is a bad host",
        "5:15: link_timeout: must be greater than 0, got 0",
    ]
