"""Job discovery: which roles are jobs, and what settings each job takes.

A job is Ansible, not Python (see ``docs/job-contract.md``). A role ``<job>`` is a job when these
three files exist::

    playbooks/<job>.yml
    roles/<job>/meta/argument_specs.yml     # the job's settings (entry point ``main``)
    roles/<job>/meta/pcswitcher.yml         # the declaration: description, default_enabled, summary

The argument spec is the single source of a job's settings: :meth:`JobSpec.schema` turns it into
the JSON schema of the config section ``<job>:``, :meth:`JobSpec.defaults` gives its defaults and
:meth:`JobSpec.extravars` the ``<job>_<option>`` extra vars the playbook is run with. The same
translation (:func:`role_options_schema`) makes the config sections of the infrastructure roles
(pcswitcher/config/role_sections.py).

A job may also ship the checks of its settings that a schema cannot express (the option-check
hook): ``roles/<job>/filter_plugins/<job>_options.py`` with a function ``option_problems(settings)``
(short names, defaults applied) returning a list of ``{"path": [...], "problem": str, "fix": str}``.
The role uses the same file as an Ansible filter plugin; :meth:`JobSpec.option_problems` runs it.

Nothing here names a job.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml

from pcswitcher.errors import JobDefinitionError
from pcswitcher.jobs.summary import template_problem

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

__all__ = [
    "JobDefinitionError",
    "JobSpec",
    "OptionProblem",
    "discover_jobs",
    "load_yaml_text",
    "role_options_schema",
    "strict_validator",
]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# A job name is a role name, a config key and a variable prefix: keep it a plain identifier.
_JOB_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_OPTION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# ``pcswitcher_*`` variables belong to the driver (see the job contract).
_RESERVED_JOB_NAMES = frozenset({"pcswitcher"})

# Ansible argspec type -> JSON schema. ``path`` is a string (Ansible expands ``~`` itself);
# ``float`` accepts ints, like Ansible; ``int`` is strict (no "5", no 5.0, no true).
_TYPE_SCHEMAS: Mapping[str, Mapping[str, Any]] = {
    "str": {"type": "string"},
    "path": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "list": {"type": "array"},
    "dict": {"type": "object"},
    "raw": {},
}
# Argspec keys that only matter to ansible-core (accepted, not used for the config schema).
_IGNORED_KEYS = frozenset(
    {
        "aliases",
        "apply_defaults",
        "deprecated_aliases",
        "fallback",
        "mutually_exclusive",
        "no_log",
        "removed_at_date",
        "removed_from_collection",
        "removed_in_version",
        "required_by",
        "required_if",
        "required_one_of",
        "required_together",
        "version_added",
        "version_added_collection",
    }
)
_KNOWN_KEYS = frozenset({"type", "description", "default", "required", "choices", "elements", "options"})
_DECLARATION_KEYS = frozenset({"description", "default_enabled", "summary", "summary_dry_run"})


def _is_strict_integer(checker: object, instance: object) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_finite_number(checker: object, instance: object) -> bool:
    if isinstance(instance, float):
        return math.isfinite(instance)
    return _is_strict_integer(checker, instance)


@functools.cache
def strict_validator() -> type[Validator]:
    """Draft 2020-12 validator whose ``integer`` is a real int (jsonschema also accepts ``5.0``)
    and whose ``number`` is finite (YAML's ``.nan``, ``.inf`` and ``-.inf`` are not numbers).

    Built at first use: importing jsonschema costs about 0.1 s, which `--help`, shell completion and
    most commands do not need.
    """
    from jsonschema import Draft202012Validator, validators

    validator: type[Validator] = validators.extend(  # type: ignore[no-untyped-call]
        Draft202012Validator,
        type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many(
            {"integer": _is_strict_integer, "number": _is_finite_number}
        ),
    )
    return validator


#: Ansible's documentation markup (``ansible-doc`` renders it): a code-like name ``C(x)``, an option
#: ``O(x)``, a value ``V(x)``, a return value ``RV(x)``, an environment variable ``E(x)``, a plugin
#: ``P(x)``; italics ``I(x)``, bold ``B(x)``, a module ``M(x)``; links ``U(url)``, ``L(text,url)``,
#: ``R(text,anchor)``; and ``HORIZONTALLINE``.
_MARKUP = re.compile(r"(?<![\w])(RV|[COVEPIBMURL])\(([^()]*)\)|\s*\bHORIZONTALLINE\b")
_CODE_MARKUP = frozenset({"C", "O", "V", "RV", "E", "P"})


def plain_text(text: str) -> str:
    """``text`` without Ansible's markup: what pc-switcher writes for a person to read (the config
    ``init`` writes, the reference, the error hints). Names and values in backquotes, links as
    ``text (url)``; everything else as it stands."""

    def replace(match: re.Match[str]) -> str:
        kind, inner = match.group(1), match.group(2)
        if kind is None:  # HORIZONTALLINE
            return ""
        if kind in _CODE_MARKUP:
            return f"`{inner}`"
        if kind in {"L", "R"}:
            label, _, target = inner.partition(",")
            return f"{label.strip()} ({target.strip()})" if kind == "L" else label.strip()
        return inner

    return " ".join(_MARKUP.sub(replace, text).split())


def _description_text(value: object) -> str | None:
    """An argspec description is a string or a list of strings (paragraphs), as plain text."""
    if isinstance(value, str) and value.strip():
        return plain_text(value) or None
    if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
        return plain_text(" ".join(value)) or None
    return None


def _first_error(schema: Mapping[str, Any], instance: Any) -> str | None:
    error = next(iter(strict_validator()(schema).iter_errors(instance)), None)
    return None if error is None else error.message


def _option_schema(file: Path, where: str, spec: object) -> dict[str, Any]:
    """The JSON schema of one argspec option (recursing into nested ``options``)."""
    type_, description = _checked_basics(file, where, spec)
    assert isinstance(spec, Mapping)
    schema: dict[str, Any] = {"description": description, **copy.deepcopy(dict(_TYPE_SCHEMAS[type_]))}
    elements = spec.get("elements")
    if elements is not None:
        if type_ != "list":
            raise JobDefinitionError(file, f"option {where}: 'elements' is only allowed with type list")
        if elements not in _TYPE_SCHEMAS:
            raise JobDefinitionError(file, f"option {where}: elements type {elements!r} is not supported")
        schema["items"] = copy.deepcopy(dict(_TYPE_SCHEMAS[elements]))
    if spec.get("options") is not None:
        _add_suboptions(file, where, schema, spec)
    if spec.get("choices") is not None:
        _add_choices(file, where, schema, spec)
    if "default" in spec:
        _add_default(file, where, schema, spec["default"])
    return schema


def _checked_basics(file: Path, where: str, spec: object) -> tuple[str, str]:
    """The option's ``type`` and plain ``description``, once its keys, type, description and
    ``required`` are known to be right."""
    if not isinstance(spec, Mapping):
        raise JobDefinitionError(file, f"option {where}: must be a mapping, not {type(spec).__name__}")
    unknown = set(spec) - _KNOWN_KEYS - _IGNORED_KEYS
    if unknown:
        raise JobDefinitionError(file, f"option {where}: unknown argspec key(s) {', '.join(sorted(unknown))}")
    type_ = spec.get("type")
    if type_ is None:
        raise JobDefinitionError(file, f"option {where}: missing 'type'")
    if type_ not in _TYPE_SCHEMAS:
        raise JobDefinitionError(
            file, f"option {where}: type {type_!r} is not supported (use one of {', '.join(_TYPE_SCHEMAS)})"
        )
    description = _description_text(spec.get("description"))
    if description is None:
        raise JobDefinitionError(file, f"option {where}: missing 'description' (a non-empty string)")
    required = spec.get("required", False)
    if not isinstance(required, bool):
        raise JobDefinitionError(file, f"option {where}: 'required' must be true or false")
    if required and "default" in spec:
        raise JobDefinitionError(file, f"option {where}: 'required' and 'default' are mutually exclusive")
    return str(type_), description


def _add_suboptions(file: Path, where: str, schema: dict[str, Any], spec: Mapping[str, Any]) -> None:
    """The nested ``options`` of a dict, or of a list's dict elements."""
    if spec["type"] == "dict":
        target = schema
    elif spec["type"] == "list" and spec.get("elements") == "dict":
        target = schema["items"]
    else:
        raise JobDefinitionError(
            file, f"option {where}: 'options' needs type dict, or type list with elements dict"
        )
    suboptions = spec["options"]
    if not isinstance(suboptions, Mapping) or not suboptions:
        raise JobDefinitionError(file, f"option {where}: 'options' must be a non-empty mapping")
    target.update(_options_schema(file, where, suboptions))


