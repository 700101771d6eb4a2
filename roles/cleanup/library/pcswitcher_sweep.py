#!/usr/bin/python
"""Ansible module: kill every process of a pc-switcher run and remove its files (check mode lists)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pcswitcher_sweep
short_description: Kill every process of a pc-switcher run and remove its files
description:
  - Finds the run's processes by the run tag C(PCSWITCHER_RUN_ID=<run id>) in their environment, by
    the run's async job ids in their command line, and as descendants of those; never by name.
  - SIGTERM, a short grace, then SIGSTOP and SIGKILL until none is left. Never itself or its ancestors.
  - Removes the run's directory C(/tmp/pcswitcher-<run id>) and the async status files of the job ids.
  - The same code as the pc-switcher agent (module_utils/pcswitcher_agent.py is pcswitcher/remote/agent.py).
options:
  run_id:
    description: The run to clean up.
    type: str
    required: true
  jids:
    description: Async job ids of the run.
    type: list
    elements: str
    default: []
  remove:
    description: Also remove the run's files.
    type: bool
    default: true
"""

RETURN = r"""
killed: {description: The processes killed (pid, cmd)., type: list, returned: always}
remaining: {description: Pids still alive after the sweep (should be empty)., type: list, returned: always}
removed: {description: The paths removed., type: list, returned: always}
temps_removed: {description: The temporary files of the killed rsync processes removed., type: list, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pcswitcher_agent import (
    RUN_ID_RE,
    find_run_processes,
    remove_run_files,
    run_dir,
    sweep,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "run_id": {"type": "str", "required": True},
            "jids": {"type": "list", "elements": "str", "default": []},
            "remove": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    run_id = module.params["run_id"]
    jids = module.params["jids"]
    if not RUN_ID_RE.match(run_id):
        module.fail_json(msg=f"{run_id!r} is not a pc-switcher run id; pass the id shown by `pc-switcher logs`")
    if module.check_mode:
        found = find_run_processes(run_id, jids)
        killed = [{"pid": pid, "cmd": cmd[:200]} for pid, cmd in found.items()]
        module.exit_json(
            changed=bool(found), killed=killed, remaining=[], removed=[], temps_removed=[], check_mode=True
        )
    report = sweep(run_id, jids)
    removed = remove_run_files(run_id, jids) if module.params["remove"] else []
    if report["remaining"]:
        module.fail_json(msg=f"processes of run {run_id} survived the sweep: {report['remaining']}", **report)
    module.exit_json(
        changed=bool(report["killed"] or removed),
        killed=report["killed"],
        remaining=report["remaining"],
        removed=removed,
        temps_removed=report["temps_removed"],
        run_dir=run_dir(run_id),
    )


if __name__ == "__main__":
    main()
