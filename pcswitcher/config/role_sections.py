"""The config sections that feed the infrastructure roles, generated from the roles' argspecs.

``snapshots:`` feeds ``roles/btrfs_snapshots`` and ``history:`` feeds ``roles/sync_history``. Like a
job's section, such a section is made from the role's ``meta/argument_specs.yml``: each setting names
the argspec option it sets, and the option gives its type, default, description and choices (the
default is declared there once; ``defaults/main.yml`` mirrors it). A setting's *form* says how it is
written when that differs from the option: an absolute path, a duration (``'7d'``) for a number of
seconds, a lower bound an argspec cannot state. A setting that is the driver's own (``snapshots.enabled``:
whether the role runs at all) is declared here with its schema.

Every other option of such a role, and of the roles with no config section (``cleanup``, ``carry``),
is set by the driver for each run (:data:`DRIVER_SET`) or always left at its default
(:data:`LEFT_AT_DEFAULT`); a test (tests/unit/test_role_sections.py) checks that every option of each
role is exactly one of the three.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcswitcher import paths
from pcswitcher.config import formats
from pcswitcher.config.units import duration_text, parse_duration
from pcswitcher.jobs.discovery import role_options_schema

__all__ = [
    "DRIVER_SET",
    "HISTORY",
    "LEFT_AT_DEFAULT",
    "SECTIONS",
    "SNAPSHOTS",
    "Form",
    "RoleSection",
    "Setting",
]


class Form:
    """How a setting is written when that is the option's own type (plus ``keywords``)."""

    def __init__(self, **keywords: Any) -> None:
        self.keywords = keywords

    def schema(self, option: Mapping[str, Any]) -> dict[str, Any]:
        """The setting's schema, made from the option's."""
        return {**copy.deepcopy(dict(option)), **copy.deepcopy(self.keywords)}

    def to_option(self, value: Any) -> Any:
        """The option's value for the setting's (validated) ``value``."""
        return value

    def from_option(self, value: Any) -> Any:
        """The setting's value for the option's ``value`` (its default as the config writes it)."""
        return value


class _AbsolutePaths(Form):
    """A list of absolute paths (at least one)."""

    def schema(self, option: Mapping[str, Any]) -> dict[str, Any]:
        schema = super().schema(option)
        schema["items"] = {**schema.get("items", {}), "format": formats.ABSOLUTE_PATH}
        schema["minItems"] = 1
        return schema


class _Duration(Form):
    """A number of seconds written as a duration (``'7d'``); null for the option's 0 (no limit)."""

    def schema(self, option: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "description": option["description"],
            "type": ["string", "null"],
            "format": formats.DURATION,
            "default": self.from_option(option["default"]),
        }

    def to_option(self, value: Any) -> Any:
        return 0 if value is None else parse_duration(value)

    def from_option(self, value: Any) -> Any:
        return None if value == 0 else duration_text(value)


PLAIN = Form()
ABSOLUTE_PATH = Form(format=formats.ABSOLUTE_PATH)
ABSOLUTE_PATHS = _AbsolutePaths()
DURATION = _Duration()


@dataclass(frozen=True)
class Setting:
    """One setting of a role section: ``key`` (dotted inside the section) sets the argspec ``option``
    (short name) and the options in ``also`` (the same value); ``own`` instead: the driver's own
    setting, this is its schema."""

    key: str
    option: str = ""
    form: Form = PLAIN
    also: tuple[str, ...] = ()
    own: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RoleSection:
    """The config section ``key`` that feeds ``role``."""

    key: str
    role: str
    description: str
    settings: tuple[Setting, ...]
    #: The description of each group of settings (the part of a key before its dot).
    groups: Mapping[str, str] = field(default_factory=dict)

    def options(self) -> Mapping[str, Any]:
        """The role's argspec options as JSON schemas, by short name."""
        return _role_options(paths.project_root() / "roles" / self.role)

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the section (nested groups are sections of their own)."""
        section = _object(self.description)
        options = self.options()
        for setting in self.settings:
            *group, name = setting.key.split(".")
            target = section
            for part in group:
                target = target["properties"].setdefault(part, _object(self.groups[part]))
            own = copy.deepcopy(dict(setting.own))
            target["properties"][name] = own or setting.form.schema(options[setting.option])
        return section

    def defaults(self) -> dict[str, Any]:
        """The section's values when the config does not set it (the argspec's defaults)."""
        return _defaults_of(self.schema())

    def option_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The role's extra vars ``<role>_<option>`` for the section's ``values`` (defaults applied)."""
        result: dict[str, Any] = {}
        for setting in self.settings:
            if setting.own:
                continue
            value: Any = values
            for part in setting.key.split("."):
                value = value[part]
            for option in (setting.option, *setting.also):
                result[f"{self.role}_{option}"] = setting.form.to_option(value)
        return result


