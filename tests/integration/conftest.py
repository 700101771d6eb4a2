"""Fixtures for integration tests: real sandbox machines on this host (needs root)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.sandbox import Sandbox

NOT_ROOT_REASON = "integration tests need root: sandbox machines use namespaces, loop devices and mounts"
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason=NOT_ROOT_REASON))


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip(NOT_ROOT_REASON)


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., Sandbox]]:
    """``make(*names, base_dir=, size=, port=)``: a Sandbox with those machines, torn down after the test."""
    _require_root()
    made: list[Sandbox] = []

    def make(*names: str, base_dir: Path | None = None, size: str = "2G", port: int = 2222) -> Sandbox:
        sb = Sandbox(base_dir=base_dir, size=size, port=port)
        made.append(sb)
        for name in names:
            sb.add(name)
        return sb

    try:
        yield make
    finally:
        errors: list[BaseException] = []
        for sb in reversed(made):
            try:
                sb.down()
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A Sandbox with machines ``source`` and ``target`` (torn down even when the test fails)."""
    _require_root()
    with Sandbox() as sb:
        sb.add("source")
        sb.add("target")
        yield sb


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    """One Sandbox with ``source`` and ``target`` shared by the tests of a module.

    Cheaper than a sandbox per test; the modules that use it check that every test leaves both
    machines clean, so tests cannot leak into each other.
    """
    _require_root()
    with Sandbox() as sandbox:
        sandbox.add("source")
        sandbox.add("target")
        yield sandbox
