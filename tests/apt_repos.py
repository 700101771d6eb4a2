"""Local apt repositories for the tests, built on this host without network and cached.

Two repositories, each a ``dists/<suite>/main/binary-<arch>/Packages`` tree with a ``Release`` signed
twice (``InRelease`` and ``Release.gpg``) by its own test key:

- ``signed``: declared in deb822 format (``pcs-signed.sources``), its key a binary keyring at
  ``/etc/apt/keyrings/pcs-test-signed.gpg`` named by ``Signed-By:``. It holds the dependency chain
  ``pcs-a -> pcs-b -> pcs-c``, ``pcs-versioned`` 1.0 and 2.0, ``pcs-removable``, the 20
  ``pcs-bench-NN`` packages and ``pcs-foreign``, the one package of a foreign architecture;
- ``legacy``: declared in one-line format (``pcs-legacy.list``), its key in ``/etc/apt/trusted.gpg.d``.
  It holds ``pcs-legacy-only``.

Plus a pin (``/etc/apt/preferences.d/pcs-versioned.pref``) holding ``pcs-versioned`` at 1.0. Every
package but ``pcs-foreign`` is ``Architecture: all``, in the Packages index of every architecture;
``pcs-foreign`` is built for :func:`foreign_arch` (i386, arm64 on an i386 host), ``Multi-Arch: same``,
and is only in that architecture's index: a machine installs it as ``pcs-foreign:i386`` after
``dpkg --add-architecture i386`` and an ``apt-get update``. Every package installs one file,
``/usr/share/pcs-test/<name>``, whose text is ``<name> <version>``: what is installed can be read
from the files.

:func:`build_test_repos` builds the tree once per recipe (the packages above and this module's own
source) under ``/var/cache/pcswitcher-sandbox/apt/<hash>/`` (``$PCS_APT_CACHE`` or the ``cache``
argument to move it), atomically and under a lock, so concurrent test processes build it once. The
signing keys live only during a build (a private ``GNUPGHOME``, never the host's keyring); the cache
keeps their public keyrings. The tree is meant to be bind-mounted read-only at a machine's
``/srv/pcs-apt`` (the mount point is a parameter: it goes into the URIs of the apt files), and the apt
files are written into a machine's root with :func:`install_files`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

DEFAULT_MOUNT_POINT = "/srv/pcs-apt"
DEFAULT_CACHE = Path("/var/cache/pcswitcher-sandbox/apt")
CACHE_ENV = "PCS_APT_CACHE"
#: the commands a build runs, with their Debian package
TOOLS = {"dpkg-deb": "dpkg", "dpkg-scanpackages": "dpkg-dev", "gpg": "gnupg", "gpgconf": "gpgconf"}

SIGNED = "signed"
LEGACY = "legacy"
SUITES = {SIGNED: "pcs", LEGACY: "pcs-legacy"}
COMPONENT = "main"
#: the Packages indexes each repository has (the host's own is added): each holds the ``all``
#: packages and those built for its architecture
ARCHITECTURES = ("amd64", "arm64", "i386")
#: FOREIGN's architecture: the first of these that is not the host's
FOREIGN_ARCHS = ("i386", "arm64")

SIGNED_SOURCES = "/etc/apt/sources.list.d/pcs-signed.sources"
SIGNED_KEYRING = "/etc/apt/keyrings/pcs-test-signed.gpg"
LEGACY_LIST = "/etc/apt/sources.list.d/pcs-legacy.list"
LEGACY_KEYRING = "/etc/apt/trusted.gpg.d/pcs-test-legacy.gpg"
PIN = "/etc/apt/preferences.d/pcs-versioned.pref"

DEP_CHAIN = ("pcs-a", "pcs-b", "pcs-c")  # each depends on the next
VERSIONED = "pcs-versioned"
VERSIONS = ("1.0", "2.0")
PINNED_VERSION = "1.0"  # the pin holds VERSIONED here (priority 1001) though 2.0 is available
REMOVABLE = "pcs-removable"
LEGACY_ONLY = "pcs-legacy-only"
BENCH = tuple(f"pcs-bench-{n:02d}" for n in range(1, 21))
FOREIGN = "pcs-foreign"  # built for foreign_arch(), not "all"
FILES_DIR = "/usr/share/pcs-test"  # every package installs FILES_DIR/<name>


class AptRepoError(RuntimeError):
    """Building the repositories or writing the apt files failed (one line: what and the fix)."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    repo: str
    depends: tuple[str, ...] = ()
    foreign: bool = False  # built for foreign_arch() (Multi-Arch: same), else Architecture: all


