#!/usr/bin/python
"""Ansible module of the role packages_apt: its work on the target, in one module so that Ansible
builds its payload once a playbook (a module's first run in a playbook costs ~0.1 s more than the
next: README, "Speed").

``do: plan`` reads the target's facts, makes the plan (module_utils/packages_apt_plan.py, pure)
against the source's facts (the lookup packages_apt_source, read on the controller) and, with
``simulate``, checks it with apt itself in a private apt root (module_utils/packages_apt_system.py):
the source's repositories fetched with ``apt-get update`` into a temp dir, then ``apt-get -s
install``. Reads only; check mode is the same.

``do: apply`` makes the sync's changes, in this order, each skipped when its input is empty: wait
for dpkg's and apt's locks (at most ``lock_timeout`` seconds, naming the holder); repair an
interrupted dpkg run (``dpkg --configure -a``, reported in ``repaired``); add the foreign
architectures ``archs_add``; write apt's sources, pins and keys ``files`` byte for byte (``None``:
remove) and, given ``update``, one ``apt-get update`` — when it fails every file is put back and the
repository named, and nothing after it runs; ``apt-get install`` of ``install`` and of the
``upgrade`` packages whose source version is now the candidate; ``apt-get remove`` of ``remove``
(never purge, never autoremove); ``dpkg --remove-architecture`` of ``archs_remove``; ``apt-mark
manual|auto``; ``apt-mark hold|unhold``. apt's runs write "N of M PACKAGE" progress lines from apt's
Status-Fd. One module run instead of a task per step: every Ansible task costs a module start on the
target (0.1-0.3 s) or at least a task's round (0.02 s). Package names, versions, architectures and
paths are checked again here before they reach an argv. In check mode it changes nothing (the role
skips it in a dry-run and reports apt's simulation).
"""

from __future__ import annotations

import base64
from typing import Any, Dict, List, Optional

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.packages_apt_plan import ARCH_NAME, make_plan, package_key_problem, path_problem, version_problem
from ansible.module_utils.packages_apt_system import (
    add_architectures,
    apply_files,
    apt_get,
    log_line,
    read_facts,
    repair,
    run,
    simulate,
    upgrades_now,
    wait_for_lock,
)

DOCUMENTATION = r"""
module: packages_apt_target
short_description: the packages_apt job on the target, its plan (do=plan) or its changes in their order (do=apply)
description: See the module docstring and docs/jobs/packages_apt.md.
options:
  do: {type: str, required: true, choices: [plan, apply]}
  source: {type: dict}
  settings: {type: dict, default: {}}
  simulate: {type: bool, default: false}
  archs_add: {type: list, elements: str, default: []}
  files: {type: dict, default: {}}
  update: {type: bool, default: true}
  install: {type: list, elements: str, default: []}
  upgrade: {type: dict, default: {}}
  remove: {type: list, elements: str, default: []}
  archs_remove: {type: list, elements: str, default: []}
  manual: {type: list, elements: str, default: []}
  auto: {type: list, elements: str, default: []}
  hold: {type: list, elements: str, default: []}
  unhold: {type: list, elements: str, default: []}
  total_install: {type: int, default: 0}
  total_remove: {type: int, default: 0}
  lock_timeout: {type: int, default: 300}
"""

NAME_LISTS = ("remove", "manual", "auto", "hold", "unhold")
LIST = {"type": "list", "elements": "str", "default": []}
ARGUMENTS: Dict[str, Dict[str, Any]] = {
    "do": {"type": "str", "required": True, "choices": ["plan", "apply"]},
    "source": {"type": "dict"},
    "settings": {"type": "dict", "default": {}},
    "simulate": {"type": "bool", "default": False},
    "archs_add": LIST,
    "files": {"type": "dict", "default": {}},
    "update": {"type": "bool", "default": True},
    "install": LIST,
    "upgrade": {"type": "dict", "default": {}},
    "remove": LIST,
    "archs_remove": LIST,
    "manual": LIST,
    "auto": LIST,
    "hold": LIST,
    "unhold": LIST,
    "total_install": {"type": "int", "default": 0},
    "total_remove": {"type": "int", "default": 0},
    "lock_timeout": {"type": "int", "default": 300},
}


def _item_problem(item: str) -> Optional[str]:
    key, sep, version = item.partition("=")
    return package_key_problem(key) or (version_problem(version) if sep else None)


