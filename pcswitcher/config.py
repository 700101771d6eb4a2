"""The user's config file: schema, loading with precise error locations, and the default text.

The config is YAML, validated with a JSON schema (:func:`config_schema`). Every error is a
:class:`~pcswitcher.errors.ConfigError` whose message is one line ``<file>:<line>:<col>: <problem>``
and whose hint names the fix. Each job's section ``<job>:`` is validated against the schema made
from the job's argument spec (:meth:`pcswitcher.jobs.JobSpec.schema`).
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import math
import os
import posixpath
import re
import shlex
import stat
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from . import paths
from .errors import ConfigError
from .jobs import JobDefinitionError, JobSpec, strict_validator

if TYPE_CHECKING:
    from jsonschema import FormatChecker, ValidationError

__all__ = [
    "LOG_LEVELS",
    "Config",
    "DiskConfig",
    "HistoryConfig",
    "JobConfig",
    "SnapshotsConfig",
    "Threshold",
    "config_schema",
    "default_config_text",
    "example_inventory_text",
    "load_config",
    "parse_duration",
    "parse_threshold",
    "path_problem",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# --------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------

_UNITS: Mapping[str, int] = {
    "B": 1,
    **{f"{p}": 1024 ** (i + 1) for i, p in enumerate("KMGT")},
    **{f"{p}B": 1000 ** (i + 1) for i, p in enumerate("KMGT")},
    **{f"{p}iB": 1024 ** (i + 1) for i, p in enumerate("KMGT")},
}
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([A-Za-z]+)$")
_THRESHOLD_FORMS = (
    "a percentage of the file system like '20%' or a size like '50GiB', '500MB', '1.5TiB', '100K' "
    "(B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB; KB = 1000 bytes, K = KiB = 1024 bytes)"
)


@dataclass(frozen=True)
class Threshold:
    """Free space needed: a percentage of the file system or an absolute size in bytes."""

    text: str
    percent: float | None
    size: int | None

    def breached(self, free: int, total: int) -> bool:
        """True when ``free`` bytes (of ``total``) is below the threshold."""
        if self.percent is not None:
            return free * 100 < self.percent * total
        return free < (self.size or 0)

    def __str__(self) -> str:
        return self.text

    def as_var(self) -> dict[str, Any]:
        """The threshold as a job's extra var: ``{"percent": 5.0, "text": "5%"}`` or
        ``{"bytes": 80000000, "text": "80MB"}`` (docs/job-contract.md)."""
        if self.percent is not None:
            return {"percent": self.percent, "text": self.text}
        return {"bytes": self.size or 0, "text": self.text}


def parse_threshold(text: object) -> Threshold:
    """Parse ``"20%"`` or ``"50GiB"``; raises :class:`ValueError` with a message naming the forms."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"expected {_THRESHOLD_FORMS}, got {_show(text)}")
    if isinstance(text, (int, float)) or re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", text):
        raise ValueError(f"a bare number ({text}) is ambiguous: write {_THRESHOLD_FORMS}")
    value = text.strip()
    match = _PERCENT.match(value)
    if match:
        percent = float(match.group(1))
        if percent > 100:
            raise ValueError(f"a percentage must be between 0% and 100%, got {text!r}")
        return Threshold(text=text, percent=percent, size=None)
    match = _SIZE.match(value)
    if match:
        unit = match.group(2)
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r} in {text!r}: write {_THRESHOLD_FORMS}")
        return Threshold(text=text, percent=None, size=int(Decimal(match.group(1)) * _UNITS[unit]))
    raise ValueError(f"{text!r} is not a threshold: write {_THRESHOLD_FORMS}")


