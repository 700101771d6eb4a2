"""The way back: each sync carries pc-switcher, the config and the inventory to the target.

Run from this checkout (the tests' pc-switcher) nothing is installed: the install is not carried
(said once at INFO), the config and the inventory are. The installed case (``make install`` inside
a sandbox machine) is below.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.helpers import (
    CONFIG,
    dummy_config,
    leftovers,
    log_records,
    run_sync,
    write_config,
)
from tests.sandbox import Sandbox

TARGET_CONFIG_DIR = "/root/.config/pc-switcher"


@pytest.fixture(autouse=True)
def clean_machines(sb: Sandbox) -> Iterator[None]:
    assert leftovers(sb) == {}
    yield
    assert leftovers(sb) == {}


def _messages(sb: Sandbox) -> list[tuple[str, str]]:
    return [(str(r.get("level")), str(r.get("message"))) for r in log_records(sb.machines["source"])]


def test_from_a_checkout_the_config_and_inventory_go_and_the_install_does_not(sb: Sandbox) -> None:
    source, target = sb.machines["source"], sb.machines["target"]
    config_dir = target.path(TARGET_CONFIG_DIR)
    for name in ("config.yml", "inventory.yml", "config.yml.bak", "inventory.yml.bak"):
        (config_dir / name).unlink(missing_ok=True)
    write_config(source, dummy_config(0, 0))

    dry = run_sync(sb, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert not (config_dir / "config.yml").exists(), "a dry-run writes nothing"

    done = run_sync(sb)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (config_dir / "config.yml").read_bytes() == source.path(CONFIG).read_bytes()
    assert (config_dir / "inventory.yml").read_bytes() == sb.inventory_path.read_bytes()
    assert (config_dir / "config.yml").stat().st_mode & 0o777 == 0o600
    messages = _messages(sb)
    not_carried = [m for level, m in messages if "pc-switcher is not carried" in m]
    assert len(not_carried) == 1, messages
    assert "runs from a checkout" in not_carried[0]
    assert ("INFO", not_carried[0]) in messages
    warnings = [m for level, m in messages if level in {"WARNING", "ERROR", "CRITICAL"}]
    # the first sync and the snapshots (off in a sandbox) warn; nothing of the carry does
    assert [m for m in warnings if "first sync" not in m and "snapshots are disabled" not in m] == []
    assert not target.path("/opt/pc-switcher").exists()

    # another config: the target's previous one is kept as .bak; the same inventory is left alone
    previous = (config_dir / "config.yml").read_bytes()
    write_config(source, dummy_config(0, 1))
    again = run_sync(sb)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (config_dir / "config.yml.bak").read_bytes() == previous
    assert (config_dir / "config.yml").read_bytes() == source.path(CONFIG).read_bytes()
    assert not (config_dir / "inventory.yml.bak").exists()
    wrote = [m for _, m in _messages(sb) if m.startswith("wrote ")]
    assert wrote == [f"wrote config.yml to target:{TARGET_CONFIG_DIR} (the previous config.yml kept as .bak)"]
