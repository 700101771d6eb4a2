"""A job's line in the summary, in the user's words: the job declares the words, this module the units.

A job's declaration (``roles/<job>/meta/pcswitcher.yml``) may give a ``summary`` (and a
``summary_dry_run``) template: text with ``{field}`` or ``{field:unit}`` placeholders that name the keys
of the job's ``<job>_result`` (its ``set_stats`` data, docs/job-contract.md). Units:

- ``count``: a whole number with thousands separators (``18,935``);
- ``bytes``: binary units (``937.5 MiB``, ``110 B``);
- ``seconds``: a duration (``8.0s``, ``2m05s``);
- none: the value as it is.

Nothing here names a job: every word of a summary line comes from the job's declaration.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

UNITS = ("count", "bytes", "seconds")
_FIELD = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_BYTE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def template_problem(template: object) -> str | None:
    """Why ``template`` is not a valid summary template, or None when it is."""
    if not isinstance(template, str) or not template.strip() or "\n" in template.strip():
        return "must be a non-empty one-line string"
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"is not a valid template: {exc} (write a literal brace as {{{{ or }}}})"
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if not _FIELD.match(name):
            return f"placeholder {{{name}}}: name a key of the job's result (lowercase letters, digits, _)"
        if conversion or (spec and spec not in UNITS):
            return f"placeholder {{{name}:{spec}}}: the unit must be one of {', '.join(UNITS)}"
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def format_count(value: float) -> str:
    """``18935`` → ``18,935``."""
    return f"{round(value):,}"


def format_bytes(value: float) -> str:
    """``983050438`` → ``937.5 MiB``; below 1 KiB whole bytes (``110 B``)."""
    if abs(value) < 1024:
        return f"{round(value)} B"
    for unit in _BYTE_UNITS:
        value /= 1024
        if abs(value) < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{value:,.1f} {unit}"
    raise AssertionError("unreachable")


def format_seconds(value: float) -> str:
    """``8`` → ``8.0s``, ``125`` → ``2m05s`` (as the summary's durations)."""

    return format_duration(value)


_FORMATTERS = {"count": format_count, "bytes": format_bytes, "seconds": format_seconds}


def render(template: str, result: Mapping[str, Any]) -> str | None:
    """The template filled from ``result``; None when a field is missing or not a number where a
    unit needs one (then the caller falls back to :func:`plain`)."""
    out: list[str] = []
    for literal, name, spec, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is None:
            continue
        if name not in result:
            return None
        value = result[name]
        if spec:
            number = _number(value)
            if number is None:
                return None
            out.append(_FORMATTERS[spec](number))
        else:
            out.append(str(value))
    return "".join(out)


def plain(result: Mapping[str, Any]) -> str:
    """A result without a template: its scalars, ``key value`` (numbers rounded)."""
    parts = []
    for key, value in result.items():
        if key == "dry_run" or isinstance(value, bool) or not isinstance(value, int | float | str):
            continue
        shown = f"{value:,.2f}".rstrip("0").rstrip(".") if isinstance(value, float) else value
        parts.append(f"{key.replace('_', ' ')} {shown}")
    return ", ".join(parts)


def job_summary(
    result: Mapping[str, Any] | None, template: str | None, dry_run_template: str | None, dry_run: bool
) -> str:
    """The summary text of a job that succeeded: its declared template, else its plain scalars."""
    if not isinstance(result, Mapping):
        return ""
    chosen = dry_run_template if dry_run and dry_run_template else template
    if chosen:
        text = render(chosen, result)
        if text is not None:
            return text
    return plain(result)


def format_duration(seconds: float) -> str:
    """``0.4s``, ``12.3s``, ``2m05s``, ``1h02m03s``."""
    if seconds < 0:
        seconds = 0.0
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s"
