"""The formats of the config's JSON schema: a free-space threshold, a duration, an absolute path.

A schema names a format (``"format": THRESHOLD``); :func:`format_checker` checks each value of that
format, and its :class:`ValueError` (from :mod:`pcswitcher.config.units` or :func:`path_problem`) becomes
the config error's message.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from pcswitcher.config.units import parse_duration, parse_threshold

if TYPE_CHECKING:
    from jsonschema import FormatChecker

__all__ = ["ABSOLUTE_PATH", "DURATION", "THRESHOLD", "format_checker", "path_problem"]

THRESHOLD = "pcswitcher-threshold"
DURATION = "pcswitcher-duration"
ABSOLUTE_PATH = "pcswitcher-absolute-path"


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
    THRESHOLD: _check_threshold,
    DURATION: _check_duration,
    ABSOLUTE_PATH: _check_abspath,
}


@functools.cache
def format_checker() -> FormatChecker:
    """jsonschema's checker of exactly :data:`_FORMATS` (jsonschema is imported only when needed)."""
    from jsonschema import FormatChecker

    checker = FormatChecker(())
    for name, check in _FORMATS.items():
        checker.checks(name, raises=ValueError)(check)
    return checker
