#!/usr/bin/python
"""Ansible module of the role packages_apt: the steps of the sync that change the target.

Every step first waits for dpkg's and apt's locks (at most ``lock_timeout`` seconds, naming the
holder) and repairs an interrupted dpkg run (``dpkg --configure -a``, reported in ``repaired``), so
whichever step runs first does it before anything else. ``step``: ``prepare`` (only that),
``files`` (the source's foreign architectures added, apt's sources, pins and keys written byte for
byte, then, given ``update``, one ``apt-get update``; when it fails every file is put back and the repository named;
then, given ``items`` or ``upgrade``, the install: one module run for what a person types as
``apt-get update && apt-get install``), ``install`` and ``remove`` (one ``apt-get`` run each,
"N of M PACKAGE" progress lines from apt's Status-Fd). Package names, versions, architectures and paths are checked again here before they
reach an argv. No check mode: the role skips these tasks in a dry-run and reports apt's simulation.
"""

from __future__ import annotations

import base64
from typing import Any, Dict, List, Optional

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.packages_apt_plan import ARCH_NAME, package_key_problem, path_problem, version_problem
from ansible.module_utils.packages_apt_system import (
    add_architectures,
    apply_files,
    apt_get,
    log_line,
    repair,
    upgrades_now,
    wait_for_lock,
)

DOCUMENTATION = r"""
module: packages_apt_apply
short_description: the changing steps of the packages_apt sync (prepare, files, install, remove)
description: See the module docstring and docs/jobs/packages_apt.md.
options:
  step: {type: str, required: true, choices: [prepare, files, install, remove]}
  files: {type: dict, default: {}}
  update: {type: bool, default: true}
  archs: {type: list, elements: str, default: []}
  items: {type: list, elements: str, default: []}
  upgrade: {type: dict, default: {}}
  total: {type: int, default: 0}
  lock_timeout: {type: int, default: 300}
"""


def _item_problem(item: str) -> Optional[str]:
    key, sep, version = item.partition("=")
    return package_key_problem(key) or (version_problem(version) if sep else None)


def _problems(p: Dict[str, Any]) -> List[str]:
    problems = [problem for problem in map(path_problem, p["files"]) if problem]
    problems += [problem for problem in map(_item_problem, list(p["items"]) + list(p["upgrade"])) if problem]
    problems += ["{!r} is not an architecture name".format(a) for a in p["archs"] if not ARCH_NAME.match(a)]
    return problems


def _files(module: AnsibleModule, p: Dict[str, Any], done: Dict[str, Any]) -> None:
    done["changed"] = add_architectures(p["archs"]) or done["changed"]
    changes = {path: None if data is None else base64.b64decode(data) for path, data in p["files"].items()}
    changed, failure = apply_files(changes, p["update"], p["lock_timeout"])
    if failure:
        module.fail_json(msg=failure, **done)
    done["changed"] = changed or done["changed"]


def _packages(module: AnsibleModule, p: Dict[str, Any], done: Dict[str, Any], action: str) -> None:
    # packages the source has in another version: installed when that version is the target's
    # candidate now (after the update: the source's pins and repositories), e.g. a pinned version
    items = list(p["items"]) + (upgrades_now(p["upgrade"], []) if action == "install" else [])
    done["actions"] = {"install": [], "remove": []}
    if not items:
        return
    result = apt_get(action, items, p["lock_timeout"], p["total"])
    if result.pop("failed"):
        module.fail_json(**dict(done, **result))
    done.update(result, changed=True)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "step": {"type": "str", "required": True, "choices": ["prepare", "files", "install", "remove"]},
            "files": {"type": "dict", "default": {}},
            "update": {"type": "bool", "default": True},
            "archs": {"type": "list", "elements": "str", "default": []},
            "items": {"type": "list", "elements": "str", "default": []},
            "upgrade": {"type": "dict", "default": {}},
            "total": {"type": "int", "default": 0},
            "lock_timeout": {"type": "int", "default": 300},
        },
        supports_check_mode=False,
    )
    p = module.params
    problems = _problems(p)
    if problems:
        module.fail_json(msg="; ".join(problems))
    messages: List[str] = []
    held = wait_for_lock(p["lock_timeout"], log_line(messages))
    if held:
        module.fail_json(msg=held, messages=messages)
    try:
        repaired, what = repair()
    except RuntimeError as exc:
        module.fail_json(msg=str(exc), messages=messages)
    done: Dict[str, Any] = {"changed": repaired, "repaired": what, "messages": messages + ([what] if what else [])}
    if p["step"] == "files":
        _files(module, p, done)
    if p["step"] in ("install", "remove") or (p["step"] == "files" and (p["items"] or p["upgrade"])):
        _packages(module, p, done, "remove" if p["step"] == "remove" else "install")
    module.exit_json(**done)


if __name__ == "__main__":
    main()
