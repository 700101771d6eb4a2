#!/usr/bin/python
"""Ansible module of the role packages_apt: the target's packages and apt files, and the plan.

It reads the target's facts, makes the plan (module_utils/packages_apt_plan.py, pure) against the
source's facts (the lookup packages_apt_source, read on the controller) and, with ``simulate``,
checks it with apt itself in a private apt root (module_utils/packages_apt_system.py): the source's
repositories fetched with ``apt-get update`` into a temp dir, then ``apt-get -s install``. Reads
only; check mode is the same.
"""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.packages_apt_plan import make_plan
from ansible.module_utils.packages_apt_system import read_facts, simulate

DOCUMENTATION = r"""
module: packages_apt_facts
short_description: the target's packages and apt files, and the plan of the sync
description: See the module docstring and docs/jobs/packages_apt.md.
options:
  source: {type: dict, required: true}
  settings: {type: dict, default: {}}
  simulate: {type: bool, default: false}
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "source": {"type": "dict", "required": True},
            "settings": {"type": "dict", "default": {}},
            "simulate": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    source = p["source"]
    target = read_facts("target", contents=False, audit=True)
    if not source.get("tools") or not target.get("tools"):
        module.exit_json(changed=False, plan={"problems": source.get("problems", []) + target.get("problems", [])})
    plan = make_plan(source, target, p["settings"])
    if p["simulate"] and plan["work"] and not plan["problems"]:
        checked = simulate(plan, source, target, p["settings"])
        plan["problems"] += checked.pop("problems")
        plan["simulated"] = checked
    module.exit_json(changed=False, plan=plan)


if __name__ == "__main__":
    main()
