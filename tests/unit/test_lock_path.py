"""One machine, one sync lock: the file the driver takes as source (paths.lock_path) is the file its
agent takes as target (agent.default_lock_path), whatever ``XDG_STATE_HOME`` says. A relative value
is not a state home (the XDG rule): both ignore it, or a machine could be a source and a target at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcswitcher import paths
from pcswitcher.remote import agent


@pytest.mark.parametrize("value", [None, "", "relative/state", "/srv/state", "/srv/state/"])
def test_the_driver_and_the_agent_take_one_lock(
    value: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    if value is None:
        monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_STATE_HOME", value)
    lock = Path(agent.default_lock_path())
    assert paths.lock_path() == lock
    assert lock.is_absolute()
    home_default = tmp_path / ".local/state/pc-switcher/sync.lock"
    expected = Path(value) / "pc-switcher/sync.lock" if value and value.startswith("/") else home_default
    assert lock == expected
    assert paths.lock_path().parent == paths.state_dir()
