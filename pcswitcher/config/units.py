"""The units a setting is written in: free-space thresholds ("20%", "50GiB") and durations ("7d").

Each parser raises :class:`ValueError` with a message naming the accepted forms; :func:`show_value`
shows a value as the user wrote it (YAML-ish), for those messages and the config's errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["Threshold", "duration_text", "parse_duration", "parse_threshold", "show_value"]


def show_value(value: object) -> str:
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
        raise ValueError(f"expected {_THRESHOLD_FORMS}, got {show_value(text)}")
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
        raise ValueError(f"{show_value(text)} is not a duration: write {_DURATION_FORMS}")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def duration_text(seconds: int) -> str:
    """``seconds`` in the largest unit that divides it (``604800`` -> ``"1w"``): what
    :func:`parse_duration` reads back as the same number."""
    for unit, size in sorted(_DURATION_UNITS.items(), key=lambda item: -item[1]):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("every number of seconds is a multiple of 1 s")
