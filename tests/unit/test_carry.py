"""The carry (the way back): what each machine has, and what the role decides (roles/carry)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pcswitcher.remote import agent
from pcswitcher.run.carry import Carry
from tests.unit.role_files import ROLES, load_role_file

carry_plan_mod = load_role_file("carry/filter_plugins/carry_plan.py", "carry_plan")
carry_plan = carry_plan_mod.carry_plan


def make_install(prefix: Path, version: str = "0.1.0", python: str = "3.11", ident: str = "a" * 64) -> Path:
    """The layout of `make install` (README): app/, venv/ with its pyvenv.cfg, install.json last."""
    (prefix / "app" / "pcswitcher").mkdir(parents=True)
    (prefix / "app" / "pcswitcher" / "__init__.py").write_text(f'__version__ = "{version}"\n')
    (prefix / "venv" / "bin").mkdir(parents=True)
    (prefix / "venv" / "pyvenv.cfg").write_text(
        f"home = {Path(sys.executable).parent}\nversion = {python}.0\n"
    )
    (prefix / "venv" / "bin" / "pc-switcher").write_text("#!/bin/sh\n")
    (prefix / "install.json").write_text(json.dumps({"version": version, "python": python, "id": ident}))
    return prefix


# -- the module: source --------------------------------------------------------------------------


def test_source_of_an_install(tmp_path: Path) -> None:
    prefix = make_install(tmp_path / "opt" / "pc-switcher")
    info = agent.source_info(str(prefix / "app"))
    assert info["installed"] is True
    assert (info["prefix"], info["version"], info["python"], info["id"]) == (
        str(prefix),
        "0.1.0",
        "3.11",
        "a" * 64,
    )
    assert info["python_home"] == str(Path(sys.executable).parent)
    assert info["files"] == 4


def test_source_of_a_checkout(tmp_path: Path) -> None:
    """A checkout (no install.json beside it; or one beside a dir not called app) is no install."""
    app = tmp_path / "checkout"
    (app / "pcswitcher").mkdir(parents=True)
    (app / "pcswitcher" / "__init__.py").write_text("__version__ = '1.2.3'\n")
    (tmp_path / "install.json").write_text(json.dumps({"version": "1.2.3", "python": "3.11", "id": "x"}))
    info = agent.source_info(str(app))
    assert info["installed"] is False
    assert info["version"] == "1.2.3"


@pytest.mark.parametrize(
    "record",
    [
        "not json",
        "[]",
        json.dumps({"version": "0.1.0", "python": "3.11"}),  # no id: written last, so incomplete
        json.dumps({"version": 1, "python": "3.11", "id": "x"}),
        json.dumps({"version": "", "python": "3.11", "id": "x"}),
    ],
)
def test_a_broken_install_record_is_no_install(tmp_path: Path, record: str) -> None:
    prefix = make_install(tmp_path / "p")
    (prefix / "install.json").write_text(record)
    assert agent.source_info(str(prefix / "app"))["installed"] is False
    assert agent.prefix_state(str(prefix)) == ("incomplete", None)


def test_an_install_record_that_is_a_symlink_is_no_install(tmp_path: Path) -> None:
    prefix = make_install(tmp_path / "p")
    real = tmp_path / "elsewhere.json"
    (prefix / "install.json").rename(real)
    (prefix / "install.json").symlink_to(real)
    assert agent.read_install(str(prefix)) is None


# -- the module: target --------------------------------------------------------------------------


def test_target_states(tmp_path: Path) -> None:
    assert agent.prefix_state(str(tmp_path / "none")) == ("absent", None)
    (tmp_path / "empty").mkdir()
    assert agent.prefix_state(str(tmp_path / "empty")) == ("absent", None)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data").write_text("x")
    assert agent.prefix_state(str(tmp_path / "other"))[0] == "foreign"
    (tmp_path / "file").write_text("x")
    assert agent.prefix_state(str(tmp_path / "file"))[0] == "foreign"
    prefix = make_install(tmp_path / "inst")
    assert agent.prefix_state(str(prefix))[0] == "install"
    (tmp_path / "link").symlink_to(prefix)
    assert agent.prefix_state(str(tmp_path / "link"))[0] == "symlink"
    # the layout with another file beside it is not ours to delete
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "app" / "pcswitcher").mkdir(parents=True)
    (tmp_path / "mixed" / "notes.txt").write_text("mine")
    assert agent.prefix_state(str(tmp_path / "mixed"))[0] == "foreign"


def test_link_states(tmp_path: Path) -> None:
    prefix = make_install(tmp_path / "inst", version="0.2.0")
    link = tmp_path / "bin" / "pc-switcher"
    link.parent.mkdir()
    assert agent.link_state(str(link))[0] == "absent"
    link.symlink_to(prefix / "venv" / "bin" / "pc-switcher")
    state, record, where = agent.link_state(str(link))
    assert (state, (record or {}).get("version"), where) == ("install", "0.2.0", str(prefix))
    link.unlink()
    link.symlink_to("../inst/venv/bin/pc-switcher")  # relative
    assert agent.link_state(str(link))[0] == "install"
    link.unlink()
    link.symlink_to("/usr/bin/true")
    assert agent.link_state(str(link))[0] == "foreign"
    link.unlink()
    link.write_text("#!/bin/sh\n")
    assert agent.link_state(str(link))[0] == "foreign"


def test_target_info_config_and_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    (tmp_path / "cfg" / "pc-switcher").mkdir(parents=True)
    (tmp_path / "cfg" / "pc-switcher" / "config.yml").write_text("jobs: {}\n")
    info = agent.target_info("", str(tmp_path / "no-link"), str(Path(sys.executable).parent))
    assert info["config_dir"] == str(tmp_path / "cfg" / "pc-switcher")
    assert info["config_dir_exists"] is True
    assert len(info["config_files"]["config.yml"]) == 64
    assert info["config_files"]["inventory.yml"] == ""
    assert info["python"] == "{}.{}".format(*sys.version_info[:2])
    assert agent.python_minor("relative/bin") == ""
    assert agent.python_minor(str(tmp_path)) == ""  # no python3 there


# -- the plan -------------------------------------------------------------------------------------


def source(**kw: Any) -> dict[str, Any]:
    base = {
        "installed": True,
        "prefix": "/opt/pc-switcher",
        "version": "0.2.0",
        "python": "3.11",
        "id": "new",
        "python_home": "/usr/bin",
        "app_dir": "/opt/pc-switcher/app",
        "file_sha256": {"/c.yml": "c" * 64, "/i.yml": "i" * 64},
    }
    return {**base, **kw}


def target(**kw: Any) -> dict[str, Any]:
    base = {
        "prefix": "/opt/pc-switcher",
        "prefix_state": "absent",
        "install": {},
        "link": "/usr/local/bin/pc-switcher",
        "link_state": "absent",
        "link_install": {},
        "link_prefix": "",
        "python": "3.11",
        "config_files": {"config.yml": "", "inventory.yml": ""},
    }
    return {**base, **kw}


def installed(version: str, ident: str = "old", prefix: str = "/opt/pc-switcher") -> dict[str, Any]:
    record = {"version": version, "python": "3.11", "id": ident}
    return {
        "prefix_state": "install",
        "install": record,
        "link_state": "install",
        "link_install": record,
        "link_prefix": prefix,
    }


def test_a_fresh_target_gets_the_install() -> None:
    plan = carry_plan(source(), target(), become=True, host="b")
    assert (plan["problems"], plan["install"], plan["warning"]) == ([], True, "")


def test_an_older_or_equal_target_is_replaced_and_the_same_install_is_left() -> None:
    for version in ("0.1.0", "0.2.0", "0.2.0rc1", "0.1.99"):
        plan = carry_plan(source(), target(**installed(version)), become=True, host="b")
        assert (plan["problems"], plan["install"]) == ([], True), version
    same = carry_plan(source(), target(**installed("0.2.0", ident="new")), become=True, host="b")
    assert (same["install"], same["reason"]) == (False, "same")


@pytest.mark.parametrize("theirs", ["0.10.0", "0.2.1", "1.0", "0.2.0.post1"])
def test_a_newer_target_is_refused_naming_both_versions(theirs: str) -> None:
    """PEP 440 order, not string order ("0.10.0" > "0.2.0")."""
    plan = carry_plan(source(), target(**installed(theirs)), become=True, host="b")
    assert len(plan["problems"]) == 1
    problem = plan["problems"][0]
    assert f"b has pc-switcher {theirs}" in problem
    assert "newer than 0.2.0" in problem
    assert "fix:" in problem
    assert "\n" not in problem


def test_a_newer_target_is_refused_from_a_checkout_too() -> None:
    """Not installed here: nothing is carried, but the target's newer install still refuses."""
    checkout = {"installed": False, "version": "0.2.0", "prefix": "/src", "app_dir": "/src/pc-switcher"}
    plan = carry_plan(
        checkout,
        target(prefix="", link_state="install", link_install={"version": "0.3"}, link_prefix="/opt/x"),
        host="b",
    )
    assert len(plan["problems"]) == 1
    assert "0.3" in plan["problems"][0]
    older = carry_plan(
        checkout,
        target(prefix="", link_state="install", link_install={"version": "0.1"}, link_prefix="/opt/x"),
    )
    assert (older["problems"], older["install"], older["reason"]) == ([], False, "checkout")


