"""``pc-switcher init``: every earlier copy is kept, and a config dir it cannot write gives one line,
exit 2, and leaves everything as it was (the real CLI, on this machine's file system in tmp_path)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import needs

PC_SWITCHER = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "pc-switcher")


def init(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(home), "XDG_STATE_HOME": str(home / "state")}
    return subprocess.run(
        [PC_SWITCHER, "init", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every entry under ``directory`` with its content (None for a directory)."""
    found: dict[str, bytes | None] = {}
    for path in sorted(directory.rglob("*")):
        found[str(path.relative_to(directory))] = None if path.is_dir() else path.read_bytes()
    return found


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert " — " in lines[0]
    return lines[0]


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Paths the test made immutable (chattr +i), made mutable again at the end."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def chattr_immutable(path: Path, made: list[Path]) -> None:
    result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if "not supported" in result.stderr:
        needs.fail(
            f"the file system of {path} has no immutable attribute (chattr +i): give pytest a temp dir "
            "on ext4, xfs or btrfs, e.g. `pytest --basetemp=/var/tmp/pcs-pytest`"
        )
    assert result.returncode == 0, result.stderr
    made.append(path)


def test_force_twice_keeps_every_earlier_copy(tmp_path: Path) -> None:
    config_dir = tmp_path / "pc-switcher"
    assert init(tmp_path).returncode == 0
    (config_dir / "config.yml").write_text("# my own config\n")
    (config_dir / "inventory.yml").write_text("# my own inventory\n")
    refused = one_error(init(tmp_path))
    assert "config.yml already exists" in refused
    assert (config_dir / "config.yml").read_text() == "# my own config\n"

    first = init(tmp_path, "--force")
    assert first.returncode == 0, first.stderr
    assert f"(the old one is kept as {config_dir / 'config.yml.bak'})" in first.stdout
    default = (config_dir / "config.yml").read_text()
    (config_dir / "config.yml").write_text("# edited after the first --force\n")
    second = init(tmp_path, "--force")
    assert second.returncode == 0, second.stderr
    third = init(tmp_path, "--force")
    assert third.returncode == 0, third.stderr
    assert (config_dir / "config.yml.bak").read_text() == "# my own config\n"
    assert (config_dir / "config.yml.bak.1").read_text() == "# edited after the first --force\n"
    assert (config_dir / "config.yml.bak.2").read_text() == default
    assert (config_dir / "inventory.yml.bak").read_text() == "# my own inventory\n"
    assert sorted(p.name for p in config_dir.iterdir()) == [
        "config.yml",
        "config.yml.bak",
        "config.yml.bak.1",
        "config.yml.bak.2",
        "inventory.yml",
        "inventory.yml.bak",
        "inventory.yml.bak.1",
        "inventory.yml.bak.2",
    ]


def test_a_backup_name_taken_by_a_symlink_is_not_followed(tmp_path: Path) -> None:
    config_dir = tmp_path / "pc-switcher"
    config_dir.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (config_dir / "config.yml").write_text("# mine\n")
    (config_dir / "config.yml.bak").symlink_to(victim)
    assert init(tmp_path, "--force").returncode == 0
    assert victim.read_text() == "precious\n"
    assert (config_dir / "config.yml.bak.1").read_text() == "# mine\n"


def test_config_dir_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "pc-switcher").write_text("not a directory\n")
    before = snapshot(tmp_path)
    line = one_error(init(tmp_path))
    assert f"cannot write {tmp_path / 'pc-switcher'}: File exists" in line
    assert "writable directory" in line
    assert snapshot(tmp_path) == before


def test_parent_of_config_dir_is_a_file(tmp_path: Path) -> None:
    home = tmp_path / "config-home"
    home.write_text("a file\n")
    line = one_error(init(home))
    assert "Not a directory" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config-home"]


def test_immutable_config_dir(tmp_path: Path, immutable: list[Path]) -> None:
    config_dir = tmp_path / "pc-switcher"
    config_dir.mkdir()
    (config_dir / "config.yml").write_text("# mine\n")
    before = snapshot(tmp_path)
    chattr_immutable(config_dir, immutable)
    line = one_error(init(tmp_path, "--force"))
    assert f"cannot write {config_dir / 'config.yml'}: Operation not permitted" in line
    assert snapshot(tmp_path) == before


def test_immutable_inventory_changes_neither_file(tmp_path: Path, immutable: list[Path]) -> None:
    """The config could be written, the inventory not: the config is left as it was too."""
    config_dir = tmp_path / "pc-switcher"
    config_dir.mkdir()
    (config_dir / "config.yml").write_text("# mine\n")
    (config_dir / "inventory.yml").write_text("# my hosts\n")
    chattr_immutable(config_dir / "inventory.yml", immutable)
    before = snapshot(tmp_path)
    line = one_error(init(tmp_path, "--force"))
    assert f"cannot write {config_dir / 'inventory.yml'}: Operation not permitted" in line
    assert snapshot(tmp_path) == before
