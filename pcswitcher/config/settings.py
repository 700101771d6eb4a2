"""The user's config file, loaded: :func:`load_config` reads, validates and returns a :class:`Config`.

The config is YAML, validated with a JSON schema (:mod:`pcswitcher.config.schema`). Every error is a
:class:`~pcswitcher.errors.ConfigError` whose message is one line ``<file>:<line>:<col>: <problem>``
and whose hint names the fix (:mod:`pcswitcher.config.located`). Each job's section ``<job>:`` is
validated against the schema made from the job's argument spec, and its option-check hook
(:meth:`pcswitcher.jobs.discovery.JobSpec.option_problems`) runs on it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcswitcher.config.file import read_config_file
from pcswitcher.config.formats import format_checker
from pcswitcher.config.located import Marks, Problem, config_error, describe, where
from pcswitcher.config.role_sections import HISTORY, SNAPSHOTS
from pcswitcher.config.schema import config_schema, global_schema
from pcswitcher.config.units import Threshold, parse_threshold, show_value
from pcswitcher.errors import ConfigError
from pcswitcher.jobs.discovery import JobSpec, strict_validator

__all__ = ["Config", "DiskConfig", "HistoryConfig", "JobConfig", "SnapshotsConfig", "load_config"]


@dataclass(frozen=True)
class DiskConfig:
    preflight_minimum: Threshold
    warning_threshold: Threshold
    runtime_minimum: Threshold
    interval: float
    source_paths: tuple[str, ...]
    target_paths: tuple[str, ...]


def _snapshots_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of :class:`SnapshotsConfig` for the ``snapshots:`` section (defaults applied)."""
    option = {name.removeprefix("btrfs_snapshots_"): v for name, v in SNAPSHOTS.option_values(values).items()}
    return {
        "enabled": bool(values["enabled"]),
        "source_subvolumes": tuple(option["source_subvolumes"]),
        "target_subvolumes": tuple(option["subvolumes"]),
        "source_location": option["source_location"],
        "target_location": option["location"],
        "keep": int(option["keep"]),
        "older_than": option["older_than"] or None,
        "prune": bool(option["prune"]),
    }


@functools.cache
def _defaults(key: str) -> Mapping[str, Any]:
    """The loaded config's fields of a role section the config does not set (from the argspec)."""
    if key == SNAPSHOTS.key:
        return _snapshots_fields(SNAPSHOTS.defaults())
    return {"path": HISTORY.defaults()["path"]}


def _default(key: str, name: str) -> Any:
    """A field whose default is the field ``name`` of :func:`_defaults` (the argspec is read at first use)."""

    def make() -> Any:
        return _defaults(key)[name]

    return field(default_factory=make)


@dataclass(frozen=True)
class SnapshotsConfig:
    """The ``snapshots:`` section (docs/safety.md); its defaults are btrfs_snapshots' argspec's."""

    enabled: bool = _default("snapshots", "enabled")
    source_subvolumes: tuple[str, ...] = _default("snapshots", "source_subvolumes")
    target_subvolumes: tuple[str, ...] = _default("snapshots", "target_subvolumes")
    source_location: str = _default("snapshots", "source_location")
    target_location: str = _default("snapshots", "target_location")
    keep: int = _default("snapshots", "keep")
    #: Seconds, or None for no age limit.
    older_than: int | None = _default("snapshots", "older_than")
    #: Apply keep/older_than after every successful sync (docs/safety.md#pruning).
    prune: bool = _default("snapshots", "prune")


@dataclass(frozen=True)
class HistoryConfig:
    """The ``history:`` section; its default is sync_history's argspec's."""

    path: str = _default("history", "path")


@dataclass(frozen=True)
class JobConfig:
    name: str
    enabled: bool
    #: Short option names -> values, argspec defaults applied.
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class Config:
    path: Path
    #: The jobs listed in ``jobs:``, in config order (= run order), enabled or not.
    jobs: tuple[JobConfig, ...]
    disk: DiskConfig
    link_timeout: float
    file_log_level: str
    terminal_log_level: str
    snapshots: SnapshotsConfig = field(default_factory=SnapshotsConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)

    def enabled_jobs(self) -> list[JobConfig]:
        return [job for job in self.jobs if job.enabled]