def _add_choices(file: Path, where: str, schema: dict[str, Any], spec: Mapping[str, Any]) -> None:
    """``choices`` as an ``enum`` (of the elements, for a list: Ansible checks every element)."""
    choices = spec["choices"]
    if not isinstance(choices, list) or not choices:
        raise JobDefinitionError(file, f"option {where}: 'choices' must be a non-empty list")
    if spec["type"] == "dict" or (spec["type"] == "list" and spec.get("elements") == "dict"):
        raise JobDefinitionError(file, f"option {where}: 'choices' is not supported for dicts")
    target = schema.setdefault("items", {}) if spec["type"] == "list" else schema
    for choice in choices:
        problem = _first_error(target, choice)
        if problem is not None:
            raise JobDefinitionError(
                file, f"option {where}: choice {choice!r} does not match the option's type: {problem}"
            )
    target["enum"] = list(choices)


def _add_default(file: Path, where: str, schema: dict[str, Any], default: Any) -> None:
    if default is None:
        # ``default: null`` means "not set": the option may also be written as null.
        if "type" in schema:
            schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    problem = _first_error(schema, default)
    if problem is not None:
        raise JobDefinitionError(
            file, f"option {where}: default {default!r} does not match the option's type: {problem}"
        )
    schema["default"] = copy.deepcopy(default)


