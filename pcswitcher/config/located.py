"""Config errors with a location: each problem is ``<file>:<line>:<col>: <problem>`` and a fix.

:class:`Marks` knows where each value of the file starts; :func:`describe` turns one jsonschema
error into such problems; :func:`config_error` makes the one :class:`~pcswitcher.errors.ConfigError`
that reports them all (the first in file order, and how many more).
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pcswitcher.config.units import show_value
from pcswitcher.errors import ConfigError

if TYPE_CHECKING:
    from jsonschema import ValidationError

__all__ = ["JsonPath", "Marks", "Problem", "config_error", "describe", "suggest", "where"]

JsonPath = tuple[Any, ...]


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based
    column: int  # 1-based
    message: str
    hint: str
    path: JsonPath = ()
    #: Of two problems of one value, the one with the higher priority is reported.
    priority: int = 0


class Marks:
    """JSON path -> where its value (and its key) start in the file."""

    def __init__(self) -> None:
        self.values: dict[JsonPath, yaml.Mark] = {}
        self.keys: dict[JsonPath, yaml.Mark] = {}

    def at(self, path: JsonPath, *, key: bool = False) -> tuple[int, int]:
        """1-based line and column of ``path`` (its key if ``key``), or of its closest ancestor."""
        for cut in range(len(path), -1, -1):
            sub = path[:cut]
            mark = (self.keys.get(sub) if key else None) or self.values.get(sub)
            if mark is not None:
                return mark.line + 1, mark.column + 1
        return 1, 1


def where(path: JsonPath) -> str:
    """``path`` as the user reads it: ``disk.paths.source[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) and not isinstance(part, bool) else f".{part}"
    return text.lstrip(".") or "the config"


