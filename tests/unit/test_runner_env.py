"""``runner.standard_envvars``: ansible-playbook's home is moved into the run's state only when the
default ``~/.ansible`` does not exist (a dry-run on a machine where Ansible never ran must not leave
it; tests/integration/test_pristine.py shows it end to end), and never when the user chose one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pcswitcher.runner import standard_envvars


def _env(tmp_path: Path) -> dict[str, str]:
    return standard_envvars(
        project_dir=tmp_path,
        bin_dir=Path(sys.executable).parent,
        control_path=None,
        run_dir=None,
        local_tmp=tmp_path / "state" / "tmp",
        ssh_keepalive=1,
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ANSIBLE_HOME", raising=False)
    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    return home


def test_no_ansible_home_yet_uses_the_runs_state(tmp_path: Path, home: Path) -> None:
    env = _env(tmp_path)
    moved = tmp_path / "state" / "ansible-home"
    assert env["ANSIBLE_HOME"] == str(moved)
    assert moved.is_dir()
    assert moved.stat().st_mode & 0o777 == 0o700
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("existing", ["dir", "symlink"])
def test_an_existing_ansible_home_is_used(tmp_path: Path, home: Path, existing: str) -> None:
    if existing == "dir":
        (home / ".ansible").mkdir()
    else:
        (home / ".ansible").symlink_to(tmp_path / "elsewhere")  # dangling: Ansible's business
    assert "ANSIBLE_HOME" not in _env(tmp_path)
    assert not (tmp_path / "state" / "ansible-home").exists()


@pytest.mark.parametrize("var", ["ANSIBLE_HOME", "ANSIBLE_CONFIG"])
def test_a_home_or_config_the_user_chose_is_left_alone(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    monkeypatch.setenv(var, str(tmp_path / "chosen"))
    assert "ANSIBLE_HOME" not in _env(tmp_path)
    assert not (tmp_path / "state" / "ansible-home").exists()