_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_DURATION_UNITS: Mapping[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_FORMS = "a number and a unit like '7d', '12h', '30m', '2w' or '90s'"


def parse_duration(text: object) -> int:
    """Parse ``"7d"`` (s, m, h, d, w) into seconds; raises :class:`ValueError` naming the forms."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{_show(text)} is not a duration: write {_DURATION_FORMS}")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


# --------------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------------

_THRESHOLD_FORMAT = "pcswitcher-threshold"
_DURATION_FORMAT = "pcswitcher-duration"
_ABSPATH_FORMAT = "pcswitcher-absolute-path"


def _check_threshold(instance: object) -> bool:
    parse_threshold(instance)
    return True


def _check_duration(instance: object) -> bool:
    if instance is not None:
        parse_duration(instance)
    return True


def path_problem(text: str) -> str | None:
    """Why ``text`` is not an absolute, normalised path of printable characters (None: it is).

    An allowlist: every character printable (a space is; a control character, a line or paragraph
    separator or an invisible format character is not), the path starts with ``/``, and it is already
    in normal form (no ``.`` or ``..`` component, no ``//``; one trailing ``/`` is allowed).
    """
    bad = next((c for c in text if not c.isprintable()), None)
    if bad is not None:
        return (
            f"{text!r} contains U+{ord(bad):04X}, a control or invisible character "
            "(a path is one line of printable characters)"
        )
    if not text.startswith("/"):
        return f"{text!r} is not an absolute path (it must start with /)"
    normal = posixpath.normpath(text)
    if normal.startswith("//"):  # POSIX keeps a leading "//"
        normal = "/" + normal.lstrip("/")
    if text.rstrip("/") != normal.rstrip("/") or text.endswith("//"):
        return f"{text!r} is not a normalised path (no '.', '..' or '//' in it): write {normal!r}"
    return None


def _check_abspath(instance: object) -> bool:
    problem = path_problem(instance) if isinstance(instance, str) else None
    if problem is not None:
        raise ValueError(problem)
    return True


#: The formats of the schema: name -> check (true, or raises ValueError naming the problem).
_FORMATS: Mapping[str, Callable[[object], bool]] = {
    _THRESHOLD_FORMAT: _check_threshold,
    _DURATION_FORMAT: _check_duration,
    _ABSPATH_FORMAT: _check_abspath,
}


@functools.cache
def _format_checker() -> FormatChecker:
    """jsonschema's checker of exactly :data:`_FORMATS` (jsonschema is imported only when needed)."""
    from jsonschema import FormatChecker

    checker = FormatChecker(())
    for name, check in _FORMATS.items():
        checker.checks(name, raises=ValueError)(check)
    return checker


def _threshold_schema(description: str, default: str) -> dict[str, Any]:
    # No "type": a bare number must get the threshold message, not a type error.
    return {"description": description, "format": _THRESHOLD_FORMAT, "default": default}


DEFAULT_DISK_PATHS = ("/", "/home")


def _paths_schema(description: str, default: Sequence[str] = ("/",), min_items: int = 1) -> dict[str, Any]:
    return {
        "description": description,
        "type": "array",
        "items": {"type": "string", "format": _ABSPATH_FORMAT},
        "minItems": min_items,
        "default": list(default),
    }


def _path_schema(description: str, default: str) -> dict[str, Any]:
    return {"description": description, "type": "string", "format": _ABSPATH_FORMAT, "default": default}


#: Defaults of the ``snapshots:`` and ``history:`` sections (docs/safety.md).
DEFAULT_SNAPSHOT_SUBVOLUMES = ("/home",)
DEFAULT_SNAPSHOT_LOCATION = "/.snapshots/pc-switcher"
DEFAULT_SNAPSHOT_KEEP = 10
DEFAULT_HISTORY_PATH = "/root/.local/state/pc-switcher/history.json"


#: The global settings (everything but ``jobs`` and the job sections), in the order of the file.
GLOBAL_SCHEMA: Mapping[str, Any] = {
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
    "snapshots": {
        "description": (
            "Read-only btrfs snapshots of both machines before and after every sync (docs/safety.md). "
            "A target's inventory host vars pcswitcher_snapshots_subvolumes and "
            "pcswitcher_snapshots_location override the target values."
        ),
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "properties": {
            "enabled": {
                "description": "Take snapshots (false: no snapshot, no rollback; a warning at each sync).",
                "type": "boolean",
                "default": True,
            },
            "subvolumes": {
                "description": "The btrfs subvolumes to snapshot, by the path they are mounted at.",
                "type": "object",
                "additionalProperties": False,
                "default": {},
                "properties": {
                    "source": _paths_schema(
                        "Subvolumes of the source (this machine).", DEFAULT_SNAPSHOT_SUBVOLUMES
                    ),
                    "target": _paths_schema("Subvolumes of the target.", DEFAULT_SNAPSHOT_SUBVOLUMES),
                },
            },
            "location": {
                "description": (
                    "The directory that holds the snapshots, one folder per session: on the same btrfs "
                    "file system as the subvolumes, not inside one of them (created if missing)."
                ),
                "type": "object",
                "additionalProperties": False,
                "default": {},
                "properties": {
                    "source": _path_schema("Snapshot location on the source.", DEFAULT_SNAPSHOT_LOCATION),
                    "target": _path_schema("Snapshot location on the target.", DEFAULT_SNAPSHOT_LOCATION),
                },
            },
            "keep": {
                "description": (
                    "The prune after each sync and `snapshots cleanup` keep the snapshots of this many "
                    "newest sessions (>= 1)."
                ),
                "type": "integer",
                "minimum": 1,
                "default": DEFAULT_SNAPSHOT_KEEP,
            },
            "older_than": {
                "description": (
                    "The prune after each sync and `snapshots cleanup` also delete sessions older than this "
                    "('7d', '12h'); null: no age limit. The newest session is never deleted."
                ),
                "type": ["string", "null"],
                "format": _DURATION_FORMAT,
                "default": None,
            },
            "prune": {
                "description": (
                    "After every successful sync, delete the sessions beyond `keep` / `older_than` on both "
                    "machines (never the session just taken, nor the newest with pre-sync snapshots: the "
                    "one a rollback uses). false: only `snapshots cleanup` deletes sessions."
                ),
                "type": "boolean",
                "default": True,
            },
        },
    },
    "history": {
        "description": (
            "The sync history each machine keeps (last role, peer, session, time) to warn about a first "
            "sync or syncs out of order. A target's host var pcswitcher_history_path overrides the path."
        ),
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "properties": {
            "path": _path_schema(
                "The history file on both machines (keep it outside the snapshotted subvolumes).",
                DEFAULT_HISTORY_PATH,
            ),
        },
    },
}

_JOBS_DESCRIPTION = (
    "The jobs to run, in this order: true runs the job, false skips it. Jobs not listed are not run."
)


def config_schema(jobs: Mapping[str, JobSpec]) -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of the whole config file for the discovered ``jobs``."""
    clashes = sorted(set(jobs) & ({"jobs"} | set(GLOBAL_SCHEMA)))
    if clashes:
        spec = jobs[clashes[0]]
        raise JobDefinitionError(spec.role_dir, f"job name {spec.name!r} clashes with a global config key")
    properties: dict[str, Any] = {
        "jobs": {
            "description": _JOBS_DESCRIPTION,
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {
                name: {"description": spec.description, "type": "boolean"} for name, spec in jobs.items()
            },
        },
        **copy.deepcopy(dict(GLOBAL_SCHEMA)),
    }
    for name, spec in jobs.items():
        section = spec.schema()
        section.pop("$schema", None)
        section["description"] = f"Settings of the job {name}: {spec.description}"
        section["default"] = {}
        properties[name] = section
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "pc-switcher configuration",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }


# --------------------------------------------------------------------------------------------
# The loaded config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskConfig:
    preflight_minimum: Threshold
    warning_threshold: Threshold
    runtime_minimum: Threshold
    interval: float
    source_paths: tuple[str, ...]
    target_paths: tuple[str, ...]


@dataclass(frozen=True)
class SnapshotsConfig:
    enabled: bool = True
    source_subvolumes: tuple[str, ...] = DEFAULT_SNAPSHOT_SUBVOLUMES
    target_subvolumes: tuple[str, ...] = DEFAULT_SNAPSHOT_SUBVOLUMES
    source_location: str = DEFAULT_SNAPSHOT_LOCATION
    target_location: str = DEFAULT_SNAPSHOT_LOCATION
    keep: int = DEFAULT_SNAPSHOT_KEEP
    #: Seconds, or None for no age limit.
    older_than: int | None = None
    #: Apply keep/older_than after every successful sync (docs/safety.md#pruning).
    prune: bool = True


@dataclass(frozen=True)
class HistoryConfig:
    path: str = DEFAULT_HISTORY_PATH


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
    snapshots: SnapshotsConfig = SnapshotsConfig()
    history: HistoryConfig = HistoryConfig()

    def enabled_jobs(self) -> list[JobConfig]:
        return [job for job in self.jobs if job.enabled]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_JsonPath = tuple[Any, ...]
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class _Problem:
    line: int  # 1-based
    column: int  # 1-based
    message: str
    hint: str
    path: _JsonPath = ()
    priority: int = 0


class _Marks:
    """JSON path -> where its value (and its key) start in the file."""

    def __init__(self) -> None:
        self.values: dict[_JsonPath, yaml.Mark] = {}
        self.keys: dict[_JsonPath, yaml.Mark] = {}

    def at(self, path: _JsonPath, *, key: bool = False) -> tuple[int, int]:
        """1-based line and column of ``path`` (its key if ``key``), or of its closest ancestor."""
        for cut in range(len(path), -1, -1):
            sub = path[:cut]
            mark = (self.keys.get(sub) if key else None) or self.values.get(sub)
            if mark is not None:
                return mark.line + 1, mark.column + 1
        return 1, 1


def _show(value: object) -> str:
    """A value as the user wrote it (YAML-ish)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan (not a number)" if math.isnan(value) else f"{'-' if value < 0 else ''}.inf (infinity)"
    return str(value)


def _where(path: _JsonPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) and not isinstance(part, bool) else f".{part}"
    return text.lstrip(".") or "the config"


def _suggest(word: object, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` (ignoring case), or ``""``."""
    by_lower = {str(choice).lower(): str(choice) for choice in choices}
    close = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


#: The largest config file read (a config is a few KiB; the default one about 10 KiB).
MAX_CONFIG_BYTES = 1024 * 1024
#: The most values a config may hold, each alias counted as often as it is used: bounds the
#: work and memory a file of YAML aliases (a "billion laughs") could ask for.
MAX_CONFIG_NODES = 20_000


def _open_regular(path: Path) -> int:
    """Open ``path`` for reading if it is a regular file (never blocks on a FIFO or a device)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}:1:1: the config file does not exist", paths.init_hint("-c", path)
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{path}:1:1: cannot read the config file: {exc.strerror or exc}",
            "check its permissions (it must be readable by you)",
        ) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = (
            "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file (a device, FIFO or socket)"
        )
        raise ConfigError(f"{path}:1:1: the config path is {kind}", "give the path of a config file")
    return fd


def _read(path: Path) -> str:
    fd = _open_regular(path)
    try:
        with os.fdopen(fd, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"{path}:1:1: cannot read the config file: {exc.strerror or exc}",
            "check that it is a readable file",
        ) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}:1:1: the config file is larger than {MAX_CONFIG_BYTES // 1024} KiB",
            "give the pc-switcher config file (a few KiB), not another file",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"{path}:{line}:{column}: the config file is not UTF-8 text", "save it as UTF-8"
        ) from None


def _expanded_size(root: Node, limit: int) -> tuple[int, Node | None]:
    """The number of values the document holds once every alias is expanded (counting stops past
    ``limit``), and an alias that refers to a collection containing it (a cycle), if any."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in open_nodes:
            raise _Cycle(node)
        open_nodes.add(id(node))
        total = 1
        if isinstance(node, SequenceNode):
            children: list[Node] = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            total = min(total + size(child), limit + 1)
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    try:
        return size(root), None
    except _Cycle as cycle:
        return 0, cycle.node
    except RecursionError:  # nested deeper than Python's stack: no config is
        return limit + 1, None


class _Cycle(Exception):
    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node


def _check_size(path: Path, root: Node) -> None:
    count, cycle = _expanded_size(root, MAX_CONFIG_NODES)
    if cycle is not None:
        mark = cycle.start_mark
        raise ConfigError(
            f"{path}:{mark.line + 1}:{mark.column + 1}: a YAML alias refers to a list or mapping "
            "that contains it (an endless value)",
            "write the values out instead of the alias (*name)",
        )
    if count > MAX_CONFIG_NODES:
        raise ConfigError(
            f"{path}:1:1: the config holds more than {MAX_CONFIG_NODES} values once its YAML aliases "
            "are expanded",
            "write the settings out without nested aliases (*name); a config needs far fewer values",
        )


def _yaml_error(path: Path, text: str, exc: yaml.YAMLError) -> ConfigError:
    line, column = 1, 1
    what = " ".join(str(exc).split())
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            line, column = mark.line + 1, mark.column + 1
        what = " ".join(p for p in (exc.context, exc.problem) if p) or what
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        what = f"the character U+{code:04X} is not allowed"
    return ConfigError(
        f"{path}:{line}:{column}: invalid YAML: {what}",
        "fix the YAML syntax at that place (indent with spaces, quote values containing ': ' or '#')",
    )


def _key_of(loader: yaml.SafeLoader, node: Node) -> Any:
    if isinstance(node, ScalarNode):
        return loader.construct_object(node, deep=True)
    return None


def _find_duplicates(loader: yaml.SafeLoader, root: Node) -> list[_Problem]:
    """Keys written twice in a mapping (PyYAML silently keeps the last one)."""
    problems: list[_Problem] = []
    seen_nodes: set[int] = set()

    def walk(node: Node, path: _JsonPath) -> None:
        if id(node) in seen_nodes:
            return
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[tuple[str, str], yaml.Mark] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                if isinstance(key_node, ScalarNode):
                    ident = (key_node.tag, key_node.value)
                    key = _key_of(loader, key_node)
                    if ident in first:
                        mark = key_node.start_mark
                        problems.append(
                            _Problem(
                                mark.line + 1,
                                mark.column + 1,
                                f"duplicate key {key!r} in {_where(path)} "
                                f"(first defined at line {first[ident].line + 1})",
                                "remove one of the two: YAML would silently keep only the last one",
                                (*path, key),
                                priority=-1,
                            )
                        )
                    else:
                        first[ident] = key_node.start_mark
                    walk(value_node, (*path, key))
                else:
                    walk(value_node, (*path, None))
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    walk(root, ())
    return problems


def _collect_marks(loader: yaml.SafeLoader, root: Node) -> _Marks:
    marks = _Marks()
    seen: set[int] = set()

    def walk(node: Node, path: _JsonPath) -> None:
        marks.values[path] = node.start_mark
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:  # merges are flattened by now; last one wins
                key = _key_of(loader, key_node)
                try:
                    hash(key)
                except TypeError:
                    continue
                marks.keys[(*path, key)] = key_node.start_mark
                walk(value_node, (*path, key))
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    walk(root, ())
    return marks


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "nothing",
}


def _schema_at(schema: Mapping[str, Any], path: _JsonPath) -> Mapping[str, Any]:
    """The subschema of the value at ``path`` (following properties and items)."""
    node: Mapping[str, Any] = schema
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool) and "items" in node:
            node = node["items"]
        elif "properties" in node and part in node["properties"]:
            node = node["properties"][part]
        else:
            return {}
    return node


def _describe(error: ValidationError, jobs: Mapping[str, JobSpec], marks: _Marks) -> Iterator[_Problem]:
    """Turn one jsonschema error into problems with a location, a one-line message and a hint."""
    path: _JsonPath = tuple(error.absolute_path)
    where = _where(path)
    kind = error.validator
    expected: Any = error.validator_value
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    in_job = path[0] if path and path[0] in jobs else None
    about = f" ({schema['description']})" if isinstance(schema.get("description"), str) else ""

    if kind == "additionalProperties" and isinstance(error.instance, Mapping):
        known = list(schema.get("properties", {}))
        for key in error.instance:
            if key in known:
                continue
            line, column = marks.at((*path, key), key=True)
            if not path:
                message = f"unknown top-level key {key!r}{_suggest(key, known)}"
                globals_ = ", ".join(k for k in known if k not in jobs)
                job_names = ", ".join(jobs) or "none"
                hint = f"valid keys are {globals_} and a section per job ({job_names})"
            elif path == ("jobs",):
                message = f"unknown job {key!r} in jobs{_suggest(key, known)}"
                hint = f"known jobs: {', '.join(known) or 'none (no job was found)'}"
            elif in_job is not None and len(path) == 1:
                message = f"unknown option {key!r} for job {in_job!r}{_suggest(key, known)}"
                hint = f"options of {in_job}: {', '.join(known) or 'none'}"
            else:
                message = f"unknown key {key!r} in {where}{_suggest(key, known)}"
                hint = f"valid keys in {where}: {', '.join(known) or 'none'}"
            yield _Problem(line, column, message, hint, (*path, key))
        return

    line, column = marks.at(path)
    if kind == "type":
        names = [expected] if isinstance(expected, str) else [t for t in expected if t != "null"]
        want = " or ".join(_TYPE_NAMES.get(t, t) for t in names)
        if path[:1] == ("jobs",) and len(path) == 2:
            message = f"{where}: expected true or false (run the job or not), got {_show(error.instance)}"
            hint = f"write `{path[1]}: true` to run the job or `{path[1]}: false` to skip it"
        else:
            message = f"{where}: expected {want}, got {_show(error.instance)}"
            hint = f"write {want} for {where}{about}"
            if want == "an integer" and isinstance(error.instance, str):
                hint += "; write the number without quotes"
        yield _Problem(line, column, message, hint, path, priority=1)
    elif kind == "enum":
        choices = [c for c in expected if c is not None]
        shown = ", ".join(_show(c) if not isinstance(c, str) else c for c in choices)
        message = f"{where}: {_show(error.instance)} is not one of {shown}"
        strings = [c for c in choices if isinstance(c, str)]
        message += _suggest(error.instance, strings) if isinstance(error.instance, str) else ""
        yield _Problem(line, column, message, f"use one of: {shown}{about}", path)
    elif kind == "required":
        given = error.instance if isinstance(error.instance, Mapping) else {}
        name = next((name for name in expected if name not in given), expected[0])
        line, column = marks.at(path, key=True)
        option = _schema_at(schema, (name,))
        what = f" ({option['description']})" if "description" in option else ""
        if in_job is not None and len(path) == 1:
            message = f"job {in_job!r} needs the option {name!r}, which has no default"
        else:
            message = f"{where}: the setting {name!r} is missing"
        yield _Problem(line, column, message, f"add `{name}: ...` to {where}{what}", path)
    elif kind == "format" and error.cause is not None:
        message = f"{where}: {error.cause}"
        yield _Problem(line, column, message, f"fix {where}{about}", path)
    elif kind in {"exclusiveMinimum", "minimum", "exclusiveMaximum", "maximum"}:
        relation = {
            "exclusiveMinimum": "greater than",
            "minimum": "at least",
            "exclusiveMaximum": "less than",
            "maximum": "at most",
        }[str(kind)]
        message = f"{where}: must be {relation} {expected}, got {_show(error.instance)}"
        yield _Problem(line, column, message, f"fix {where}{about}", path)
    elif kind == "minItems":
        message = f"{where}: must list at least {expected} item(s), got an empty list"
        yield _Problem(line, column, message, f"fix {where}{about}", path)
    else:
        message = f"{where}: {' '.join(error.message.split())}"
        yield _Problem(line, column, message, f"fix {where}{about}", path)


def _null_sections_to_empty(data: dict[Any, Any], jobs: Mapping[str, JobSpec]) -> None:
    """A section whose entries are all commented out (``disk:`` alone) is an empty mapping."""
    for key in ("jobs", "log_level", "disk", "snapshots", "history", *jobs):
        if key in data and data[key] is None:
            data[key] = {}
    for section, sub in (("disk", "paths"), ("snapshots", "subvolumes"), ("snapshots", "location")):
        value = data.get(section)
        if isinstance(value, dict) and sub in value and value[sub] is None:
            value[sub] = {}


def _with_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    if isinstance(value, dict) and "properties" in schema:
        result = dict(value)
        for key, sub in schema["properties"].items():
            result[key] = _with_defaults(sub, result[key] if key in result else copy.deepcopy(sub["default"]))
        return result
    return value


def _parse(path: Path, text: str) -> tuple[Any, _Marks, list[_Problem]]:
    try:
        loader = yaml.SafeLoader(text)  # checks the characters already
    except yaml.YAMLError as exc:
        raise _yaml_error(path, text, exc) from None
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_size(path, root)  # before anything expands the aliases
        # Duplicates first: constructing flattens merge keys (<<) into the nodes.
        duplicates = [] if root is None else _find_duplicates(loader, root)
        data = None if root is None else loader.construct_document(root)
        if root is None or data is None:  # no document, or an empty one ("---" alone)
            raise ConfigError(
                f"{path}:1:1: the config file is empty",
                "delete it and run `pc-switcher init` to write the default config, or write the settings",
            )
        marks = _collect_marks(loader, root)
    except yaml.YAMLError as exc:
        raise _yaml_error(path, text, exc) from None
    except RecursionError:
        raise ConfigError(
            f"{path}:1:1: the config nests lists or mappings too deeply",
            "write the settings with a few levels of nesting, as `pc-switcher init` does",
        ) from None
    finally:
        loader.dispose()
    return data, marks, duplicates


def _job_option_problems(
    data: Mapping[str, Any], jobs: Mapping[str, JobSpec], marks: _Marks, skip: set[Any]
) -> list[_Problem]:
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
                problems.append(_Problem(line, column, f"{_where(path)}: {found.problem}", found.fix, path))
    return problems


def _unset_required(data: Mapping[str, Any], jobs: Mapping[str, JobSpec], marks: _Marks) -> list[_Problem]:
    """An enabled job without a section still needs its required options."""
    listed = data.get("jobs")
    problems = []
    for name, enabled in listed.items() if isinstance(listed, dict) else ():
        if enabled is True and name in jobs and name not in data and jobs[name].required():
            option = jobs[name].required()[0]
            line, column = marks.at(("jobs", name), key=True)
            description = jobs[name].options[option].get("description", "")
            problems.append(
                _Problem(
                    line,
                    column,
                    f"job {name!r} is enabled but its option {option!r} has no default and is not set",
                    f"add a section `{name}:` with `{option}: ...` ({description}), or disable the job",
                    ("jobs", name),
                )
            )
    return problems


def _config_problems(path: Path, problems: list[_Problem]) -> ConfigError:
    """One error for every problem: its message is the first in file order and how many more there
    are; ``problems`` lists each (``FILE:LINE:COL: problem``, fix) in file order."""
    best: dict[_JsonPath, _Problem] = {}  # one problem per value: the type error says most
    for problem in sorted(problems, key=lambda p: -p.priority):
        best.setdefault(problem.path, problem)
    ordered = sorted(best.values(), key=lambda p: (p.line, p.column, -p.priority))
    first = ordered[0]
    more = f" (+{len(ordered) - 1} more)" if len(ordered) > 1 else ""
    hint = first.hint
    if more:
        hint += f"; `pc-switcher config check -c {shlex.quote(str(path))}` lists all {len(ordered)}"
    error = ConfigError(f"{path}:{first.line}:{first.column}: {first.message}{more}", hint)
    error.problems = [(f"{path}:{p.line}:{p.column}: {p.message}", p.hint) for p in ordered]
    return error


def load_config(path: Path, jobs: Mapping[str, JobSpec]) -> Config:
    """Read and validate the config file ``path`` against the discovered ``jobs``.

    Raises :class:`ConfigError` (one-line message ``<file>:<line>:<col>: ...`` and a hint) for the
    first problem in file order, mentioning how many more there are; its ``problems`` lists them all.
    """
    text = _read(path)
    data, marks, problems = _parse(path, text)
    if not isinstance(data, dict):
        line, column = marks.at(())
        raise ConfigError(
            f"{path}:{line}:{column}: the config must be a mapping of settings, not {_show(data)}",
            "start from the file `pc-switcher init` writes (keys: jobs, log_level, disk, link_timeout)",
        )
    schema = config_schema(jobs)
    _null_sections_to_empty(data, jobs)

    validator = strict_validator()(schema, format_checker=_format_checker())
    for error in validator.iter_errors(data):
        problems.extend(_describe(error, jobs, marks))

    problems.extend(_unset_required(data, jobs, marks))

    # The jobs' own option checks (their hooks), for each section that matches its schema.
    problems.extend(_job_option_problems(data, jobs, marks, {p.path[0] for p in problems if p.path}))
    if problems:
        raise _config_problems(path, problems)

    full = _with_defaults({"properties": GLOBAL_SCHEMA}, data)
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
        snapshots=_snapshots_config(full["snapshots"]),
        history=HistoryConfig(path=full["history"]["path"]),
    )


def _snapshots_config(section: Mapping[str, Any]) -> SnapshotsConfig:
    older = section["older_than"]
    return SnapshotsConfig(
        enabled=bool(section["enabled"]),
        source_subvolumes=tuple(section["subvolumes"]["source"]),
        target_subvolumes=tuple(section["subvolumes"]["target"]),
        source_location=section["location"]["source"],
        target_location=section["location"]["target"],
        keep=int(section["keep"]),
        older_than=None if older is None else parse_duration(older),
        prune=bool(section["prune"]),
    )


# --------------------------------------------------------------------------------------------
# The default config (`pc-switcher init`) and the example inventory
# --------------------------------------------------------------------------------------------


def _inline(value: Any) -> str:
    """``value`` as one line of YAML: a plain word, else JSON if it reads back the same, else flow style."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][\w.-]*", value) and yaml.safe_load(value) == value:
        return value
    text = json.dumps(value, ensure_ascii=False)
    try:
        if yaml.safe_load(text) == value:
            return text
    except yaml.YAMLError:
        pass
    return yaml.safe_dump([value], default_flow_style=True, width=1_000_000).strip()[1:-1]


def _comment(text: str, indent: str, width: int = 96) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text, width=width - len(indent))]


def _global_lines(schema: Mapping[str, Any], indent: str) -> list[str]:
    lines: list[str] = []
    for key, sub in schema.items():
        lines += _comment(sub["description"], indent)
        if sub.get("type") == "object" and "properties" in sub:
            lines.append(f"{indent}{key}:")
            lines += _global_lines(sub["properties"], indent + "  ")
        else:
            lines.append(f"{indent}{key}: {_inline(sub['default'])}")
    return lines


def _option_lines(schema: Mapping[str, Any], indent: str) -> list[str]:
    """A job's options as commented-out lines: description, then ``# name: default``."""
    lines: list[str] = []
    required = set(schema.get("required", []))
    for key, sub in schema.get("properties", {}).items():
        lines += _comment(sub.get("description", ""), indent)
        if "enum" in sub:
            lines += _comment(f"one of: {', '.join(map(_inline, sub['enum']))}", indent)
        elif "enum" in sub.get("items", {}):
            lines += _comment(f"items one of: {', '.join(map(_inline, sub['items']['enum']))}", indent)
        if key in required:
            lines.append(f"{indent}# {key}:   # required, no default")
        elif "default" in sub:
            lines.append(f"{indent}# {key}: {_inline(sub['default'])}")
        else:
            lines.append(f"{indent}# {key}:")
    return lines


def default_config_text(jobs: Mapping[str, JobSpec]) -> str:
    """The commented config `pc-switcher init` writes: every job, every setting with its default."""
    lines = [
        "# pc-switcher configuration (written by `pc-switcher init`).",
        "# Every setting below shows its default. Syntax: YAML.",
        "",
    ]
    lines += _comment(_JOBS_DESCRIPTION, "")
    if jobs:
        lines.append("jobs:")
        for name, spec in jobs.items():
            lines += _comment(spec.description, "  ")
            enabled = spec.default_enabled and not spec.required()
            if spec.default_enabled and spec.required():
                lines += _comment(f"set the required option(s) in the section {name}: before enabling", "  ")
            lines.append(f"  {name}: {_inline(enabled)}")
    else:
        lines.append("jobs: {}  # no job was found")
    lines.append("")
    for key, sub in GLOBAL_SCHEMA.items():
        lines += _global_lines({key: sub}, "")
        lines.append("")
    for name, spec in jobs.items():
        schema = spec.schema()
        if not schema.get("properties"):
            continue
        lines += _comment(f"Settings of the job {name}: {spec.description}", "")
        if spec.required():
            # The section header stays commented: an empty section would lack the required options.
            lines += _comment("This job has required options: uncomment the section and set them.", "")
            lines.append(f"# {name}:")
        else:
            lines += _comment("Uncomment an option to change it.", "")
            lines.append(f"{name}:")
        lines += _option_lines(schema, "  ")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def example_inventory_text() -> str:
    """The example Ansible inventory (``inventory/example.yml`` of the project)."""
    return (paths.project_root() / "inventory" / "example.yml").read_text(encoding="utf-8")
