"""``runner.standard_envvars``: ansible-playbook's home (``ANSIBLE_HOME``, which every
ansible-playbook creates when it starts, in check mode too) is the run's own temp dir, so that a run
creates nothing in the user's home (a dry-run on a machine where Ansible never ran must not leave
``~/.ansible``: tests/integration/test_pristine.py and test_leftovers.py show it end to end); the
collections are still looked up where the user keeps them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pcswitcher.jobs.runner import standard_envvars


def _env(tmp_path: Path, run_dir: str | None = None) -> dict[str, str]:
    return standard_envvars(
        project_dir=tmp_path,
        bin_dir=Path(sys.executable).parent,
        control_path=None,
        run_dir=run_dir,
        local_tmp=tmp_path / "state" / "tmp",
        ssh_keepalive=1,
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("ANSIBLE_HOME", "ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATH"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.mark.parametrize("existing", [False, True])
def test_the_ansible_home_is_the_runs_own(tmp_path: Path, home: Path, existing: bool) -> None:
    if existing:
        (home / ".ansible").mkdir()
    env = _env(tmp_path)
    assert env["ANSIBLE_HOME"] == str(tmp_path / "state" / "tmp")
    assert env["ANSIBLE_LOCAL_TEMP"] == env["ANSIBLE_HOME"]
    assert env["ANSIBLE_COLLECTIONS_PATH"] == f"{home}/.ansible/collections:/usr/share/ansible/collections"
    assert [p.name for p in home.iterdir()] == ([".ansible"] if existing else [])


def test_the_users_collections_stay_where_the_user_keeps_them(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANSIBLE_HOME", str(tmp_path / "chosen"))
    assert _env(tmp_path)["ANSIBLE_COLLECTIONS_PATH"].startswith(f"{tmp_path}/chosen/collections:")
    monkeypatch.setenv("ANSIBLE_COLLECTIONS_PATH", "/opt/colls")
    assert _env(tmp_path)["ANSIBLE_COLLECTIONS_PATH"] == "/opt/colls"


def test_a_runs_temp_files_are_in_its_directory(tmp_path: Path, home: Path) -> None:
    env = _env(tmp_path, run_dir="/tmp/pcswitcher-20261203T000000Z-abcd")
    assert env["TMPDIR"] == "/tmp/pcswitcher-20261203T000000Z-abcd"
    assert env["ANSIBLE_REMOTE_TMP"] == "/tmp/pcswitcher-20261203T000000Z-abcd/tmp"
    assert "TMPDIR" not in _env(tmp_path)