def _defaults_of(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: _defaults_of(sub) if "properties" in sub else copy.deepcopy(sub["default"])
        for key, sub in schema["properties"].items()
    }


def _object(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "properties": {},
    }


@functools.cache
def _role_options(role_dir: Path) -> Mapping[str, Any]:
    return role_options_schema(role_dir)["properties"]  # type: ignore[no-any-return]


SNAPSHOTS = RoleSection(
    key="snapshots",
    role="btrfs_snapshots",
    description=(
        "Read-only btrfs snapshots of both machines before and after every sync (docs/safety.md). "
        "A target's inventory host vars pcswitcher_snapshots_subvolumes and "
        "pcswitcher_snapshots_location override the target values."
    ),
    settings=(
        Setting(
            "enabled",
            own={
                "description": "Take snapshots (false: no snapshot, no rollback; a warning at each sync).",
                "type": "boolean",
                "default": True,
            },
        ),
        Setting("subvolumes.source", "source_subvolumes", ABSOLUTE_PATHS),
        Setting("subvolumes.target", "subvolumes", ABSOLUTE_PATHS),
        Setting("location.source", "source_location", ABSOLUTE_PATH),
        Setting("location.target", "location", ABSOLUTE_PATH),
        Setting("keep", "keep", Form(minimum=1)),
        Setting("older_than", "older_than", DURATION),
        Setting("prune", "prune"),
    ),
    groups={
        "subvolumes": "The btrfs subvolumes to snapshot, by the path they are mounted at.",
        "location": (
            "The directory that holds the snapshots, one folder per session: on the same btrfs "
            "file system as the subvolumes, not inside one of them (created if missing)."
        ),
    },
)

HISTORY = RoleSection(
    key="history",
    role="sync_history",
    description=(
        "The sync history each machine keeps (last role, peer, session, time) to warn about a first "
        "sync or syncs out of order. A target's host var pcswitcher_history_path overrides the path."
    ),
    settings=(Setting("path", "path", ABSOLUTE_PATH, also=("source_path",)),),
)

#: The config sections that feed a role, in the order of the config file.
SECTIONS: tuple[RoleSection, ...] = (SNAPSHOTS, HISTORY)

#: The options of the infrastructure roles that the driver sets itself (what to do, on which
#: machine, for which session, with which files): role -> short option names.
DRIVER_SET: Mapping[str, frozenset[str]] = {
    "btrfs_snapshots": frozenset(
        {"action", "session", "source", "lock_path", "rollback_session", "checksum", "exclude"}
    ),
    "sync_history": frozenset({"action", "session", "source", "source_host", "target_host"}),
    "cleanup": frozenset({"run_id", "async_jids", "source"}),
    "carry": frozenset({"action", "config", "inventory", "link"}),
}

#: The options neither a setting nor the driver sets: their argspec default always holds (they are
#: there for a hand run of the playbook). Role -> short option names.
LEFT_AT_DEFAULT: Mapping[str, frozenset[str]] = {
    "btrfs_snapshots": frozenset({"target"}),
    "sync_history": frozenset({"target"}),
    "cleanup": frozenset(),
    "carry": frozenset({"app_dir", "timeout"}),
}
