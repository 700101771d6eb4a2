#!/usr/bin/python
"""Ansible module of the role sync_history: the sync history file of one machine.

The work is :func:`history` of ``module_utils/pcswitcher_agent.py`` (a link to pcswitcher/remote/agent.py):
the same code the pc-switcher agents run during a sync, so a playbook run by hand and the driver
read and write the file the same way. Actions: ``read`` (never changes anything) returns the host
name and the file's content; ``record`` appends a record and makes it ``last``. Check mode writes
nothing. Standard library + ansible only.
"""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pcswitcher_agent import history

DOCUMENTATION = r"""
module: pcs_history
short_description: pc-switcher's sync history file (read, record)
description: See the module docstring and docs/safety.md.
options:
  action: {type: str, required: true, choices: [read, record]}
  path: {type: path, required: true}
  role: {type: str, default: "", choices: ["", source, target]}
  peer: {type: str, default: ""}
  session: {type: str, default: ""}
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "required": True, "choices": ["read", "record"]},
            "path": {"type": "path", "required": True},
            "role": {"type": "str", "default": "", "choices": ["", "source", "target"]},
            "peer": {"type": "str", "default": ""},
            "session": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    p = module.params
    result = history(
        p["action"], p["path"], role=p["role"], peer=p["peer"], session=p["session"], check=module.check_mode
    )
    error = result.pop("error", None)
    if error:
        module.fail_json(msg=str(error), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
