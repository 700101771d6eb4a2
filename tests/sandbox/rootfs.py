"""The cached Debian root of the sandbox's root machines (``Sandbox.add(name, root=True)``).

Built once on this host with ``mmdebstrap --variant=apt`` from the Debian mirror this host's apt uses
(read from ``/etc/apt/sources.list*``; ``$PCS_SANDBOX_MIRROR`` overrides it) and cached outside the
repo in ``/var/cache/pcswitcher-sandbox/root/<key>/`` (base overridable with ``$PCS_SANDBOX_CACHE``):

- ``root.img``: a sparse btrfs image whose subvolume ``base`` (read-only) holds the Debian tree;
  each root machine's disk starts as a sparse copy of it, its ``/`` a writable snapshot of ``base``;
- ``info.json``: the recipe, the build's seconds and the tree's size.

``<key>`` is a hash of the :class:`Recipe` (suite, packages, mirror, :data:`RECIPE_VERSION`): a
changed recipe builds a new cache beside the old one. A build runs in a ``.build-*`` dir (in its own
PID and mount namespaces: a killed build leaves no mount, loop device or process) and is renamed to
``<key>`` only when complete, so a half-built cache is never used; an exclusive lock on
``root/.lock`` makes a second builder wait for the first and then use its result.

The tree has ``/usr/sbin/policy-rc.d`` answering 101 ("action forbidden"), as Debian chroots do:
package maintainer scripts run through ``invoke-rc.d`` cannot start services (there is no systemd in
a machine either). Documentation, man pages and translations are left out (``path-exclude`` in
``/etc/dpkg/dpkg.cfg.d/99mmdebstrap``, which also holds for packages installed later), the
``/etc/ssh/ssh_host_*`` keys are removed (each machine gets its own in its state dir), and apt has
no source and no package lists: a machine is offline, its apt reaches only the repositories a test
gives it (e.g. through ``ro_binds`` at ``/srv/pcs-apt``). To reach Debian from a machine, copy
``/usr/share/pcs-sandbox/debian.list`` (the mirror's line) to ``/etc/apt/sources.list.d/`` there and
run ``apt-get update``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.sandbox.machine import PYTHON_INTERPRETER, SandboxError, base_lock, ensure_loop_devices

DEFAULT_CACHE = Path("/var/cache/pcswitcher-sandbox")
CACHE_ENV = "PCS_SANDBOX_CACHE"
MIRROR_ENV = "PCS_SANDBOX_MIRROR"
SUITE = "bookworm"
#: bump when the build steps change in a way the other recipe fields do not show
RECIPE_VERSION = 3
#: what a source and a target need: sshd and ssh, python3 for Ansible (and python3-apt,
#: python3-debian for its apt modules), the tools pc-switcher's jobs and the tests run
PACKAGES = (
    "acl",
    "attr",
    "btrfs-progs",
    "gnupg",
    "iproute2",
    "mount",
    "openssh-client",
    "openssh-server",
    "procps",
    "psmisc",
    "python3",
    "python3-apt",
    "python3-debian",
    "rsync",
    "sudo",
    "tmux",
)
IMAGE_NAME = "root.img"
INFO_NAME = "info.json"
BASE_SUBVOLUME = "base"
IMAGE_SIZE = 2 << 30  # sparse: the tree uses about 210 MB of it
_BUILD_SCRIPT = Path(__file__).with_name("_build_root.py")
_KEY = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class Recipe:
    """What the cached root is built from; :meth:`key` names its cache dir."""

    mirror: str
    suite: str = SUITE
    packages: tuple[str, ...] = PACKAGES
    version: int = RECIPE_VERSION

    def key(self) -> str:
        data = {**asdict(self), "packages": sorted(set(self.packages))}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RootCache:
    """A complete cached root: ``image`` holds the read-only subvolume ``base``."""

    dir: Path
    info: dict[str, Any] = field(compare=False)

    @property
    def image(self) -> Path:
        return self.dir / IMAGE_NAME


def cache_base(override: Path | None = None) -> Path:
    """The dir holding the cached roots' dir ``root/`` (``$PCS_SANDBOX_CACHE`` or the default)."""
    return Path(os.path.abspath(override or os.environ.get(CACHE_ENV) or DEFAULT_CACHE))


