"""Job discovery; the argspec -> JSON schema, defaults, extra vars mapping (pcswitcher.jobs.discovery)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pcswitcher.jobs.discovery import JobDefinitionError, JobSpec, discover_jobs, strict_validator

FIXTURES = Path(__file__).parent / "fixtures"
PROJECT = FIXTURES / "project"


@pytest.fixture(scope="module")
def jobs() -> dict[str, JobSpec]:
    return discover_jobs(PROJECT)


def valid(schema: dict[str, Any], instance: Any) -> bool:
    return strict_validator()(schema).is_valid(instance)


# --- discovery ---------------------------------------------------------------------------------


def test_discovers_declared_jobs_sorted_by_name(jobs: dict[str, JobSpec]) -> None:
    # cleanup has no meta/pcswitcher.yml, orphan has no role: neither is a job.
    assert list(jobs) == ["demo", "needs", "other"]


def test_job_fields(jobs: dict[str, JobSpec]) -> None:
    demo = jobs["demo"]
    assert demo.name == "demo"
    assert demo.playbook == PROJECT / "playbooks" / "demo.yml"
    assert demo.role_dir == PROJECT / "roles" / "demo"
    assert demo.description == "A demo job with options of every type"
    assert demo.default_enabled is True
    assert jobs["other"].default_enabled is False
    assert list(demo.options) == [
        "message",
        "count",
        "verbose",
        "ratio",
        "paths",
        "mode",
        "tags",
        "limits",
        "rules",
        "extra",
    ]
    assert demo.options["count"]["type"] == "int"
    assert demo.options["count"]["default"] == 3


def test_no_roles_dir_means_no_jobs(tmp_path: Path) -> None:
    assert discover_jobs(tmp_path) == {}


@pytest.mark.parametrize(
    "missing", ["playbooks/demo.yml", "roles/demo/meta/argument_specs.yml", "roles/demo/meta/pcswitcher.yml"]
)
def test_a_job_needs_all_three_files(tmp_path: Path, missing: str) -> None:
    root = tmp_path / "p"
    shutil.copytree(PROJECT, root)
    (root / missing).unlink()
    assert "demo" not in discover_jobs(root)


def test_job_without_options(tmp_path: Path) -> None:
    root = make_job(tmp_path, "bare", "argument_specs:\n  main:\n    short_description: nothing\n")
    spec = discover_jobs(root)["bare"]
    assert spec.options == {}
    assert spec.defaults() == {}
    assert spec.extravars({}) == {}
    assert spec.schema()["properties"] == {}
    assert spec.schema()["additionalProperties"] is False


# --- schema ------------------------------------------------------------------------------------


def test_schema_is_valid_draft_2020_12(jobs: dict[str, JobSpec]) -> None:
    for spec in jobs.values():
        schema = spec.schema()
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)


def test_schema_types_and_structure(jobs: dict[str, JobSpec]) -> None:
    schema = jobs["demo"].schema()
    props = schema["properties"]
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert props["message"] == {"description": "The message to print.", "type": "string", "default": "hello"}
    assert props["count"]["type"] == "integer"
    assert props["verbose"]["type"] == "boolean"
    assert props["ratio"]["type"] == "number"
    assert props["paths"]["items"] == {"type": "string"}
    assert props["mode"]["enum"] == ["fast", "safe"]
    assert props["tags"]["items"]["enum"] == ["a", "b", "c"]
    assert props["limits"]["additionalProperties"] is False
    assert props["limits"]["properties"]["max_files"]["default"] == 100
    assert props["rules"]["items"]["additionalProperties"] is False
    assert props["rules"]["items"]["required"] == ["src"]
    assert "required" not in schema
    assert jobs["needs"].schema()["required"] == ["host"]
    # every property is documented
    for prop in props.values():
        assert prop["description"]


def test_schema_is_a_fresh_copy(jobs: dict[str, JobSpec]) -> None:
    jobs["demo"].schema()["properties"]["count"]["default"] = 99
    assert jobs["demo"].schema()["properties"]["count"]["default"] == 3


@pytest.mark.parametrize(
    ("option", "value", "ok"),
    [
        ("count", 5, True),
        ("count", "5", False),  # strict: no string numbers
        ("count", 5.0, False),  # strict: jsonschema alone would accept 5.0
        ("count", True, False),
        ("ratio", 1, True),  # a float option accepts an int
        ("ratio", 0.25, True),
        ("ratio", "0.5", False),
        ("verbose", True, True),
        ("verbose", "yes", False),
        ("message", "hi", True),
        ("message", 5, False),
        ("paths", ["/a", "/b"], True),
        ("paths", "/a", False),
        ("paths", [1], False),
        ("mode", "fast", True),
        ("mode", "slow", False),
        ("tags", ["a", "c"], True),
        ("tags", ["d"], False),
        ("limits", {"max_files": 1}, True),
        ("limits", {"max_files": 1, "other": 2}, False),
        ("limits", [], False),
        ("rules", [{"src": "/a"}], True),
        ("rules", [{"dst": "/a"}], False),  # src is required
        ("rules", [{"src": "/a", "x": 1}], False),
        ("extra", {"anything": [1, None]}, True),  # raw
        ("extra", None, True),
    ],
)
def test_schema_validation(jobs: dict[str, JobSpec], option: str, value: object, ok: bool) -> None:
    assert valid(jobs["demo"].schema(), {option: value}) is ok


def test_schema_rejects_unknown_option(jobs: dict[str, JobSpec]) -> None:
    assert not valid(jobs["demo"].schema(), {"bogus": 1})
    assert not valid(jobs["demo"].schema(), {"demo_count": 1})  # long names are not config keys


# --- defaults and extra vars ---------------------------------------------------------------------


def test_defaults(jobs: dict[str, JobSpec]) -> None:
    assert jobs["demo"].defaults() == {
        "message": "hello",
        "count": 3,
        "verbose": False,
        "ratio": 0.5,
        "paths": ["/home"],
        "mode": "safe",
        "tags": [],
        "limits": {"max_files": 100, "label": "x"},  # nested defaults applied
        "rules": [],
        "extra": None,
    }
    assert jobs["needs"].defaults() == {}  # a required option has no default
    assert jobs["needs"].required() == ["host"]


def test_extravars_prefix_and_defaults(jobs: dict[str, JobSpec]) -> None:
    extravars = jobs["demo"].extravars(
        {"count": 7, "limits": {"label": "y"}, "rules": [{"src": "/a"}, {"src": "/b", "dst": "/c"}]}
    )
    assert extravars == {
        "demo_message": "hello",
        "demo_count": 7,
        "demo_verbose": False,
        "demo_ratio": 0.5,
        "demo_paths": ["/home"],
        "demo_mode": "safe",
        "demo_tags": [],
        "demo_limits": {"max_files": 100, "label": "y"},
        "demo_rules": [{"src": "/a", "dst": "/"}, {"src": "/b", "dst": "/c"}],
        "demo_extra": None,
    }
    assert jobs["other"].extravars({}) == {"other_level": 1}
    assert jobs["needs"].extravars({"host": "h"}) == {"needs_host": "h"}


def test_extravars_do_not_share_defaults(jobs: dict[str, JobSpec]) -> None:
    first = jobs["demo"].extravars({})
    first["demo_paths"].append("/mutated")
    assert jobs["demo"].extravars({})["demo_paths"] == ["/home"]
    assert jobs["demo"].defaults()["paths"] == ["/home"]


def test_extravars_errors(jobs: dict[str, JobSpec]) -> None:
    with pytest.raises(ValueError, match="unknown option"):
        jobs["demo"].extravars({"bogus": 1})
    with pytest.raises(ValueError, match=r"required option.*host"):
        jobs["needs"].extravars({})


# --- malformed jobs ------------------------------------------------------------------------------


def make_job(
    tmp_path: Path,
    name: str,
    argspec: str,
    declaration: str = "description: a test job\n",
) -> Path:
    root = tmp_path / "project"
    meta = root / "roles" / name / "meta"
    meta.mkdir(parents=True)
    (root / "playbooks").mkdir(exist_ok=True)
    (root / "playbooks" / f"{name}.yml").write_text(f"- hosts: all\n  roles: [{name}]\n")
    (meta / "argument_specs.yml").write_text(argspec)
    (meta / "pcswitcher.yml").write_text(declaration)
    return root


def argspec(options: str) -> str:
    body = "".join(f"      {line}\n" for line in options.strip("\n").splitlines())
    return f"argument_specs:\n  main:\n    options:\n{body}"


def test_malformed_fixture_names_file_and_problem() -> None:
    with pytest.raises(JobDefinitionError) as info:
        discover_jobs(FIXTURES / "malformed")
    error = info.value
    assert error.path == FIXTURES / "malformed" / "roles" / "broken" / "meta" / "argument_specs.yml"
    assert str(error) == (
        f"{error.path}: option 'count': must be named 'broken_<option>' (lowercase letters, digits, _)"
    )


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ("j_a: {description: d, default: 1}", "option j_a: missing 'type'"),
        ("j_a: {type: int, default: 1}", "option j_a: missing 'description' (a non-empty string)"),
        ("j_a: {type: int, description: '', default: 1}", "option j_a: missing 'description'"),
        ("j_a: {type: bytes, description: d, default: 1}", "option j_a: type 'bytes' is not supported"),
        ("a: {type: int, description: d, default: 1}", "option 'a': must be named 'j_<option>'"),
        ("j_: {type: int, description: d, default: 1}", "option 'j_': must be named 'j_<option>'"),
        ("j_a: {type: int, description: d, required: true, default: 1}", "mutually exclusive"),
        ("j_a: {type: int, description: d, default: '5'}", "option j_a: default '5' does not match"),
        ("j_a: {type: str, description: d, choices: [x, 1], default: x}", "choice 1 does not match"),
        ("j_a: {type: str, description: d, choices: [x], default: y}", "default 'y' does not match"),
        (
            "j_a: {type: str, description: d, default: x, options: {b: {type: int, description: d}}}",
            "'options'",
        ),
        ("j_a: {type: str, description: d, default: x, elements: str}", "'elements' is only allowed"),
        ("j_a: {type: int, description: d, default: 1, frobnicate: 1}", "unknown argspec key(s) frobnicate"),
        (
            "j_a: {type: dict, description: d, default: {}, options: {b: {description: d}}}",
            "option j_a.b: missing 'type'",
        ),
        (
            "j_a: {type: dict, description: d, default: {}, options: {b: {type: int}}}",
            "option j_a.b: missing 'description'",
        ),
        ("j_a: 5", "option j_a: must be a mapping"),
    ],
)
def test_malformed_argspec(tmp_path: Path, options: str, problem: str) -> None:
    root = make_job(tmp_path, "j", argspec(options))
    with pytest.raises(JobDefinitionError) as info:
        discover_jobs(root)
    assert info.value.path == root / "roles" / "j" / "meta" / "argument_specs.yml"
    assert problem in info.value.problem


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("argument_specs: {}\n", "must define 'argument_specs: main:'"),
        ("[]\n", "must define 'argument_specs: main:'"),
        ("argument_specs:\n  main:\n    options: [a]\n", "'argument_specs.main.options' must be a mapping"),
        ("argument_specs: [\n", "invalid YAML"),
    ],
)
def test_malformed_argspec_file(tmp_path: Path, text: str, problem: str) -> None:
    root = make_job(tmp_path, "j", text)
    with pytest.raises(JobDefinitionError, match=r"argument_specs\.yml: ") as info:
        discover_jobs(root)
    assert problem in info.value.problem


@pytest.mark.parametrize(
    ("declaration", "problem"),
    [
        ("default_enabled: true\n", "'description' must be a non-empty one-line string"),
        ("description: ''\n", "'description' must be a non-empty one-line string"),
        ("description: [a]\n", "'description' must be a non-empty one-line string"),
        ("description: d\ndefault_enabled: 'yes'\n", "'default_enabled' must be true or false"),
        ("description: d\ncolour: red\n", "unknown key(s) colour"),
        ("- description\n", "must be a mapping"),
    ],
)
def test_malformed_declaration(tmp_path: Path, declaration: str, problem: str) -> None:
    root = make_job(tmp_path, "j", argspec("j_a: {type: int, description: d, default: 1}"), declaration)
    with pytest.raises(JobDefinitionError) as info:
        discover_jobs(root)
    assert info.value.path == root / "roles" / "j" / "meta" / "pcswitcher.yml"
    assert problem in info.value.problem


@pytest.mark.parametrize("name", ["Bad", "pcswitcher", "1job", "with-dash"])
def test_bad_job_names(tmp_path: Path, name: str) -> None:
    root = make_job(tmp_path, name, "argument_specs:\n  main: {}\n")
    with pytest.raises(JobDefinitionError, match=f"job name '{name}' is not allowed"):
        discover_jobs(root)


def test_description_may_be_a_list(tmp_path: Path) -> None:
    root = make_job(tmp_path, "j", argspec("j_a: {type: int, description: [one, two], default: 1}"))
    assert discover_jobs(root)["j"].schema()["properties"]["a"]["description"] == "one two"


def test_null_default_allows_null(tmp_path: Path) -> None:
    root = make_job(tmp_path, "j", argspec("j_a: {type: str, description: d, default: null}"))
    spec = discover_jobs(root)["j"]
    assert spec.defaults() == {"a": None}
    assert valid(spec.schema(), {"a": "x"})
    assert valid(spec.schema(), {"a": None})
    assert not valid(spec.schema(), {"a": 1})


def _job_with_hook(tmp_path: Path, hook: str) -> Path:
    """A project with one job ``hooked`` (option ``size``) and the option-check hook ``hook``."""
    role = tmp_path / "roles" / "hooked"
    (role / "meta").mkdir(parents=True)
    (role / "filter_plugins").mkdir()
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "hooked.yml").write_text("---\n")
    (role / "meta" / "pcswitcher.yml").write_text("description: a job with option checks\n")
    (role / "meta" / "argument_specs.yml").write_text(
        "argument_specs:\n  main:\n    options:\n      hooked_size:\n        type: int\n        default: 1\n"
        "        description: A size.\n"
    )
    (role / "filter_plugins" / "hooked_options.py").write_text(hook)
    return tmp_path


GOOD_HOOK = """
def option_problems(settings):
    if settings["size"] < 0:
        return [{"path": ["size"], "problem": "must be 0 or more", "fix": "set 0 or more"}]
    return []