RECIPE: tuple[Package, ...] = (
    Package(DEP_CHAIN[0], "1.0", SIGNED, (DEP_CHAIN[1],)),
    Package(DEP_CHAIN[1], "1.0", SIGNED, (DEP_CHAIN[2],)),
    Package(DEP_CHAIN[2], "1.0", SIGNED),
    *(Package(VERSIONED, version, SIGNED) for version in VERSIONS),
    Package(REMOVABLE, "1.0", SIGNED),
    *(Package(name, "1.0", SIGNED) for name in BENCH),
    Package(FOREIGN, "1.0", SIGNED, foreign=True),
    Package(LEGACY_ONLY, "1.0", LEGACY),
)


@dataclass(frozen=True)
class AptFile:
    """One apt configuration file as it goes onto a machine."""

    path: str  # absolute path on the machine, e.g. /etc/apt/sources.list.d/pcs-signed.sources
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class TestRepos:
    """The built repositories: a host dir to bind-mount at ``mount_point``, and the apt files that
    declare them (sources, keys, pin) as the source machine should have them."""

    __test__ = False  # not a pytest test class

    dir: Path
    mount_point: str
    files: tuple[AptFile, ...]
    packages: dict[str, list[str]] = field(hash=False)  # name -> versions available, ascending
    repo_of: dict[str, str] = field(hash=False)  # name -> SIGNED or LEGACY
    foreign_arch: str  # FOREIGN's architecture (foreign_arch())

    def file(self, name: str) -> AptFile:
        """The apt file with this path or file name (``pcs-signed.sources``)."""
        for apt_file in self.files:
            if name in (apt_file.path, os.path.basename(apt_file.path)):
                return apt_file
        raise KeyError(f"no apt file {name!r}; there are {[os.path.basename(f.path) for f in self.files]}")

    def uri(self, repo: str) -> str:
        """The URI of a repository directory under the mount point (it need not exist)."""
        return f"file://{self.mount_point}/{repo}"

    def broken_uri(self) -> AptFile:
        """A deb822 source (``pcs-broken.sources``, ``Signed-By`` the signed repository's keyring)
        whose URI is a missing directory: ``apt-get update`` fails naming it."""
        return AptFile(
            "/etc/apt/sources.list.d/pcs-broken.sources", _deb822(self.uri("missing"), SUITES[SIGNED])
        )

    def missing_suite(self) -> AptFile:
        """A deb822 source (``pcs-nosuite.sources``, ``Signed-By`` the signed repository's keyring)
        naming a suite the signed repository lacks: ``apt-get update`` fails naming it."""
        return AptFile("/etc/apt/sources.list.d/pcs-nosuite.sources", _deb822(self.uri(SIGNED), "nosuch"))


def build_test_repos(mount_point: str = DEFAULT_MOUNT_POINT, cache: Path | None = None) -> TestRepos:
    """The test repositories, built into the cache unless a build of this recipe is there."""
    _check_mount_point(mount_point)
    cache = Path(os.path.abspath(cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE))
    entry = cache / recipe_key()
    if not entry.is_dir():
        with _locked(cache):
            if not entry.is_dir():
                _build_entry(cache, entry)
    return _repos(entry, mount_point)


def copy_repos(repos: TestRepos, dest: Path, *, link: bool = False) -> TestRepos:
    """Copy the repositories' tree to ``dest`` (which must not exist), hard-linking the files when
    ``link`` (then replace a file to change it: writing into one writes into the cache)."""
    shutil.copytree(repos.dir, dest, copy_function=os.link if link else shutil.copy2)
    return dataclasses.replace(repos, dir=dest)


def install_files(root: Path, files: Iterable[AptFile]) -> None:
    """Write each file at its path under ``root`` (a machine's root dir), parents made as needed.
    A path that is not absolute and normal, or that would pass a symlink under ``root``, is refused."""
    for apt_file in files:
        target = _target(root, apt_file.path)
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(apt_file.content)
        os.chmod(tmp, apt_file.mode)
        os.replace(tmp, target)


def installed_version(root: Path, name: str) -> str | None:
    """The version of test package ``name`` installed under ``root`` (a machine's root dir), read
    from the file it installs; None when that file is absent."""
    marker = root / FILES_DIR.lstrip("/") / name
    if not marker.is_file():
        return None
    found, version = marker.read_text().split()
    if found != name:
        raise AptRepoError(f"{marker} names {found!r}, not {name!r}: it was not written by a test package")
    return version


