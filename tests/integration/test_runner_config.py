"""ansible-runner starts ansible-playbook in the project root, so the repository's ``ansible.cfg``
applies to pc-switcher's playbook runs exactly as to a person's ``ansible-playbook`` run there: its
``internal_poll_interval`` (the main process's 1 ms default costs rsync CPU on a long task) and its
``roles_path``.

A local-connection play on this host, through :class:`pcswitcher.jobs.runner.PlaybookRun`.
"""

from __future__ import annotations

import configparser
from pathlib import Path

from pcswitcher.paths import project_root
from tests.integration.local_play import finish, local_run

PLAYBOOK = """
- name: Report the settings the play runs with
  hosts: all
  gather_facts: false
  tasks:
    - name: Report them
      ansible.builtin.set_stats:
        data:
          poll: "{{ lookup('ansible.builtin.config', 'DEFAULT_INTERNAL_POLL_INTERVAL') }}"
          config_file: "{{ ansible_config_file }}"
"""


def test_playbook_runs_read_the_repositorys_ansible_cfg(tmp_path: Path) -> None:
    root = project_root()
    cfg = configparser.ConfigParser()
    cfg.read(root / "ansible.cfg")
    wanted = cfg.getfloat("defaults", "internal_poll_interval")
    assert wanted != 0.001, "the test needs a value other than Ansible's default"
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    run = local_run(tmp_path, tmp_path / "play.yml", project_dir=root, ident="config")
    run.start()
    result = finish(run, 120)
    assert result.ok, result.failures
    assert Path(result.set_stats["config_file"]) == root / "ansible.cfg"
    assert float(result.set_stats["poll"]) == wanted
