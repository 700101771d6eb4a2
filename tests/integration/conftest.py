"""Fixtures for integration tests: real sandbox machines on this host (needs root)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests import needs
from tests.sandbox import Sandbox

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def _require_root() -> None:
    needs.root("sandbox machines use namespaces, loop devices and mounts")


@pytest.fixture(scope="session", autouse=True)
def _this_machine_can_run_them() -> None:
    """Every integration test needs root and the sandbox's tools: without them it FAILS (one line
    naming the fix), it does not skip. Session scope: it runs before every module's sandbox."""
    _require_root()
    needs.tools(needs.SANDBOX_TOOLS)


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., Sandbox]]:
    """``make(*names, base_dir=, size=, port=, root=, ro_binds=)``: a Sandbox with those machines
    (root machines with ``root=True``, see ``Sandbox.add``), torn down after the test."""
    _require_root()
    made: list[Sandbox] = []

    def make(
        *names: str,
        base_dir: Path | None = None,
        size: str = "2G",
        port: int = 2222,
        root: bool = False,
        ro_binds: Mapping[str, Path] | None = None,
    ) -> Sandbox:
        if root:
            needs.tools(needs.ROOT_MACHINE_TOOLS)
        sb = Sandbox(base_dir=base_dir, size=size, port=port)
        made.append(sb)
        for name in names:
            if root:
                sb.add(name, root=True, ro_binds=ro_binds)
            else:
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
