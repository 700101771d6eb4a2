"""The retention of the snapshots (``agent.retention``, run by the agents and the role btrfs_snapshots's
module): which sessions a prune or a
``snapshots cleanup`` deletes. Pure function; the deletions themselves are tested on sandbox
machines (tests/integration/test_prune.py)."""

from __future__ import annotations

import calendar
import time
from types import ModuleType
from typing import Any

import pytest

from pcswitcher.remote import agent


@pytest.fixture(scope="module")
def pcs() -> ModuleType:
    return agent


def session(day: int, *phases: str) -> dict[str, Any]:
    sid = f"202001{day:02d}T000000Z-{day:04x}"
    stamp = calendar.timegm(time.strptime(sid[:16], "%Y%m%dT%H%M%SZ"))
    return {"id": sid, "time": stamp, "snapshots": [{"phase": p} for p in phases or ("pre", "post")]}


def doomed(
    pcs: ModuleType, sessions: list[dict[str, Any]], keep: int, older: int = 0, current: str = ""
) -> list[str]:
    """The ids deleted (oldest first); every session is either deleted or kept, never both."""
    gone, kept = pcs.retention(sessions, keep, older, current)
    ids = [s["id"] for s in gone]
    assert not set(ids) & set(kept)
    assert set(ids) | set(kept) == {s["id"] for s in sessions} | ({current} if current else set())
    return ids


def test_keep_counts_the_session_just_taken(pcs: ModuleType) -> None:
    sessions = [session(d) for d in range(1, 6)]
    # after a sync: its own session is the newest, the keep-1 before it stay
    assert doomed(pcs, sessions, keep=2, current=sessions[-1]["id"]) == [s["id"] for s in sessions[:3]]
    # a dry run: its session is not on disk, and still counts as the newest
    assert doomed(pcs, sessions, keep=2, current="20300101T000000Z-ffff") == [s["id"] for s in sessions[:4]]
    # without a current session (snapshots cleanup): the newest keep stay
    assert doomed(pcs, sessions, keep=2) == [s["id"] for s in sessions[:3]]


def test_the_newest_session_with_pre_snapshots_always_stays(pcs: ModuleType) -> None:
    # a rollback session (no pre) is the newest: the sync session it rolled back to stays (cleanup)
    sessions = [session(1), session(2), session(3, "rollback-replaced")]
    assert doomed(pcs, sessions, keep=1) == [sessions[0]["id"]]
    # a sync's own session has pre snapshots: the older ones are not protected then
    sessions = [session(1), session(2, "rollback-replaced"), session(3)]
    assert doomed(pcs, sessions, keep=1, current=sessions[2]["id"]) == [s["id"] for s in sessions[:2]]


def test_older_than_never_takes_the_protected_ones(pcs: ModuleType) -> None:
    sessions = [session(d) for d in range(1, 4)]  # all years old
    assert doomed(pcs, sessions, keep=10, older=3600) == [s["id"] for s in sessions[:2]]
    assert doomed(pcs, sessions, keep=10, older=3600, current=sessions[-1]["id"]) == [
        s["id"] for s in sessions[:2]
    ]
