#!/usr/bin/python
"""Ansible module of the role packages_apt: the steps of the sync that change the target.

``step``: ``prepare`` (wait for the dpkg lock, repair an interrupted dpkg run with
``dpkg --configure -a``), ``files`` (apt's sources, pins and keys written byte for byte, then one
``apt-get update``; on failure every file is put back and the repository named), ``install`` and
``remove`` (one ``apt-get`` run each, "N of M PACKAGE" progress lines from apt's Status-Fd). Each
step waits for the dpkg lock first, at most ``lock_timeout`` seconds, naming its holder. Package
names, versions and paths are checked again here before they reach an argv. No check mode: the
role skips these tasks in a dry-run and reports the validate phase's simulation instead.
"""

from __future__ import annotations

import base64

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.packages_apt_plan import package_key_problem, path_problem, version_problem
from ansible.module_utils.packages_apt_system import apply_files, apt_get, repair, upgrades_now, wait_for_lock

DOCUMENTATION = r"""
module: packages_apt_apply
short_description: the changing steps of the packages_apt sync (prepare, files, install, remove)
description: See the module docstring and docs/jobs/packages_apt.md.
options:
  step: {type: str, required: true, choices: [prepare, files, install, remove]}
  files: {type: dict, default: {}}
  update: {type: bool, default: true}
  items: {type: list, elements: str, default: []}
  upgrade: {type: dict, default: {}}
  lock_timeout: {type: int, default: 300}
"""


def _item_problem(item: str) -> str | None:
    key, sep, version = item.partition("=")
    return package_key_problem(key) or (version_problem(version) if sep else None)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "step": {"type": "str", "required": True, "choices": ["prepare", "files", "install", "remove"]},
            "files": {"type": "dict", "default": {}},
            "update": {"type": "bool", "default": True},
            "items": {"type": "list", "elements": "str", "default": []},
            "upgrade": {"type": "dict", "default": {}},
            "lock_timeout": {"type": "int", "default": 300},
        },
        supports_check_mode=False,
    )
    p = module.params
    messages: list[str] = []
    held = wait_for_lock(p["lock_timeout"], messages.append)
    if held:
        module.fail_json(msg=held, messages=messages)
    if p["step"] == "prepare":
        repaired, what = repair(p["lock_timeout"])
        module.exit_json(changed=repaired, msg=what, messages=messages + ([what] if what else []))
    if p["step"] == "files":
        problems = [problem for problem in map(path_problem, p["files"]) if problem]
        if problems:
            module.fail_json(msg="; ".join(problems))
        changes = {path: None if data is None else base64.b64decode(data) for path, data in p["files"].items()}
        changed, failure = apply_files(changes, p["update"], p["lock_timeout"])
        if failure:
            module.fail_json(msg=failure, messages=messages)
        module.exit_json(changed=changed, messages=messages)
    problems = [problem for problem in map(_item_problem, list(p["items"]) + list(p["upgrade"])) if problem]
    if problems:
        module.fail_json(msg="; ".join(problems))
    # packages the source has in another version: installed when that version is the target's
    # candidate now (after the update: the source's pins and repositories), e.g. a pinned version
    items = list(p["items"]) + (upgrades_now(p["upgrade"], []) if p["step"] == "install" else [])
    if not items:
        module.exit_json(changed=False, messages=messages, actions={"install": [], "remove": []})
    done = apt_get(p["step"], items, p["lock_timeout"])
    if done.pop("failed"):
        module.fail_json(messages=messages, **done)
    module.exit_json(changed=True, messages=messages, **done)


if __name__ == "__main__":
    main()
