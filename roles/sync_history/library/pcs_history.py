#!/usr/bin/python
"""Ansible module of the role sync_history: the sync history file of one machine.

The file (JSON, written atomically, mode 0600)::

    {"version": 1, "host": "<hostname>",
     "last": {"role": "source"|"target", "peer": "<hostname>", "session": "<id>", "time": "<UTC>"},
     "entries": [ ...the last 100 records, oldest first... ]}

Actions: ``read`` (never changes anything) returns the host name and the file's content; ``record``
appends a record and makes it ``last``. Check mode writes nothing. Standard library + ansible only.
"""

from __future__ import annotations

import json
import os
import socket
import time

from ansible.module_utils.basic import AnsibleModule

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

KEEP_ENTRIES = 100


def read(path: str) -> tuple[dict | None, str]:
    """The history (None when there is none) and a problem ("" when it is readable)."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None, ""
    except (OSError, ValueError) as exc:
        return None, f"history file {path} on {socket.gethostname()} is unreadable: {exc}"
    if not isinstance(data, dict):
        return None, f"history file {path} on {socket.gethostname()} is not a JSON object"
    return data, ""


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
    host = socket.gethostname()
    path = p["path"]
    if not os.path.isabs(path):
        module.fail_json(msg=f"history path {path!r} on {host} is not absolute")
    data, problem = read(path)
    if p["action"] == "read":
        module.exit_json(changed=False, host=host, path=path, history=data, problem=problem)
    if not (p["role"] and p["peer"] and p["session"]):
        module.fail_json(msg="recording a sync needs role, peer and session")
    record = {
        "role": p["role"],
        "peer": p["peer"],
        "session": p["session"],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if data is None:
        data = {"version": 1, "entries": []}
    entries = data.get("entries") if isinstance(data.get("entries"), list) else []
    if entries and isinstance(entries[-1], dict) and entries[-1].get("session") == p["session"] and (
        entries[-1].get("role") == p["role"]
    ):
        module.exit_json(changed=False, host=host, path=path, history=data, problem="")  # already recorded
    data.update({"version": 1, "host": host, "last": record, "entries": [*entries, record][-KEEP_ENTRIES:]})
    if not module.check_mode:
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=2, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            module.fail_json(msg=f"cannot write the history file {path} on {host}: {exc}")
    module.exit_json(changed=True, host=host, path=path, history=data, problem="")


if __name__ == "__main__":
    main()