def load_config(path: Path, jobs: Mapping[str, JobSpec]) -> Config:
    """Read and validate the config file ``path`` against the discovered ``jobs``.

    Raises :class:`ConfigError` (one-line message ``<file>:<line>:<col>: ...`` and a hint) for the
    first problem in file order, mentioning how many more there are; its ``problems`` lists them all.
    """
    data, marks, problems = read_config_file(path)
    if not isinstance(data, dict):
        line, column = marks.at(())
        raise ConfigError(
            f"{path}:{line}:{column}: the config must be a mapping of settings, not {show_value(data)}",
            "start from the file `pc-switcher init` writes (keys: jobs, log_level, disk, link_timeout)",
        )
    schema = config_schema(jobs)
    _null_sections_to_empty(data, schema, jobs)
    validator = strict_validator()(schema, format_checker=format_checker())
    for error in validator.iter_errors(data):
        problems.extend(describe(error, jobs, marks))
    problems.extend(_unset_required(data, jobs, marks))
    # The jobs' own option checks (their hooks), for each section that matches its schema.
    problems.extend(_job_option_problems(data, jobs, marks, {p.path[0] for p in problems if p.path}))
    if problems:
        raise config_error(path, problems)
    return _config(path, data, jobs)


def _config(path: Path, data: Mapping[str, Any], jobs: Mapping[str, JobSpec]) -> Config:
    """The loaded config of the valid ``data``."""
    full = _with_defaults({"properties": global_schema()}, data)
    disk = full["disk"]
    job_configs = tuple(
        JobConfig(name=name, enabled=enabled, settings=jobs[name].with_defaults(data.get(name) or {}))
        for name, enabled in (data.get("jobs") or {}).items()
    )
    return Config(
        path=path,
        jobs=job_configs,
        disk=DiskConfig(
            preflight_minimum=parse_threshold(disk["preflight_minimum"]),
            warning_threshold=parse_threshold(disk["warning_threshold"]),
            runtime_minimum=parse_threshold(disk["runtime_minimum"]),
            interval=float(disk["interval"]),
            source_paths=tuple(disk["paths"]["source"]),
            target_paths=tuple(disk["paths"]["target"]),
        ),
        link_timeout=float(full["link_timeout"]),
        file_log_level=full["log_level"]["file"],
        terminal_log_level=full["log_level"]["terminal"],
        snapshots=SnapshotsConfig(**_snapshots_fields(full["snapshots"])),
        history=HistoryConfig(path=full["history"]["path"]),
    )


def _null_sections_to_empty(
    data: dict[Any, Any], schema: Mapping[str, Any], jobs: Mapping[str, JobSpec]
) -> None:
    """A section whose entries are all commented out (``disk:`` alone) is an empty mapping; so is
    such a group inside a global section (``snapshots: location:``)."""
    for key, sub in schema["properties"].items():
        if sub.get("type") == "object" and key in data and data[key] is None:
            data[key] = {}
        value = data.get(key)
        if key in jobs or key == "jobs" or not isinstance(value, dict):
            continue
        for name, group in sub.get("properties", {}).items():
            if group.get("type") == "object" and name in value and value[name] is None:
                value[name] = {}


def _with_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    if isinstance(value, dict) and "properties" in schema:
        result = dict(value)
        for key, sub in schema["properties"].items():
            result[key] = _with_defaults(sub, result[key] if key in result else copy.deepcopy(sub["default"]))
        return result
    return value


def _job_option_problems(
    data: Mapping[str, Any], jobs: Mapping[str, JobSpec], marks: Marks, skip: set[Any]
) -> list[Problem]:
    """What each job's option-check hook finds in its section (every job with a section or enabled),
    but for the jobs in ``skip`` (their section does not match its schema: the hook expects one that
    does)."""
    listed: Mapping[str, Any] = data["jobs"] if isinstance(data.get("jobs"), dict) else {}
    problems = []
    for name, spec in jobs.items():
        section = data.get(name) or {}
        if name in skip or any(option not in section for option in spec.required()):
            continue  # the hook gets settings that match the schema, required options set
        if name in data or listed.get(name) is True:
            for found in spec.option_problems(spec.with_defaults(section)):
                path = (name, *found.path)
                line, column = marks.at(path)
                problems.append(Problem(line, column, f"{where(path)}: {found.problem}", found.fix, path))
    return problems


def _unset_required(data: Mapping[str, Any], jobs: Mapping[str, JobSpec], marks: Marks) -> list[Problem]:
    """An enabled job without a section still needs its required options."""
    listed = data.get("jobs")
    problems = []
    for name, enabled in listed.items() if isinstance(listed, dict) else ():
        if enabled is True and name in jobs and name not in data and jobs[name].required():
            option = jobs[name].required()[0]
            line, column = marks.at(("jobs", name), key=True)
            description = jobs[name].options[option].get("description", "")
            problems.append(
                Problem(
                    line,
                    column,
                    f"job {name!r} is enabled but its option {option!r} has no default and is not set",
                    f"add a section `{name}:` with `{option}: ...` ({description}), or disable the job",
                    ("jobs", name),
                )
            )
    return problems
