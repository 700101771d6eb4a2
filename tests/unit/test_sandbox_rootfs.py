"""The root machines' cache (tests/sandbox/rootfs.py) without building one: its key follows the
recipe, the mirror comes from apt's sources, a half-built or foreign cache dir is never used, and
concurrent callers build once. The build itself (mmdebstrap, ~30-120 s) is replaced by a stand-in
that writes what a build writes; tests/integration/test_root_machine.py runs the real one."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from tests.sandbox import rootfs
from tests.sandbox.machine import SandboxError
from tests.sandbox.rootfs import PACKAGES, RECIPE_VERSION, Recipe, ensure_root_cache, find_cache, host_mirror

MIRROR = "http://mirror.example.invalid/debian"


def test_the_key_changes_with_every_field_of_the_recipe() -> None:
    base = Recipe(mirror=MIRROR)
    variants = [
        replace(base, mirror=MIRROR + "2"),
        replace(base, suite="trixie"),
        replace(base, packages=(*PACKAGES, "vim-tiny")),
        replace(base, version=RECIPE_VERSION + 1),
    ]
    keys = {base.key(), *(v.key() for v in variants)}
    assert len(keys) == 5
    # the package order and duplicates do not matter
    assert replace(base, packages=tuple(reversed(PACKAGES)) + PACKAGES[:1]).key() == base.key()
    assert len(base.key()) == 16


def test_the_mirror_is_read_from_apts_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(rootfs.MIRROR_ENV, raising=False)
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "other.sources").write_text(
        "Types: deb\nURIs: http://other.example.invalid/x\nSuites: nodistro\nComponents: main\n"
    )
    (apt / "sources.list.d" / "off.sources").write_text(
        "Enabled: no\nTypes: deb\nURIs: http://off.example.invalid/debian\nSuites: bookworm\n"
    )
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://deb.example.invalid/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://sec.example.invalid/debian-security\n"
        "Suites: bookworm-security\n"
    )
    assert host_mirror(apt) == "http://deb.example.invalid/debian"
    # one-line sources.list comes first, options in brackets are skipped
    (apt / "sources.list").write_text(
        "# deb http://commented.example.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example.invalid/debian bookworm main\n"
    )
    assert host_mirror(apt) == "http://one.example.invalid/debian"
    # a file that is neither .list nor .sources is not read
    (apt / "sources.list").unlink()
    (apt / "sources.list.d" / "debian.sources").rename(apt / "sources.list.d" / "debian.sources.disabled")
    with pytest.raises(SandboxError, match=r"no http\(s\) apt source for bookworm .*PCS_SANDBOX_MIRROR"):
        host_mirror(apt)
    monkeypatch.setenv(rootfs.MIRROR_ENV, MIRROR)
    assert host_mirror(apt) == MIRROR


def _fake_build(
    calls: list[str], started: threading.Event | None = None, finish: threading.Event | None = None
) -> object:
    """Writes what rootfs._build writes (the image and then info.json, renamed into place); with the
    events, it says it started and waits for ``finish`` (mmdebstrap's half a minute)."""

    def build(recipe: Recipe, root: Path) -> rootfs.RootCache:
        calls.append(recipe.key())
        work = root / f".build-{recipe.key()}-x"
        work.mkdir()
        if started is not None and finish is not None:
            started.set()
            assert finish.wait(30)
        (work / rootfs.IMAGE_NAME).write_bytes(b"image")
        info = {"key": recipe.key(), "seconds": 1}
        (work / rootfs.INFO_NAME).write_text(json.dumps(info))
        work.rename(root / recipe.key())
        return rootfs.RootCache(root / recipe.key(), info)

    return build


def test_a_half_built_or_foreign_cache_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = Recipe(mirror=MIRROR)
    root = tmp_path / "root"
    final = root / recipe.key()
    final.mkdir(parents=True)
    (final / rootfs.IMAGE_NAME).write_bytes(b"half")  # no info.json: the build did not finish
    assert find_cache(recipe, tmp_path) is None
    (final / rootfs.INFO_NAME).write_text(json.dumps({"key": "0" * 16}))  # another recipe's
    assert find_cache(recipe, tmp_path) is None
    (final / rootfs.INFO_NAME).write_text("{not json")
    assert find_cache(recipe, tmp_path) is None
    # a build dir left by a killed builder is removed, and the cache is built
    stale = root / f".build-{recipe.key()}-dead"
    stale.mkdir()
    (final / rootfs.INFO_NAME).unlink()
    (final / rootfs.IMAGE_NAME).unlink()
    final.rmdir()
    calls: list[str] = []
    monkeypatch.setattr(rootfs, "_build", _fake_build(calls))
    cache = ensure_root_cache(recipe, tmp_path)
    assert calls == [recipe.key()]
    assert not stale.exists()
    assert cache.dir == final
    assert find_cache(recipe, tmp_path) == cache
    # found: no second build
    assert ensure_root_cache(recipe, tmp_path) == cache
    assert calls == [recipe.key()]


def test_a_changed_recipe_is_built_beside_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(rootfs, "_build", _fake_build(calls))
    old = ensure_root_cache(Recipe(mirror=MIRROR), tmp_path)
    new = ensure_root_cache(Recipe(mirror=MIRROR, version=RECIPE_VERSION + 1), tmp_path)
    assert len(calls) == 2
    assert old.dir != new.dir
    assert {c.dir for c in rootfs.list_caches(tmp_path)} == {old.dir, new.dir}
    assert rootfs.prune_caches(new, tmp_path) == [old.dir]
    assert [c.dir for c in rootfs.list_caches(tmp_path)] == [new.dir]


def test_two_concurrent_callers_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second caller comes while the first builds: it waits for the lock, then finds the cache."""
    calls: list[str] = []
    started, finish = threading.Event(), threading.Event()
    monkeypatch.setattr(rootfs, "_build", _fake_build(calls, started, finish))
    recipe = Recipe(mirror=MIRROR)
    results: list[rootfs.RootCache] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_root_cache(recipe, tmp_path))) for _ in "ab"
    ]
    threads[0].start()
    assert started.wait(30)
    threads[1].start()
    finish.set()
    for thread in threads:
        thread.join(30)
    assert calls == [recipe.key()]
    assert len(results) == 2
    assert results[0] == results[1]


def test_without_mmdebstrap_the_build_fails_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxError, match=r"^needs `mmdebstrap` \(package mmdebstrap\).*make bootstrap`$"):
        rootfs._mmdebstrap()