# --------------------------------------------------------------------------- the mirror


def _deb822_uris(text: str, suite: str) -> list[str]:
    uris: list[str] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
            continue
        if suite in fields.get("suites", "").split():
            uris += fields.get("uris", "").split()
    return uris


def _one_line_uris(text: str, suite: str) -> list[str]:
    uris: list[str] = []
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            uris.append(words[1])
    return uris


def host_mirror(apt_dir: Path = Path("/etc/apt"), suite: str = SUITE) -> str:
    """The first ``http(s)`` URI this host's apt uses for ``suite`` (``$PCS_SANDBOX_MIRROR`` wins)."""
    override = os.environ.get(MIRROR_ENV)
    if override:
        return override
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file() or path.suffix not in (".list", ".sources"):
            continue
        text = path.read_text(errors="replace")
        uris = _deb822_uris(text, suite) if path.suffix == ".sources" else _one_line_uris(text, suite)
        for uri in uris:
            if uri.startswith(("http://", "https://")):
                return uri.rstrip("/")
    raise SandboxError(
        f"no http(s) apt source for {suite} in {apt_dir}/sources.list*:"
        f" set ${MIRROR_ENV} to a Debian mirror URL"
    )


# --------------------------------------------------------------------------- finding and building


def find_cache(recipe: Recipe, base: Path | None = None) -> RootCache | None:
    """The complete cache of ``recipe`` (a dir named by its key with its info file), or None."""
    path = cache_base(base) / "root" / recipe.key()
    try:
        info = json.loads((path / INFO_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not (path / IMAGE_NAME).is_file() or info.get("key") != recipe.key():
        return None
    return RootCache(path, info)


def ensure_root_cache(
    recipe: Recipe | None = None, base: Path | None = None, say: Callable[[str], None] | None = None
) -> RootCache:
    """The cached root of ``recipe`` (default: this host's mirror and :data:`PACKAGES`), built first
    when missing (30-120 s, about 210 MB); ``say`` gets one line when a build starts."""
    recipe = recipe or Recipe(mirror=host_mirror())
    found = find_cache(recipe, base)
    if found is not None:
        return found
    root = cache_base(base) / "root"
    with base_lock(root):
        found = find_cache(recipe, base)  # built by another builder while this one waited
        if found is not None:
            return found
        for stale in root.glob(".build-*"):  # left by a killed builder (builders hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        if say is not None:
            say(f"building the root machines' Debian root in {root / recipe.key()} (once, 30-120 s)")
        return _build(recipe, root)


def _mmdebstrap() -> str:
    found = shutil.which("mmdebstrap")
    if found is None:
        raise SandboxError("needs `mmdebstrap` (package mmdebstrap), not installed: run `make bootstrap`")
    return found


def _build(recipe: Recipe, root: Path) -> RootCache:
    started = time.monotonic()
    mmdebstrap = _mmdebstrap()
    ensure_loop_devices()
    work = Path(tempfile.mkdtemp(prefix=f".build-{recipe.key()}-", dir=root))
    try:
        image = work / IMAGE_NAME
        with open(image, "wb") as fh:
            fh.truncate(IMAGE_SIZE)
        _run(["mkfs.btrfs", "-q", "-f", "-L", "pcs-root-cache", str(image)])
        cfg = {
            "image": str(image),
            "mnt": str(work / "mnt"),
            "subvolume": BASE_SUBVOLUME,
            "mmdebstrap": mmdebstrap,
            "suite": recipe.suite,
            "mirror": recipe.mirror,
            "packages": sorted(set(recipe.packages)),
            "log": str(work / "build.log"),
        }
        (work / "build.json").write_text(json.dumps(cfg, indent=2) + "\n")
        _run_build(work)
        info = {
            "key": recipe.key(),
            "recipe": asdict(recipe),
            "seconds": round(time.monotonic() - started, 1),
            "tree_mb": json.loads((work / "tree.json").read_text())["tree_mb"],
            "image_mb": round(image.stat().st_blocks * 512 / 2**20),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (work / INFO_NAME).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        final = root / recipe.key()
        os.rename(work, final)  # atomic: the cache is complete or absent
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return RootCache(final, info)


def _run_build(work: Path) -> None:
    """``_build_root.py`` in new PID and mount namespaces (its mounts and processes end with it).

    ``unshare`` dies with this process (``setpriv --pdeathsig``) and takes the namespace with it
    (``--kill-child``): a builder killed mid-build leaves nobody writing into its build dir, which
    the next builder removes."""
    argv = [
        "setpriv",
        "--pdeathsig",
        "KILL",
        "--",
        "unshare",
        "--pid",
        "--mount",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "--propagation",
        "private",
        "--",
        PYTHON_INTERPRETER if os.path.exists(PYTHON_INTERPRETER) else sys.executable,
        "-I",
        str(_BUILD_SCRIPT),
        str(work / "build.json"),
    ]
    res = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        log = work / "build.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:]) if log.exists() else ""
        raise SandboxError(f"building the root machines' Debian root failed: {res.stderr.strip()}\n{tail}")


def _run(argv: list[str]) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SandboxError(f"{' '.join(argv)} failed (rc {res.returncode}): {res.stderr.strip()}")


def list_caches(base: Path | None = None) -> list[RootCache]:
    """Every complete cached root under the base (any recipe)."""
    found: list[RootCache] = []
    root = cache_base(base) / "root"
    for path in sorted(root.glob("*")) if root.is_dir() else []:
        if _KEY.fullmatch(path.name):
            with contextlib.suppress(OSError, ValueError):
                found.append(RootCache(path, json.loads((path / INFO_NAME).read_text())))
    return found


def prune_caches(keep: RootCache, base: Path | None = None) -> list[Path]:
    """Remove every cached root but ``keep`` (older recipes); returns the dirs removed."""
    removed: list[Path] = []
    root = cache_base(base) / "root"
    with base_lock(root):
        for cache in list_caches(base):
            if cache.dir != keep.dir:
                shutil.rmtree(cache.dir)
                removed.append(cache.dir)
    return removed


# --------------------------------------------------------------------------- command line


def _cmd_root_cache(args: argparse.Namespace) -> int:
    recipe = Recipe(mirror=host_mirror())
    started = time.monotonic()
    found = find_cache(recipe, args.cache_dir)
    cache = found or ensure_root_cache(recipe, args.cache_dir, say=print)
    seconds = time.monotonic() - started
    info = cache.info
    print(f"root cache: {cache.dir}")
    print(f"  image: {cache.image} ({info.get('image_mb')} MB on disk, tree {info.get('tree_mb')} MB)")
    print(
        f"  recipe: {recipe.suite} from {recipe.mirror}, {len(recipe.packages)} packages, v{recipe.version}"
    )
    if found is None:
        print(f"  built in {info.get('seconds')} s")
    else:
        print(f"  built {info.get('built')} in {info.get('seconds')} s; found in {seconds:.1f} s")
    if args.prune:
        for path in prune_caches(cache, args.cache_dir):
            print(f"removed {path}")
    return 0


def register(sub: Any) -> None:
    """The ``root-cache`` command of ``python -m tests.sandbox`` (see :mod:`tests.sandbox.cli`)."""
    parser = sub.add_parser(
        "root-cache",
        help="build the root machines' cached Debian root when missing; print its path, size, build time",
        description="Build (when missing) the cached Debian root that root machines (`up --root`) start"
        f" from: mmdebstrap --variant=apt {SUITE} with {', '.join(PACKAGES)}, from the mirror of this"
        f" host's apt (${MIRROR_ENV} overrides it). It lives in {DEFAULT_CACHE}/root/<key>/"
        f" (${CACHE_ENV} overrides the base), <key> a hash of the recipe: a changed recipe builds a new"
        " one. To rebuild the current one, remove its dir and run this again. In the tree,"
        " /usr/sbin/policy-rc.d exits 101 (maintainer scripts cannot start services) and apt has no"
        " source (machines are offline; the mirror's line is in /usr/share/pcs-sandbox/debian.list).",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help=f"base dir (default ${CACHE_ENV} or {DEFAULT_CACHE})"
    )
    parser.add_argument("--prune", action="store_true", help="then remove the cached roots of other recipes")
    parser.set_defaults(func=_cmd_root_cache)
