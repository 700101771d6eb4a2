"""The option checks of the packages_apt job: ``option_problems(settings)`` lists what is wrong.

The job's option-check hook (docs/job-contract.md, "Option checks"): the driver loads this file for
``pc-switcher config check`` and ``pc-switcher sync``, and the role's validate phase asserts on the
same function as the Ansible filter ``packages_apt_option_problems``. ``packages_apt_seconds`` turns
``lock_timeout`` into seconds for the role, with the same parser. Allowlists: a duration is a number
and one unit of s, m, h (the form of the config's other durations); patterns are one line of the
characters package names and apt file paths are made of, plus the glob characters. Python 3.8+,
standard library only.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List

_DURATION = re.compile(r"\s*(\d{1,7})\s*([smhdw])\s*\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Package names (Debian policy: a-z 0-9 + - .), ':arch', and fnmatch's * ? [ ] !
_PACKAGE_PATTERN = re.compile(r"[a-z0-9+.:*?\[\]!-]+\Z")
# apt file paths (letters, digits, _ . - and /) and fnmatch's * ? [ ] !
_PATH_PATTERN = re.compile(r"/[A-Za-z0-9_./*?\[\]!+-]+\Z")


def seconds(text: Any) -> int:
    """``"5m"`` -> 300; raises ValueError naming the forms."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError("{!r} is not a duration: write a number and a unit like '90s', '5m' or '1h'".format(text))
    return int(match.group(1)) * _UNITS[match.group(2)]


def _problem(path: List[Any], problem: str, fix: str) -> Dict[str, Any]:
    return {"path": path, "problem": problem, "fix": fix}


def _patterns(settings: Dict[str, Any], key: str, pattern: "re.Pattern[str]", what: str, fix: str) -> List[Dict[str, Any]]:
    problems = []
    for index, value in enumerate(settings.get(key) or []):
        if not isinstance(value, str) or not pattern.match(value):
            problems.append(_problem([key, index], "{!r} is not {}".format(value, what), fix))
    return problems


def option_problems(settings: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every problem of the job's settings (short names, defaults applied); [] when they are good."""
    problems = []
    limit = settings.get("max_removals", 20)
    if isinstance(limit, str) and limit.strip().isdigit():  # -e NAME=5 in a hand run
        limit = int(limit)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        problems.append(_problem(["max_removals"], "must be 0 or more, not {!r}".format(limit), "set a whole number, 0 or more"))
    try:
        seconds(settings.get("lock_timeout", "5m"))
    except ValueError as exc:
        problems.append(_problem(["lock_timeout"], str(exc), "write e.g. lock_timeout: 5m"))
    problems += _patterns(
        settings, "protected", _PACKAGE_PATTERN, "a package name pattern (a-z 0-9 + - . : and * ? [ ] !)",
        "write a glob over package names, e.g. linux-image-*",
    )
    problems += _patterns(
        settings, "protected_sources", _PATH_PATTERN,
        "an absolute path pattern (letters, digits, _ . - + / and * ? [ ] !)",
        "write a glob over apt file paths, e.g. /etc/apt/sources.list.d/company-*",
    )
    return problems


def _filter(variables: Dict[str, Any]) -> List[str]:
    """The Ansible filter: the job's variables by short name -> one line per problem."""
    lines = []
    for item in option_problems(variables):
        where = "packages_apt_" + "".join(
            "[{}]".format(p) if isinstance(p, int) else (("." if n else "") + str(p)) for n, p in enumerate(item["path"])
        )
        lines.append("{}: {}: {}".format(where, item["problem"], item["fix"]))
    return lines


class FilterModule:
    """``packages_apt_option_problems`` (one line per problem) and ``packages_apt_seconds``."""

    def filters(self) -> Dict[str, Any]:
        return {"packages_apt_option_problems": _filter, "packages_apt_seconds": seconds}