@pytest.mark.parametrize("bad", ["not-a-version", "1.0$(reboot)", "1.0\nerror: fake", ""])
def test_a_version_that_cannot_be_compared(bad: str) -> None:
    plan = carry_plan(source(), target(**installed(bad)), become=True, host="b")
    if bad:
        assert len(plan["problems"]) == 1
        assert "is not a PEP 440 version" in plan["problems"][0]
    else:  # no version: read_install would not call it an install; nothing to compare
        assert plan["problems"] == []


def test_a_target_where_the_install_cannot_go() -> None:
    for state in ("foreign", "symlink"):
        plan = carry_plan(source(), target(prefix_state=state), become=True, host="b")
        assert len(plan["problems"]) == 1
        assert "is not a pc-switcher install" in plan["problems"][0]
    plan = carry_plan(source(), target(link_state="foreign"), become=True, host="b")
    assert "/usr/local/bin/pc-switcher exists and is not a link" in plan["problems"][0]
    plan = carry_plan(source(), target(), become=False, host="b")
    assert "ansible_become: true" in plan["problems"][0]


def test_another_python_warns_and_carries_no_install() -> None:
    plan = carry_plan(source(), target(python="3.12"), become=True, host="b")
    assert (plan["problems"], plan["install"], plan["reason"]) == ([], False, "python")
    warning = plan["warning"]
    assert "python 3.11" in warning
    assert "/usr/bin/python3 is 3.12" in warning
    assert "make install" in warning
    assert "\n" not in warning
    missing = carry_plan(source(), target(python=""), become=True, host="b")
    assert "is missing" in missing["warning"]