def _problems(p: Dict[str, Any]) -> List[str]:
    problems = [problem for problem in map(path_problem, p["files"]) if problem]
    problems += [problem for problem in map(_item_problem, list(p["install"]) + list(p["upgrade"])) if problem]
    names = [name for key in NAME_LISTS for name in p[key]]
    problems += [problem for problem in map(package_key_problem, names) if problem]
    archs = list(p["archs_add"]) + list(p["archs_remove"])
    problems += ["{!r} is not an architecture name".format(a) for a in archs if not ARCH_NAME.match(a)]
    return problems


class Sync:
    """The steps, each failing the module with what was done before it."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.p = module.params
        self.done: Dict[str, Any] = {"changed": False, "actions": {"install": [], "remove": []}}

    def fail(self, msg: str, **extra: Any) -> None:
        self.module.fail_json(msg=msg, **dict(self.done, **extra))

    def files(self) -> None:
        changes = {path: None if data is None else base64.b64decode(data) for path, data in self.p["files"].items()}
        try:
            self.done["changed"] = add_architectures(self.p["archs_add"]) or self.done["changed"]
            changed, failure = apply_files(changes, self.p["update"], self.p["lock_timeout"])
        except (RuntimeError, OSError) as exc:  # a write that failed put every file back first
            self.fail(str(exc))
        if failure:
            self.fail(failure)
        self.done["changed"] = changed or self.done["changed"]

    def apt(self, action: str, items: List[str], total: int) -> None:
        if not items:
            return
        result = apt_get(action, items, self.p["lock_timeout"], total)
        if result.pop("failed"):
            self.fail(result.pop("msg"), **result)
        for kind in ("install", "remove"):  # an install can remove (a conflict), a removal install
            self.done["actions"][kind] += result["actions"].get(kind, [])
        self.done["output"] = result["output"]
        self.done["changed"] = True

    def command(self, argv: List[str]) -> None:
        done = run(argv)
        if done.returncode != 0:
            self.fail("{} failed: {}".format(" ".join(argv), done.stdout.strip()[-400:]))
        self.done["changed"] = True


def plan(module: AnsibleModule) -> None:
    """The target's facts and the plan (``do: plan``): reads only."""
    p = module.params
    source = p["source"]
    target = read_facts("target", contents=False, audit=True)
    if not source.get("tools") or not target.get("tools"):
        module.exit_json(changed=False, plan={"problems": source.get("problems", []) + target.get("problems", [])})
    made = make_plan(source, target, p["settings"])
    if p["simulate"] and made["work"] and not made["problems"]:
        checked = simulate(made, source, target, p["settings"])
        made["problems"] += checked.pop("problems")
        made["simulated"] = checked
    module.exit_json(changed=False, plan=made)


def apply(module: AnsibleModule) -> None:
    """The sync's changes (``do: apply``), in their order."""
    p = module.params
    if module.check_mode:
        module.exit_json(changed=False, msg="check mode: nothing applied")
    problems = _problems(p)
    if problems:
        module.fail_json(msg="; ".join(problems))
    messages: List[str] = []
    say = log_line(messages)  # logged by pc-switcher as it happens, and kept in the result
    held = wait_for_lock(p["lock_timeout"], say)
    if held:
        module.fail_json(msg=held, messages=messages)
    try:
        repaired, what = repair(p["lock_timeout"])
    except RuntimeError as exc:
        module.fail_json(msg=str(exc), messages=messages)
    if what:
        say(what)
    sync = Sync(module)
    sync.done.update(changed=repaired, repaired=what, messages=messages)
    if p["archs_add"] or p["files"] or p["update"]:
        sync.files()  # a failed update puts the files back and ends the module here
    # packages the source has in another version: installed when that version is the target's
    # candidate now (after the update: the source's pins and repositories), e.g. a pinned version
    sync.apt("install", list(p["install"]) + upgrades_now(p["upgrade"], []), p["total_install"])
    sync.apt("remove", list(p["remove"]), p["total_remove"])
    for arch in p["archs_remove"]:  # after the removals: dpkg refuses while packages of it remain
        sync.command(["dpkg", "--remove-architecture", arch])
    for key in ("manual", "auto", "hold", "unhold"):
        if p[key]:
            sync.command(["apt-mark", key] + list(p[key]))
    module.exit_json(**sync.done)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENTS, required_if=[("do", "plan", ["source"])], supports_check_mode=True)
    if module.params["do"] == "plan":
        plan(module)
    else:
        apply(module)


if __name__ == "__main__":
    main()