def local_deb(dest: Path, name: str, text: str, description: str = "a package in no repository") -> Path:
    """``dest/<name>_1.0_all.deb``, built now: a package of no repository (what a person installs
    with ``dpkg -i``) whose one file is ``/usr/share/<name>/hello`` holding ``text``."""
    tree = dest / f"{name}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr/share" / name).mkdir(parents=True)
    (tree / "usr/share" / name / "hello").write_text(text)
    (tree / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\n"
        f"Maintainer: pc-switcher tests <t@example.invalid>\nDescription: {description}\n"
    )
    deb = dest / f"{name}_1.0_all.deb"
    _run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)])
    return deb


def foreign_arch() -> str:
    """The architecture FOREIGN is built for: i386, or arm64 when the host is i386."""
    native = _native_arch()
    return next(arch for arch in FOREIGN_ARCHS if arch != native)


def recipe_key() -> str:
    """The cache key: a hash of the packages, the architectures (the host's among them, which
    decides FOREIGN's) and this module's source."""
    recipe = {
        "packages": [dataclasses.asdict(p) for p in RECIPE],
        "architectures": _architectures(),
        "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the apt files


def _deb822(uri: str, suite: str) -> bytes:
    return (
        f"Types: deb\nURIs: {uri}\nSuites: {suite}\nComponents: {COMPONENT}\nSigned-By: {SIGNED_KEYRING}\n"
    ).encode()


def _repos(entry: Path, mount_point: str) -> TestRepos:
    keys = entry / "keys"
    pin = f"Package: {VERSIONED}\nPin: version {PINNED_VERSION}*\nPin-Priority: 1001\n"
    legacy = f"deb file://{mount_point}/{LEGACY} {SUITES[LEGACY]} {COMPONENT}\n"
    files = (
        AptFile(SIGNED_SOURCES, _deb822(f"file://{mount_point}/{SIGNED}", SUITES[SIGNED])),
        AptFile(SIGNED_KEYRING, (keys / os.path.basename(SIGNED_KEYRING)).read_bytes()),
        AptFile(LEGACY_LIST, legacy.encode()),
        AptFile(LEGACY_KEYRING, (keys / os.path.basename(LEGACY_KEYRING)).read_bytes()),
        AptFile(PIN, pin.encode()),
    )
    packages: dict[str, list[str]] = {}
    for package in RECIPE:
        packages.setdefault(package.name, []).append(package.version)
    repo_of = {package.name: package.repo for package in RECIPE}
    return TestRepos(entry / "repos", mount_point, files, packages, repo_of, foreign_arch())


def _check_mount_point(mount_point: str) -> None:
    parts = mount_point.split("/")[1:]
    if not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", mount_point) or any(p in (".", "..") for p in parts):
        raise AptRepoError(
            f"mount point {mount_point!r}: give an absolute path of letters, digits and . _ - "
            "without '..' or a trailing '/' (it goes into apt's URIs)"
        )


def _target(root: Path, path: str) -> Path:
    if not path.startswith("/") or os.path.normpath(path) != path or path == "/":
        raise AptRepoError(f"apt file path {path!r}: give an absolute normal path such as /etc/apt/x.list")
    target = root / path.lstrip("/")
    for part in [*reversed(target.parents), target]:
        if part.is_relative_to(root) and part != root and part.is_symlink():
            raise AptRepoError(f"{part} is a symlink: apt files are written only through real directories")
    return target


# --------------------------------------------------------------------------- the build


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(cache / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
        yield


def _build_entry(cache: Path, entry: Path) -> None:
    """Build into a scratch dir beside ``entry``, then rename it into place (the caller holds the
    lock: a scratch dir left by a builder that died is removed)."""
    missing = sorted(f"`{tool}` ({package})" for tool, package in TOOLS.items() if not shutil.which(tool))
    if missing:
        raise AptRepoError(f"building test apt repositories needs {', '.join(missing)}: install them")
    for stale in cache.glob(".build-*"):
        shutil.rmtree(stale)
    work = cache / f".build-{entry.name}-{os.getpid()}"
    work.mkdir(mode=0o755)
    try:
        _build(work)
        os.rename(work, entry)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build(work: Path) -> None:
    (work / "keys").mkdir()
    foreign = foreign_arch()
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", "LC_ALL": "C.UTF-8"}
    for package in RECIPE:
        arch = foreign if package.foreign else "all"
        _build_deb(package, arch, work / "src", work / "repos" / package.repo / "pool" / COMPONENT, env)
    shutil.rmtree(work / "src")
    with _gnupg_home() as home:
        for repo, keyring in ((SIGNED, SIGNED_KEYRING), (LEGACY, LEGACY_KEYRING)):
            fingerprint = _new_key(home, f"pc-switcher test key for {repo} <pcs-test-{repo}@example.invalid>")
            (work / "keys" / os.path.basename(keyring)).write_bytes(
                _run(["gpg", "--homedir", home, "--batch", "--export", fingerprint])
            )
            _index(work / "repos" / repo, repo, env)
            _sign(home, fingerprint, work / "repos" / repo / "dists" / SUITES[repo])
    for path in [work, *work.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # apt's file method reads as user _apt


def _build_deb(package: Package, arch: str, src: Path, pool: Path, env: dict[str, str]) -> None:
    tree = src / f"{package.name}_{package.version}"
    (tree / "DEBIAN").mkdir(parents=True)
    fields = {
        "Package": package.name,
        "Version": package.version,
        "Architecture": arch,
        "Maintainer": "pc-switcher tests <pcs-test@example.invalid>",
        "Section": "misc",
        "Priority": "optional",
    }
    if arch != "all":
        fields["Multi-Arch"] = "same"  # like a library of another architecture (libc6:i386)
    if package.depends:
        fields["Depends"] = ", ".join(package.depends)
    description = (
        f"pc-switcher test package\n installs {FILES_DIR}/{package.name} ({package.repo} repository)"
    )
    control = "".join(f"{k}: {v}\n" for k, v in fields.items()) + f"Description: {description}\n"
    (tree / "DEBIAN" / "control").write_text(control)
    files = tree / FILES_DIR.lstrip("/")
    files.mkdir(parents=True)
    (files / package.name).write_text(f"{package.name} {package.version}\n")
    for path in [tree, *tree.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    pool.mkdir(parents=True, exist_ok=True)
    deb = pool / f"{package.name}_{package.version}_{arch}.deb"
    _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)], env=env)


def _index(repo_dir: Path, repo: str, env: dict[str, str]) -> None:
    """The Packages indexes (plain and gzip) of every architecture, each of the ``all`` packages and
    that architecture's (``--arch``), and the unsigned Release."""
    dist = repo_dir / "dists" / SUITES[repo]
    for arch in _architectures():
        scan = ["dpkg-scanpackages", "--multiversion", "--arch", arch, "pool", "/dev/null"]
        packages = _run(scan, cwd=repo_dir, env=env)
        index = dist / COMPONENT / f"binary-{arch}"
        index.mkdir(parents=True)
        (index / "Packages").write_bytes(packages)
        (index / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
    lines = [
        "Origin: pc-switcher tests",
        f"Label: pcs-test-{repo}",
        f"Suite: {SUITES[repo]}",
        f"Codename: {SUITES[repo]}",
        f"Date: {formatdate(usegmt=True).replace('GMT', 'UTC')}",
        f"Architectures: {' '.join(_architectures())}",
        f"Components: {COMPONENT}",
        f"Description: pc-switcher test repository {repo}",
        "SHA256:",
    ]
    for path in sorted(p for p in dist.rglob("*") if p.is_file()):
        data = path.read_bytes()
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data):8d} {path.relative_to(dist)}")
    (dist / "Release").write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def _gnupg_home() -> Iterator[str]:
    """A private, short-lived GNUPGHOME (short path: gpg-agent's socket lives in it); its agent is
    stopped when done."""
    home = tempfile.mkdtemp(prefix="pcs-gpg-")
    try:
        yield home
    finally:
        for step in (["--kill", "all"], ["--remove-socketdir"]):  # a socket dir in /run/user/<uid>
            subprocess.run(["gpgconf", "--homedir", home, *step], check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _new_key(home: str, uid: str) -> str:
    """Generate a signing key without passphrase; its fingerprint."""
    gpg = ["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    _run([*gpg, "--quick-generate-key", uid, "ed25519", "sign", "never"])
    listing = _run(["gpg", "--homedir", home, "--batch", "--with-colons", "--list-keys", uid]).decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def _sign(home: str, fingerprint: str, dist: Path) -> None:
    gpg = ["gpg", "--homedir", home, "--batch", "--yes", "--local-user", f"{fingerprint}!"]
    gpg += ["--digest-algo", "SHA512"]
    release = str(dist / "Release")
    _run([*gpg, "--clearsign", "--output", str(dist / "InRelease"), release])
    _run([*gpg, "--armor", "--detach-sign", "--output", str(dist / "Release.gpg"), release])


def _native_arch() -> str:
    return _run(["dpkg", "--print-architecture"]).decode().strip()


def _architectures() -> list[str]:
    return sorted({*ARCHITECTURES, _native_arch()})


def _run(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> bytes:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
    if done.returncode != 0:
        error = done.stderr.decode(errors="replace").strip().splitlines()
        raise AptRepoError(f"{argv[0]} failed ({done.returncode}): {error[-1] if error else 'no message'}")
    return done.stdout
