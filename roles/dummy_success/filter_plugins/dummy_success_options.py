"""The option checks of the dummy_success job (the option-check hook, docs/job-contract.md).

``option_problems(settings)`` (short names, defaults applied) lists what is wrong; the driver runs it
for ``pc-switcher config check`` and ``pc-switcher sync``, the role's validate phase runs it as the
Ansible filter ``dummy_success_option_problems``. Python 3.8+, standard library only.
"""

from __future__ import annotations

from typing import Any, Dict, List

OPTIONS = ("source_duration", "target_duration")


def option_problems(settings: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The durations are whole seconds, 0 or more."""
    problems = []
    for name in OPTIONS:
        value = settings.get(name, 0)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():  # -e NAME=5 in a hand run
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(
                {"path": [name], "problem": "must be 0 or more seconds, not {}".format(value), "fix": "set 0 or more"}
            )
    return problems


def _filter(variables: Dict[str, Any]) -> List[str]:
    """The Ansible filter: the job's variables by short name -> one line per problem."""
    return ["dummy_success_{}: {}: {}".format(p["path"][0], p["problem"], p["fix"]) for p in option_problems(variables)]


class FilterModule:
    """``{{ {...options by short name...} | dummy_success_option_problems }}``: one line per problem."""

    def filters(self) -> Dict[str, Any]:
        return {"dummy_success_option_problems": _filter}
