"""The JSON schema of the config file (:func:`config_schema`).

Three kinds of sections: the driver's own settings (``log_level``, ``disk``, ``link_timeout``),
declared here once; the sections that feed an infrastructure role (``snapshots``, ``history``),
generated from the role's argspec (:mod:`pcswitcher.config.role_sections`); and one section per job,
generated from the job's argspec (:meth:`pcswitcher.jobs.discovery.JobSpec.schema`). ``jobs:`` lists the jobs
to run.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from pcswitcher.config import formats
from pcswitcher.config.role_sections import SECTIONS
from pcswitcher.jobs.discovery import JSON_SCHEMA_DIALECT, JobDefinitionError, JobSpec

__all__ = [
    "DEFAULT_DISK_PATHS",
    "DRIVER_SCHEMA",
    "JOBS_DESCRIPTION",
    "LOG_LEVELS",
    "config_schema",
    "global_schema",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

DEFAULT_DISK_PATHS = ("/", "/home")

JOBS_DESCRIPTION = (
    "The jobs to run, in this order: true runs the job, false skips it. Jobs not listed are not run."
)


def _threshold_schema(description: str, default: str) -> dict[str, Any]:
    # No "type": a bare number must get the threshold message, not a type error.
    return {"description": description, "format": formats.THRESHOLD, "default": default}


def _paths_schema(description: str, default: Sequence[str]) -> dict[str, Any]:
    return {
        "description": description,
        "type": "array",
        "items": {"type": "string", "format": formats.ABSOLUTE_PATH},
        "minItems": 1,
        "default": list(default),
    }


#: The driver's own settings, in the order of the file.
DRIVER_SCHEMA: Mapping[str, Any] = {
    "log_level": {
        "description": "How much is logged (DEBUG, INFO, WARNING, ERROR, CRITICAL).",
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "properties": {
            "file": {
                "description": "Level of the log file of each run.",
                "type": "string",
                "enum": list(LOG_LEVELS),
                "default": "DEBUG",
            },
            "terminal": {
                "description": "Level of the log lines shown in the terminal.",
                "type": "string",
                "enum": list(LOG_LEVELS),
                "default": "INFO",
            },
        },
    },
    "disk": {
        "description": (
            "Free disk space checks. A threshold is a percentage of the file system ('20%') "
            "or a size ('50GiB', '500MB'; KB = 1000 bytes, K = KiB = 1024 bytes)."
        ),
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "properties": {
            "preflight_minimum": _threshold_schema(
                "Free space needed on every watched path before the sync starts.", "20%"
            ),
            "warning_threshold": _threshold_schema(
                "Warn (once) when free space falls below this during the sync.", "15%"
            ),
            "runtime_minimum": _threshold_schema("Abort the sync when free space falls below this.", "5%"),
            "interval": {
                "description": (
                    "Seconds between two free space checks during the sync (> 0). They are also the "
                    "heartbeat: they come at least twice per link_timeout, whatever this says."
                ),
                "type": "number",
                "exclusiveMinimum": 0,
                "default": 1,
            },
            "paths": {
                "description": "Mount points or paths whose file systems are watched.",
                "type": "object",
                "additionalProperties": False,
                "default": {},
                "properties": {
                    "source": _paths_schema(
                        "Absolute paths watched on the source (this machine): the filesystems that "
                        "hold the synced data; a path not there yet counts as its nearest parent.",
                        DEFAULT_DISK_PATHS,
                    ),
                    "target": _paths_schema("Absolute paths watched on the target.", DEFAULT_DISK_PATHS),
                },
            },
        },
    },
    "link_timeout": {
        "description": "Seconds without a heartbeat from the target before the sync is aborted (> 0).",
        "type": "number",
        "exclusiveMinimum": 0,
        "default": 5,
    },
}


def global_schema() -> dict[str, Any]:
    """The global settings (everything but ``jobs`` and the job sections), in the order of the file."""
    return {
        **copy.deepcopy(dict(DRIVER_SCHEMA)),
        **{section.key: section.schema() for section in SECTIONS},
    }


def config_schema(jobs: Mapping[str, JobSpec]) -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of the whole config file for the discovered ``jobs``."""
    globals_ = global_schema()
    clashes = sorted(set(jobs) & ({"jobs"} | set(globals_)))
    if clashes:
        spec = jobs[clashes[0]]
        raise JobDefinitionError(spec.role_dir, f"job name {spec.name!r} clashes with a global config key")
    properties: dict[str, Any] = {
        "jobs": {
            "description": JOBS_DESCRIPTION,
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {
                name: {"description": spec.description, "type": "boolean"} for name, spec in jobs.items()
            },
        },
        **globals_,
    }
    for name, spec in jobs.items():
        section = spec.schema()
        section.pop("$schema", None)
        section["description"] = f"Settings of the job {name}: {spec.description}"
        section["default"] = {}
        properties[name] = section
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "pc-switcher configuration",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