def suggest(word: object, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` (ignoring case), or ``""``."""
    by_lower = {str(choice).lower(): str(choice) for choice in choices}
    close = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "nothing",
}

_RELATIONS = {
    "exclusiveMinimum": "greater than",
    "minimum": "at least",
    "exclusiveMaximum": "less than",
    "maximum": "at most",
}


@dataclass(frozen=True)
class _Error:
    """One jsonschema error, as the messages need it."""

    kind: str  # the failed keyword
    path: JsonPath
    where: str
    expected: Any  # the schema's value of the failed keyword
    instance: Any  # the value that failed
    schema: Mapping[str, Any]
    about: str  # " (the setting's description)" or ""
    text: str  # jsonschema's own message
    cause: BaseException | None


def describe(error: ValidationError, jobs: Mapping[str, Any], marks: Marks) -> list[Problem]:
    """Turn one jsonschema error into problems with a location, a one-line message and a hint."""
    path: JsonPath = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    about = f" ({schema['description']})" if isinstance(schema.get("description"), str) else ""
    kind = str(error.validator)
    found = _Error(
        kind,
        path,
        where(path),
        error.validator_value,
        error.instance,
        schema,
        about,
        error.message,
        error.cause,
    )
    in_job = path[0] if path and path[0] in jobs else None
    if kind == "additionalProperties" and isinstance(error.instance, Mapping):
        known = list(schema.get("properties", {}))
        unknown = [key for key in error.instance if key not in known]
        return [_unknown_key(found, key, known, jobs=jobs, in_job=in_job, marks=marks) for key in unknown]
    if kind == "required":
        return [_missing(found, in_job, marks)]
    message, hint = _MESSAGES.get(kind, _other)(found)
    line, column = marks.at(path)
    return [Problem(line, column, message, hint, path, priority=1 if kind == "type" else 0)]


def _unknown_key(
    found: _Error, key: Any, known: list[str], *, jobs: Mapping[str, Any], in_job: Any, marks: Marks
) -> Problem:
    path = found.path
    if not path:
        message = f"unknown top-level key {key!r}{suggest(key, known)}"
        globals_ = ", ".join(k for k in known if k not in jobs)
        hint = f"valid keys are {globals_} and a section per job ({', '.join(jobs) or 'none'})"
    elif path == ("jobs",):
        message = f"unknown job {key!r} in jobs{suggest(key, known)}"
        hint = f"known jobs: {', '.join(known) or 'none (no job was found)'}"
    elif in_job is not None and len(path) == 1:
        message = f"unknown option {key!r} for job {in_job!r}{suggest(key, known)}"
        hint = f"options of {in_job}: {', '.join(known) or 'none'}"
    else:
        message = f"unknown key {key!r} in {found.where}{suggest(key, known)}"
        hint = f"valid keys in {found.where}: {', '.join(known) or 'none'}"
    line, column = marks.at((*path, key), key=True)
    return Problem(line, column, message, hint, (*path, key))


def _missing(found: _Error, in_job: Any, marks: Marks) -> Problem:
    given = found.instance if isinstance(found.instance, Mapping) else {}
    name = next((name for name in found.expected if name not in given), found.expected[0])
    option = found.schema.get("properties", {}).get(name, {})
    what = f" ({option['description']})" if "description" in option else ""
    if in_job is not None and len(found.path) == 1:
        message = f"job {in_job!r} needs the option {name!r}, which has no default"
    else:
        message = f"{found.where}: the setting {name!r} is missing"
    line, column = marks.at(found.path, key=True)
    return Problem(line, column, message, f"add `{name}: ...` to {found.where}{what}", found.path)


def _wrong_type(found: _Error) -> tuple[str, str]:
    expected, path, got = found.expected, found.path, show_value(found.instance)
    names = [expected] if isinstance(expected, str) else [t for t in expected if t != "null"]
    want = " or ".join(_TYPE_NAMES.get(t, t) for t in names)
    if path[:1] == ("jobs",) and len(path) == 2:
        message = f"{found.where}: expected true or false (run the job or not), got {got}"
        return message, f"write `{path[1]}: true` to run the job or `{path[1]}: false` to skip it"
    hint = f"write {want} for {found.where}{found.about}"
    if want == "an integer" and isinstance(found.instance, str):
        hint += "; write the number without quotes"
    return f"{found.where}: expected {want}, got {got}", hint


def _not_a_choice(found: _Error) -> tuple[str, str]:
    choices = [c for c in found.expected if c is not None]
    shown = ", ".join(show_value(c) if not isinstance(c, str) else c for c in choices)
    message = f"{found.where}: {show_value(found.instance)} is not one of {shown}"
    if isinstance(found.instance, str):
        message += suggest(found.instance, [c for c in choices if isinstance(c, str)])
    return message, f"use one of: {shown}{found.about}"


def _bad_format(found: _Error) -> tuple[str, str]:
    if found.cause is None:
        return _other(found)
    return f"{found.where}: {found.cause}", f"fix {found.where}{found.about}"


def _out_of_range(found: _Error) -> tuple[str, str]:
    message = (
        f"{found.where}: must be {_RELATIONS[found.kind]} {found.expected}, got {show_value(found.instance)}"
    )
    return message, f"fix {found.where}{found.about}"


def _too_few(found: _Error) -> tuple[str, str]:
    message = f"{found.where}: must list at least {found.expected} item(s), got an empty list"
    return message, f"fix {found.where}{found.about}"


def _other(found: _Error) -> tuple[str, str]:
    return f"{found.where}: {' '.join(found.text.split())}", f"fix {found.where}{found.about}"


#: The message and hint for an error of each keyword (any other: :func:`_other`).
_MESSAGES: Mapping[str, Callable[[_Error], tuple[str, str]]] = {
    "type": _wrong_type,
    "enum": _not_a_choice,
    "format": _bad_format,
    "minItems": _too_few,
    **{kind: _out_of_range for kind in _RELATIONS},
}


def config_error(path: Path, problems: list[Problem]) -> ConfigError:
    """One error for every problem: its message is the first in file order and how many more there
    are; ``problems`` lists each (``FILE:LINE:COL: problem``, fix) in file order."""
    best: dict[JsonPath, Problem] = {}  # one problem per value: the type error says most
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