def _options_schema(file: Path, where: str, options: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """``properties``/``required``/``additionalProperties`` for a set of options.

    ``where`` names the enclosing option in messages; ``prefix`` is prepended to names in messages.
    """
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, spec in options.items():
        if not isinstance(name, str) or not name:
            raise JobDefinitionError(file, f"option {name!r}{_in(where)}: the name must be a string")
        label = f"{where}.{name}" if where else f"{prefix}{name}"
        properties[name] = _option_schema(file, label, spec)
        if isinstance(spec, Mapping) and spec.get("required", False):
            required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def _in(where: str) -> str:
    return f" in {where}" if where else ""


def _apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """``value`` with the nested defaults of ``schema`` filled in (recursively, copies)."""
    if isinstance(value, dict) and "properties" in schema:
        result = {}
        for key, sub in schema["properties"].items():
            if key in value:
                result[key] = _apply_defaults(sub, value[key])
            elif "default" in sub:
                result[key] = _apply_defaults(sub, copy.deepcopy(sub["default"]))
        for key, item in value.items():  # keys the schema does not know (dict without options)
            if key not in result:
                result[key] = copy.deepcopy(item)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_apply_defaults(schema["items"], item) for item in value]
    return copy.deepcopy(value)


@dataclass(frozen=True)
class OptionProblem:
    """One problem of a job's settings, found by the job's option-check hook."""

    #: Keys and list indexes leading to the offending value inside the job's config section.
    path: tuple[str | int, ...]
    problem: str
    fix: str


def option_checks_file(role_dir: Path) -> Path:
    """Where a job's option-check hook lives: ``roles/<job>/filter_plugins/<job>_options.py``."""
    return role_dir / "filter_plugins" / f"{role_dir.name}_options.py"


@functools.cache
def _option_checks(file: Path) -> Any:
    """The hook's ``option_problems`` function (the file is imported once per process)."""
    try:
        spec = importlib.util.spec_from_file_location(f"pcswitcher_options_{file.parent.parent.name}", file)
        if spec is None or spec.loader is None:
            raise ImportError("not a Python file")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as exc:  # any error of a job's file is the job's
        raise JobDefinitionError(file, f"cannot load the option checks: {exc}") from exc
    checks = getattr(module, "option_problems", None)
    if not callable(checks):
        raise JobDefinitionError(file, "must define a function option_problems(settings)")
    return checks


def _option_problem(file: Path, item: object) -> OptionProblem:
    if not isinstance(item, Mapping):
        raise JobDefinitionError(file, f"option_problems returned {item!r}, not a mapping")
    path, problem, fix = item.get("path"), item.get("problem"), item.get("fix")
    if not isinstance(path, list | tuple) or not all(isinstance(p, str | int) for p in path):
        raise JobDefinitionError(
            file, f"option_problems: 'path' must be a list of keys and indexes: {item!r}"
        )
    if not isinstance(problem, str) or not isinstance(fix, str) or not problem or not fix:
        raise JobDefinitionError(file, f"option_problems: 'problem' and 'fix' must be strings: {item!r}")
    return OptionProblem(tuple(path), " ".join(problem.split()), " ".join(fix.split()))


