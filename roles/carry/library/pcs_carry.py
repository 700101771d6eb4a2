#!/usr/bin/python
"""Ansible module of the role carry: what pc-switcher install each machine has. Read-only.

The install layout (README, `make install`)::

    PREFIX/app/           the runtime tree (pcswitcher/, roles/, playbooks/, ansible.cfg, ...)
    PREFIX/venv/          a venv of the system python3, pc-switcher installed from PREFIX/app
    PREFIX/install.json   {"version": ..., "python": "3.11", "id": <sha256 of the app tree>}, written last
    BINDIR/pc-switcher -> PREFIX/venv/bin/pc-switcher

Actions:

source   run on the source with ``app_dir`` (the dir holding pcswitcher/ of the running
         pc-switcher): ``installed`` when PREFIX/install.json (PREFIX = parent of app_dir) is a
         complete install; then its ``prefix``, ``version``, ``id``, ``python``, and ``python_home``
         (pyvenv.cfg ``home``: where the venv's python3 must be on the target), ``files``/``bytes``
         (what a carry copies). ``version`` is also read from app_dir/pcswitcher/__init__.py
         when not installed. ``file_sha256``: the sha256 of each of ``files`` ("" unless a
         regular file).
target   run on the target with ``prefix``, ``link``, ``python_home``: ``prefix_state`` (absent,
         install, incomplete, symlink, foreign) with the install's ``install`` record, ``link_state``
         (absent, install: a symlink into a pc-switcher install, foreign) with ``link_install``,
         ``python`` (major.minor of PYTHON_HOME/python3, "" when there is none), ``config_dir``
         (the login user's $XDG_CONFIG_HOME/pc-switcher or ~/.config/pc-switcher) and
         ``config_files`` (the sha256 of config.yml and inventory.yml there, "" when absent).

write    run on the target with ``config_dir``, ``config_content`` and ``inventory_content`` (no_log;
         None: not written): writes each file whose content differs to CONFIG_DIR/NAME (0600,
         atomically; the dir made 0700 when missing), the previous one kept as NAME.bak.
         Returns ``written`` and ``backups`` (names).
         Check mode writes nothing and returns what it would write.

Standard library + ansible only (Python 3.8+: it runs with the target's python3). The work is the
code of ``module_utils/pcswitcher_agent.py`` (a link to pcswitcher/remote/agent.py): during a sync
the driver reads the source with the same functions and the target through its agent's ``carry``
command, so a hand run and a sync read and write the same way.
"""

from __future__ import annotations


from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pcswitcher_agent import carry, file_sha256, source_info


def main():
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "required": True, "choices": ["source", "target", "write"]},
            "config_dir": {"type": "str", "default": ""},
            # the texts, not their names: Ansible masks a no_log value wherever it appears
            "config_content": {"type": "str", "no_log": True},
            "inventory_content": {"type": "str", "no_log": True},
            "app_dir": {"type": "str", "default": ""},
            "prefix": {"type": "str", "default": ""},
            "link": {"type": "str", "default": "/usr/local/bin/pc-switcher"},
            "python_home": {"type": "str", "default": ""},
            "files": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    params = module.params
    if params["action"] == "source":
        if not params["app_dir"]:
            module.fail_json(msg="app_dir is required for action source")
        result = source_info(params["app_dir"])
        result["file_sha256"] = {path: file_sha256(path) for path in params["files"]}
        module.exit_json(changed=False, **result)
    if params["action"] == "write":
        contents = [
            {"name": name, "content": params[key]}
            for name, key in (("config.yml", "config_content"), ("inventory.yml", "inventory_content"))
            if params[key] is not None
        ]
        request = {"action": "write", "config_dir": params["config_dir"], "files": contents}
        result = carry({**request, "check": module.check_mode})
    else:
        request = {k: params[k] for k in ("prefix", "link", "python_home")}
        result = {"changed": False, **carry({"action": "target", **request})}
    if result.get("error"):
        module.fail_json(msg=result.pop("error"))
    module.exit_json(**result)

if __name__ == "__main__":
    main()