def test_config_files() -> None:
    files = {"config.yml": "/c.yml", "inventory.yml": "/i.yml"}
    fresh = carry_plan(source(), target(), become=True, files=files)["files"]
    assert [(f["name"], f["had"], f["same"]) for f in fresh] == [
        ("config.yml", False, False),
        ("inventory.yml", False, False),
    ]
    theirs = target(config_files={"config.yml": "c" * 64, "inventory.yml": "x" * 64})
    kept = carry_plan(source(), theirs, become=True, files=files)["files"]
    assert [(f["had"], f["same"]) for f in kept] == [(True, True), (True, False)]
    missing = carry_plan(source(), target(), become=True, files={"config.yml": "/none.yml"})["files"]
    assert missing[0]["sha"] == ""  # not a regular file on the source: not carried


def _ansible(module: str, args: str) -> tuple[int, dict[str, Any]]:
    """``ansible localhost -m MODULE -a ARGS --check`` with the carry role's library and module_utils
    (as a play gives them to the module): its exit code and the module's result."""
    argv = [str(Path(sys.executable).parent / "ansible"), "localhost", "-i", "localhost,", "-c", "local"]
    env = {
        **os.environ,
        "ANSIBLE_LIBRARY": str(ROLES / "carry" / "library"),
        "ANSIBLE_MODULE_UTILS": str(ROLES / "carry" / "module_utils"),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "minimal",  # "localhost | STATE => {json}"
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    }
    done = subprocess.run(
        [*argv, "-m", module, "-a", args, "--check"], capture_output=True, text=True, env=env, check=False
    )
    return done.returncode, json.loads(done.stdout[done.stdout.index(" => {") + 4 :])


def test_the_module_runs_in_check_mode_as_ansible_calls_it(tmp_path: Path) -> None:
    """The module (with the agent's code as its module_utils) reads only: Ansible runs it in check
    mode, and it fails on a relative path."""
    prefix = make_install(tmp_path / "p")
    code, result = _ansible("pcs_carry", f"action=target prefix={prefix} link=rel/link")
    assert (code, result["msg"]) == (2, "link must be an absolute path, not 'rel/link'"), result
    code, result = _ansible("pcs_carry", f"action=target prefix={prefix} link=/nonexistent/pc-switcher")
    assert (code, result["prefix_state"], result["changed"]) == (0, "install", False), result


# -- the module: write ----------------------------------------------------------------------------


def test_write_files_keeps_the_previous_as_bak(tmp_path: Path) -> None:
    folder = tmp_path / "cfg" / "pc-switcher"
    files = [{"name": "config.yml", "content": "a: 1\n"}, {"name": "inventory.yml", "content": "all: {}\n"}]
    assert agent.write_files(str(folder), files, check=True) == (["config.yml", "inventory.yml"], [])
    assert not folder.exists(), "check mode writes nothing"
    assert agent.write_files(str(folder), files, check=False) == (["config.yml", "inventory.yml"], [])
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "config.yml").read_text() == "a: 1\n"
    assert (folder / "config.yml").stat().st_mode & 0o777 == 0o600
    assert agent.write_files(str(folder), files, check=False) == ([], [])  # the same: nothing
    changed = [{"name": "config.yml", "content": "a: 2\n"}]
    assert agent.write_files(str(folder), changed, check=False) == (["config.yml"], ["config.yml"])
    assert (folder / "config.yml.bak").read_text() == "a: 1\n"
    assert (folder / "config.yml.bak").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in folder.iterdir()) == ["config.yml", "config.yml.bak", "inventory.yml"]


