"""``runner.standard_envvars``: ansible-playbook's home (``ANSIBLE_HOME``, which every
ansible-playbook creates when it starts, in check mode too) is the run's own temp dir, so that a run
creates nothing in the user's home (a dry-run on a machine where Ansible never ran must not leave
``~/.ansible``: tests/integration/test_pristine.py and test_leftovers.py show it end to end); the
collections are still looked up where the user keeps them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pcswitcher.jobs.runner import CALLBACK_DIR, EXIT_PLUGIN, enable_callback, standard_envvars


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


PROBE = """
import atexit, gc, os
from ansible.plugins.callback import CallbackBase

class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "probe"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        out = os.environ["PROBE_OUT"]
        atexit.register(lambda: open(out, "w").write(str(gc.get_freeze_count())))
"""


def _frozen_at_exit(tmp_path: Path, env: dict[str, str]) -> int:
    """Run a one-task playbook on localhost with ``env``; the objects frozen when its process exits
    (the user's callback ``probe`` records it). ansible-playbook is the one on the run's PATH."""
    (tmp_path / "cb").mkdir(exist_ok=True)
    (tmp_path / "cb" / "probe.py").write_text(PROBE)
    (tmp_path / "play.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {msg: hi}\n"
    )
    out = tmp_path / "frozen"
    done = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-c", "local", "play.yml"],
        check=False,
        cwd=tmp_path,
        env={**os.environ, **env, "PROBE_OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return int(out.read_text())


def test_every_playbook_ends_with_its_heap_frozen_and_the_users_callbacks_kept(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plugin pcswitcher_exit freezes the garbage collector when the playbook's stats are out, so
    that Python's shutdown skips its full collections (40-60 ms a playbook); a callback the user
    enabled still runs beside it."""
    monkeypatch.setenv("ANSIBLE_CALLBACK_PLUGINS", str(tmp_path / "cb"))
    monkeypatch.setenv("ANSIBLE_CALLBACKS_ENABLED", "probe")
    env = _env(tmp_path)
    assert env["ANSIBLE_CALLBACKS_ENABLED"] == f"probe,{EXIT_PLUGIN}"
    assert env["ANSIBLE_CALLBACK_PLUGINS"].split(os.pathsep) == [str(CALLBACK_DIR), str(tmp_path / "cb")]
    assert _frozen_at_exit(tmp_path, env) > 1000
    without = {k: v for k, v in env.items() if not k.startswith("ANSIBLE_CALLBACK")}
    assert _frozen_at_exit(tmp_path, without) == 0


def test_enabling_a_callback_twice_names_it_once(tmp_path: Path, home: Path) -> None:
    env = _env(tmp_path)
    enable_callback(env, EXIT_PLUGIN)
    enable_callback(env, "pcswitcher_gate")
    assert env["ANSIBLE_CALLBACKS_ENABLED"] == f"{EXIT_PLUGIN},pcswitcher_gate"
    assert env["ANSIBLE_CALLBACK_PLUGINS"] == str(CALLBACK_DIR)
