"""A playbook that ends without a failed task — Ansible refused it, or the gate stopped it — says why:
:meth:`pcswitcher.jobs.runner.PlaybookResult.reason` gives Ansible's own error, with where it points,
instead of a bare "the playbook failed". Real runs of ansible-playbook through
:class:`pcswitcher.jobs.runner.PlaybookRun`, on this host over Ansible's local connection."""

from __future__ import annotations

from pathlib import Path

from pcswitcher.jobs.runner import PlaybookResult
from pcswitcher.paths import project_root
from tests.integration.local_play import finish, local_run

UNKNOWN_MODULE = """
- name: A play with a typo
  hosts: all
  gather_facts: false
  tasks:
    - name: Misspelt module
      ansible.builtin.debugg:
        msg: hello
"""

FAILED_TASK = """
- name: A play whose task fails
  hosts: all
  gather_facts: false
  tasks:
    - name: Fail
      ansible.builtin.fail:
        msg: the reason
"""


def _result(tmp: Path, text: str) -> PlaybookResult:
    (tmp / "play.yml").write_text(text)
    run = local_run(tmp, tmp / "play.yml", project_dir=project_root(), ident="errors")
    run.start()
    return finish(run, 120)


def test_a_playbook_ansible_refuses_gives_ansibles_error_and_where(tmp_path: Path) -> None:
    result = _result(tmp_path, UNKNOWN_MODULE)
    assert not result.ok
    assert result.failures == []
    reason = result.reason("the playbook failed")
    assert "couldn't resolve module/action 'ansible.builtin.debugg'" in reason
    assert f"({tmp_path / 'play.yml'}:6:7)" in reason
    assert "\n" not in reason


def test_a_failed_task_is_the_reason_not_ansibles_display(tmp_path: Path) -> None:
    result = _result(tmp_path, FAILED_TASK)
    assert result.reason("the playbook failed") == "Fail on here: the reason"
    assert result.errors == []