"""


def test_option_checks_hook_reports_with_the_place(tmp_path: Path) -> None:
    from pcswitcher.config.settings import load_config
    from pcswitcher.errors import ConfigError

    root = _job_with_hook(tmp_path, GOOD_HOOK)
    jobs = discover_jobs(root)
    assert jobs["hooked"].option_problems({"size": 1}) == []
    config = tmp_path / "config.yml"
    config.write_text("jobs:\n  hooked: true\nhooked:\n  size: -3\n")
    with pytest.raises(ConfigError) as info:
        load_config(config, jobs)
    assert info.value.message == f"{config}:4:9: hooked.size: must be 0 or more"
    assert info.value.hint == "set 0 or more"


@pytest.mark.parametrize(
    "hook",
    [
        "raise RuntimeError('boom')\n",
        "x = 1\n",
        "def option_problems(settings):\n    return {}\n",
        "def option_problems(settings):\n    return [{'path': 'size', 'problem': 'p', 'fix': 'f'}]\n",
        "def option_problems(settings):\n    return [{'path': [], 'problem': '', 'fix': 'f'}]\n",
        "def option_problems(settings):\n    return 1 / 0\n",
    ],
)
def test_a_broken_option_checks_hook_is_the_jobs_error(tmp_path: Path, hook: str) -> None:
    root = _job_with_hook(tmp_path, hook)
    with pytest.raises(JobDefinitionError) as info:
        discover_jobs(root)["hooked"].option_problems({"size": 1})
    assert "hooked_options.py" in str(info.value)
