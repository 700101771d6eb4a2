"""``runner.spare_close_delay``: ansible-runner's module sees a ``pexpect.spawn`` whose close of an
ended (reaped) child does not sleep ptyprocess's ``delayafterclose``, and whose close of a live child
still waits and kills it, as pexpect's own. Seen through the sleeps ptyprocess asks for, not times."""

from __future__ import annotations

import ansible_runner.runner as runner_module
import pexpect
import ptyprocess.ptyprocess as ptyprocess_module
import pytest

from pcswitcher.jobs.runner import spare_close_delay


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    asked: list[float] = []
    real = ptyprocess_module.time.sleep

    def sleep(seconds: float) -> None:
        asked.append(seconds)
        real(seconds)

    monkeypatch.setattr(ptyprocess_module.time, "sleep", sleep)
    monkeypatch.setattr(runner_module, "pexpect", pexpect)
    spare_close_delay()
    spare_close_delay()  # twice: the same view, not a view of a view
    return asked


def test_only_runners_view_of_pexpect_changes(sleeps: list[float]) -> None:
    assert runner_module.pexpect.spawn is not pexpect.spawn
    assert issubclass(runner_module.pexpect.spawn, pexpect.spawn)
    assert runner_module.pexpect.EOF is pexpect.EOF
    assert runner_module.pexpect.TIMEOUT is pexpect.TIMEOUT


def test_closing_an_ended_child_does_not_sleep(sleeps: list[float]) -> None:
    child = runner_module.pexpect.spawn("sh", ["-c", "exit 3"])
    while child.isalive():  # as runner's loop: it reaps the child before close()
        child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=0.2)
    child.close()
    assert [s for s in sleeps if s > 0] == []
    assert child.exitstatus == 3


def test_closing_a_live_child_still_waits_and_ends_it(sleeps: list[float]) -> None:
    child = runner_module.pexpect.spawn("sleep", ["30"])
    child.close()
    assert child.delayafterclose in sleeps
    assert not child.isalive()
    assert child.signalstatus is not None