@pytest.mark.parametrize("name", ["../evil.yml", "config.yml/../../x", ".bashrc", "config.yml.bak"])
def test_write_files_writes_only_its_two_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="is not a file pc-switcher writes"):
        agent.write_files(str(tmp_path), [{"name": name, "content": "x"}], check=False)
    assert list(tmp_path.iterdir()) == []


def test_write_files_refuses_a_directory_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "config.yml").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        agent.write_files(str(tmp_path), [{"name": "config.yml", "content": "x"}], check=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        agent.write_files(str(tmp_path / "file"), [{"name": "config.yml", "content": "x"}], check=False)


def test_write_files_replaces_a_symlink_not_its_target(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "config.yml").symlink_to(victim)
    agent.write_files(str(folder), [{"name": "config.yml", "content": "new\n"}], check=False)
    assert victim.read_text() == "keep me\n"
    assert not (folder / "config.yml").is_symlink()
    assert (folder / "config.yml").read_text() == "new\n"


def test_carry_contents_reads_only_what_differs(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text("jobs: {}\n")
    files = [
        {"name": "config.yml", "src": str(tmp_path / "c.yml"), "sha": "x", "same": False},
        {"name": "inventory.yml", "src": str(tmp_path / "none"), "sha": "y", "same": True},
        {"name": "other", "src": str(tmp_path / "none"), "sha": "", "same": False},
    ]
    assert carry_plan_mod.carry_contents(files) == {"config.yml": "jobs: {}\n"}


# -- the agents' carry command, and the driver's check through it ---------------------------------


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (
            {"action": "target", "prefix": "opt/pc-switcher"},
            "prefix must be an absolute path, not 'opt/pc-switcher'",
        ),
        ({"action": "target", "link": 5}, "link must be an absolute path, not 5"),
        ({"action": "target", "python_home": "bin"}, "python_home must be an absolute path"),
        ({"action": "remove"}, "unknown carry action 'remove'"),
        ({"action": "write", "config_dir": "cfg", "files": []}, "config_dir must be an absolute path"),
        ({"action": "write", "config_dir": "/tmp/x", "files": "config.yml"}, "files must be a list"),
        (
            {"action": "write", "config_dir": "/tmp/x", "files": [{"name": "config.yml"}]},
            "files must be a list",
        ),
    ],
)
def test_a_carry_request_outside_the_allowlist_is_one_error(request_: dict[str, Any], error: str) -> None:
    reply = agent.carry(request_)
    assert error in str(reply.get("error")), reply


def test_the_carry_command_writes_only_its_two_names_and_a_check_writes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "cfg"
    bad = agent.carry(
        {"action": "write", "config_dir": str(folder), "files": [{"name": "../x", "content": "a"}]}
    )
    assert "'../x' is not a file pc-switcher writes" in str(bad["error"])
    request = {
        "action": "write",
        "config_dir": str(folder),
        "files": [{"name": "config.yml", "content": "a: 1\n"}],
    }
    assert agent.carry({**request, "check": True}) == {
        "changed": True,
        "written": ["config.yml"],
        "backups": [],
    }
    assert not folder.exists()
    assert agent.carry(request)["written"] == ["config.yml"]
    assert (folder / "config.yml").read_text() == "a: 1\n"
    assert "bad carry command" in str(agent._json_command("carry {broken", agent.carry)["error"])
    assert "not a JSON object" in str(agent._json_command("carry [1]", agent.carry)["error"])


def test_the_drivers_check_through_the_agent_decides_as_the_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pcswitcher.run.carry with the agent's carry in-process: a checkout carries no install, and
    the config is written only when it differs (then the next check finds it the same)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "target-cfg"))
    config, inventory = tmp_path / "config.yml", tmp_path / "inventory.yml"
    config.write_text("jobs: {}\n")
    inventory.write_text("all: {}\n")
    carry = Carry(ROLES.parent, lambda *a: None, config, inventory, "t1")
    carry.carry_io = agent.carry
    carry.validate()
    checked = carry.checked
    assert (checked["reason"], checked["install"], checked["files_same"]) == ("checkout", False, False)
    assert checked["config_dir"] == str(tmp_path / "target-cfg" / "pc-switcher")
    data = carry.carry()
    assert data["written"] == ["config.yml", "inventory.yml"]
    assert (tmp_path / "target-cfg" / "pc-switcher" / "inventory.yml").read_text() == "all: {}\n"
    carry.validate()
    assert carry.checked["files_same"] is True