@dataclass(frozen=True)
class JobSpec:
    """One discovered job."""

    name: str
    playbook: Path
    role_dir: Path
    description: str
    default_enabled: bool
    #: The argspec options of entry point ``main``, keyed by short name (``<job>_`` stripped).
    options: Mapping[str, Mapping[str, Any]]
    #: The summary templates of the declaration (pcswitcher/jobs/summary.py), None when not declared.
    summary: str | None = None
    summary_dry_run: str | None = None
    _schema: Mapping[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        file = self.role_dir / "meta" / "argument_specs.yml"
        schema = _options_schema(file, "", self.options, prefix=f"{self.name}_")
        object.__setattr__(self, "_schema", MappingProxyType(schema))

    def schema(self) -> dict[str, Any]:
        """The JSON schema (draft 2020-12) of the config section ``<job>:`` (a fresh copy)."""
        return {
            "$schema": JSON_SCHEMA_DIALECT,
            "title": self.name,
            "description": self.description,
            **copy.deepcopy(dict(self._schema)),
        }

    def defaults(self) -> dict[str, Any]:
        """Short option name -> its default (nested defaults applied). Required options are absent."""
        return _apply_defaults(self._schema, {})  # type: ignore[no-any-return]

    def required(self) -> list[str]:
        """Short names of the options that have no default and must be set."""
        return list(self._schema.get("required", []))

    def with_defaults(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """``settings`` (short names, already validated) with every default applied."""
        unknown = set(settings) - set(self.options)
        if unknown:
            raise ValueError(f"job {self.name}: unknown option(s) {', '.join(sorted(map(str, unknown)))}")
        return _apply_defaults(self._schema, dict(settings))  # type: ignore[no-any-return]

    def option_problems(self, settings: Mapping[str, Any]) -> list[OptionProblem]:
        """The problems the job's option-check hook finds in ``settings`` (short names, schema-valid,
        defaults applied); [] when the job has no hook. A hook that fails is the job's error."""
        file = option_checks_file(self.role_dir)
        if not file.is_file():
            return []
        checks = _option_checks(file)
        try:
            found = checks(copy.deepcopy(dict(settings)))
        except Exception as exc:  # any error of a job's file is the job's
            raise JobDefinitionError(file, f"option_problems failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(found, list):
            raise JobDefinitionError(file, f"option_problems must return a list, not {type(found).__name__}")
        return [_option_problem(file, item) for item in found]

    def extravars(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The extra vars ``{"<job>_<option>": value}`` for all options, defaults applied."""
        full = self.with_defaults(settings)
        missing = [name for name in self.required() if name not in full]
        if missing:
            raise ValueError(f"job {self.name}: required option(s) not set: {', '.join(missing)}")
        return {f"{self.name}_{short}": full[short] for short in self.options if short in full}


#: libyaml's loader when PyYAML has it: about ten times faster than the pure-Python one.
_FAST_SAFE_LOADER: type[yaml.CSafeLoader] | None = getattr(yaml, "CSafeLoader", None)


def load_yaml_text(text: str) -> Any:
    """``yaml.safe_load(text)``, parsed by libyaml when available, like Ansible reads a role's files.

    A document libyaml refuses is parsed again by PyYAML's own loader, so errors (and their
    messages) are always PyYAML's. (The user's config keeps PyYAML's loader: libyaml accepts
    some documents PyYAML refuses, e.g. a tab after ``key:``, and the config's errors must not change.)
    """
    if _FAST_SAFE_LOADER is not None:
        try:
            return yaml.load(text, Loader=_FAST_SAFE_LOADER)  # noqa: S506 (a safe loader)
        except yaml.YAMLError:
            pass
    return yaml.safe_load(text)


def _load_yaml(path: Path) -> Any:
    try:
        return load_yaml_text(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise JobDefinitionError(path, f"cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise JobDefinitionError(path, f"invalid YAML: {' '.join(str(exc).split())}") from exc


@dataclass(frozen=True)
class _Declaration:
    description: str
    default_enabled: bool
    summary: str | None
    summary_dry_run: str | None


def _load_declaration(path: Path) -> _Declaration:
    data = _load_yaml(path)
    if not isinstance(data, Mapping):
        raise JobDefinitionError(path, "must be a mapping with 'description' (and 'default_enabled')")
    unknown = set(data) - _DECLARATION_KEYS
    if unknown:
        raise JobDefinitionError(
            path,
            f"unknown key(s) {', '.join(sorted(map(str, unknown)))} "
            f"(allowed: {', '.join(sorted(_DECLARATION_KEYS))})",
        )
    description = data.get("description")
    if not isinstance(description, str) or not description.strip() or "\n" in description.strip():
        raise JobDefinitionError(path, "'description' must be a non-empty one-line string")
    default_enabled = data.get("default_enabled", True)
    if not isinstance(default_enabled, bool):
        raise JobDefinitionError(path, "'default_enabled' must be true or false")
    templates: dict[str, str | None] = {}
    for key in ("summary", "summary_dry_run"):
        template = data.get(key)
        problem = None if template is None else template_problem(template)
        if problem:
            raise JobDefinitionError(path, f"'{key}' {problem}")
        templates[key] = template.strip() if isinstance(template, str) else None
    return _Declaration(
        plain_text(description), default_enabled, templates["summary"], templates["summary_dry_run"]
    )


def _load_argspec(path: Path, name: str) -> dict[str, Mapping[str, Any]]:
    """The options of entry point ``main``, keyed by short name (names checked, specs copied)."""
    data = _load_yaml(path)
    specs = data.get("argument_specs") if isinstance(data, Mapping) else None
    main = specs.get("main") if isinstance(specs, Mapping) else None
    if not isinstance(main, Mapping):
        raise JobDefinitionError(path, "must define 'argument_specs: main:' (the role's entry point)")
    options = main.get("options")
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise JobDefinitionError(path, "'argument_specs.main.options' must be a mapping")
    prefix = f"{name}_"
    by_short: dict[str, Mapping[str, Any]] = {}
    for key, spec in options.items():
        short = key.removeprefix(prefix) if isinstance(key, str) else ""
        if not isinstance(key, str) or not key.startswith(prefix) or not _OPTION_NAME.match(short):
            raise JobDefinitionError(
                path, f"option {key!r}: must be named '{prefix}<option>' (lowercase letters, digits, _)"
            )
        if not isinstance(spec, Mapping):
            raise JobDefinitionError(path, f"option {key}: must be a mapping, not {type(spec).__name__}")
        by_short[short] = MappingProxyType(copy.deepcopy(dict(spec)))
    return by_short


def role_options_schema(role_dir: Path) -> dict[str, Any]:
    """The JSON schema of a role's argspec options (entry point ``main``), keyed by short name
    (``<role>_`` stripped): what a job's config section is made of, and the settings of the config
    sections that feed the infrastructure roles (pcswitcher/config/role_sections.py)."""
    file = role_dir / "meta" / "argument_specs.yml"
    options = _load_argspec(file, role_dir.name)
    return _options_schema(file, "", options, prefix=f"{role_dir.name}_")


def load_job(root: Path, name: str) -> JobSpec:
    """Load the job ``name`` from the project ``root`` (its three files must exist)."""
    role_dir = root / "roles" / name
    declaration = role_dir / "meta" / "pcswitcher.yml"
    if not _JOB_NAME.match(name) or name in _RESERVED_JOB_NAMES:
        raise JobDefinitionError(
            declaration,
            f"job name {name!r} is not allowed: use lowercase letters, digits and _ "
            f"(starting with a letter), not {', '.join(sorted(_RESERVED_JOB_NAMES))}",
        )
    declared = _load_declaration(declaration)
    options = _load_argspec(role_dir / "meta" / "argument_specs.yml", name)
    return JobSpec(
        name=name,
        playbook=root / "playbooks" / f"{name}.yml",
        role_dir=role_dir,
        description=declared.description,
        default_enabled=declared.default_enabled,
        options=MappingProxyType(options),
        summary=declared.summary,
        summary_dry_run=declared.summary_dry_run,
    )


def discover_jobs(root: Path) -> dict[str, JobSpec]:
    """All jobs of the project ``root`` (the folder holding ``playbooks/`` and ``roles/``), by name.

    A role is a job when ``playbooks/<name>.yml``, ``roles/<name>/meta/argument_specs.yml`` and
    ``roles/<name>/meta/pcswitcher.yml`` all exist. Raises :class:`JobDefinitionError` for a
    malformed job.
    """
    roles = root / "roles"
    if not roles.is_dir():
        return {}
    jobs: dict[str, JobSpec] = {}
    for role_dir in sorted(roles.iterdir(), key=lambda p: p.name):
        name = role_dir.name
        if not (
            (root / "playbooks" / f"{name}.yml").is_file()
            and (role_dir / "meta" / "argument_specs.yml").is_file()
            and (role_dir / "meta" / "pcswitcher.yml").is_file()
        ):
            continue
        jobs[name] = load_job(root, name)
    return jobs
