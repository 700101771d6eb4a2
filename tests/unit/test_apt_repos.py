"""The test apt repositories (tests/apt_repos.py), checked with apt itself in a private apt root.

Each check runs the host's real ``apt-get``/``apt-cache`` with an ``APT_CONFIG`` whose ``Dir`` is a
tmp dir (its own ``etc/apt``, lists, cache and an empty dpkg status) and whose architectures are the
host's and ``pcs-foreign``'s (``APT::Architectures``, not the host's dpkg): nothing of the host's apt
is read or written, and ``install`` is simulated (``-s``). The repositories' mount point is a symlink in
tmp to the built tree, and ``Signed-By`` is rebased into the private root, the only two changes to
the files a machine gets.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests import apt_repos as ar
from tests import needs

REPO = Path(__file__).resolve().parents[2]
#: what these tests run besides the build's tools
CHECK_TOOLS = {**ar.TOOLS, "apt-get": "apt", "apt-cache": "apt", "gpgv": "gpgv"}


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> ar.TestRepos:
    needs.tools(CHECK_TOOLS)
    tmp = tmp_path_factory.mktemp("apt")
    built = ar.build_test_repos(mount_point=str(tmp / "mnt"), cache=tmp / "cache")
    (tmp / "mnt").symlink_to(built.dir)
    return built


@dataclass
class AptRoot:
    """A private apt root in tmp: ``run`` calls an apt command that sees only this root."""

    root: Path

    def install(self, files: Iterable[ar.AptFile]) -> None:
        keyrings = os.path.dirname(ar.SIGNED_KEYRING).encode()
        ar.install_files(
            self.root,
            [
                replace(f, content=f.content.replace(keyrings, str(self.root).encode() + keyrings))
                for f in files
            ],
        )

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "APT_CONFIG": str(self.root / "apt.conf"), "LC_ALL": "C"}
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def native_arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _apt_root(path: Path, files: Iterable[ar.AptFile]) -> AptRoot:
    """A private root whose architectures are the host's and ar.foreign_arch(), whatever foreign
    ones the host's dpkg has (an option on the command line can narrow them)."""
    for sub in ("etc/apt/apt.conf.d", "etc/apt/sources.list.d", "var/lib/dpkg"):
        (path / sub).mkdir(parents=True)
    (path / "var/lib/dpkg/status").write_text("")
    user = pwd.getpwuid(os.getuid()).pw_name  # tmp dirs are 0700: _apt could not read the symlink
    archs = f"{native_arch()},{ar.foreign_arch()}"
    (path / "apt.conf").write_text(
        f'Dir "{path}/";\nDir::State::status "{path}/var/lib/dpkg/status";\nAPT::Sandbox::User "{user}";\n'
        f'APT::Architectures "{archs}";\n'
    )
    root = AptRoot(path)
    root.install(files)
    return root


@pytest.fixture
def apt(tmp_path: Path, repos: ar.TestRepos) -> AptRoot:
    """A private root with all the repositories' files, updated."""
    root = _apt_root(tmp_path / "root", repos.files)
    update = root.run("apt-get", "update")
    assert update.returncode == 0, update.stdout + update.stderr
    return root


def test_the_private_root_keeps_apt_off_the_hosts_files(apt: AptRoot) -> None:
    shown = apt.run("apt-config", "shell", "L", "Dir::State::lists/d", "C", "Dir::Cache/d", "S", "Dir::Etc/d")
    dirs = dict(re.findall(r"(\w)='([^']*)'", shown.stdout))
    assert set(dirs) == {"L", "C", "S"}, shown.stdout + shown.stderr
    assert all(Path(d).is_relative_to(apt.root) for d in dirs.values()), dirs


def test_both_repositories_verify_their_signatures(tmp_path: Path, repos: ar.TestRepos) -> None:
    root = _apt_root(tmp_path / "root", repos.files)
    update = root.run("apt-get", "update")
    out = update.stdout + update.stderr
    assert update.returncode == 0, out
    for bad in ("NO_PUBKEY", "not signed", "W:", "E:", "Err:", "Ign:"):
        assert bad not in out, out
    lists = {p.name for p in (root.root / "var/lib/apt/lists").iterdir()}
    for repo in (ar.SIGNED, ar.LEGACY):
        assert any(n.endswith(f"_{repo}_dists_{ar.SUITES[repo]}_InRelease") for n in lists), lists


def test_without_its_key_a_repository_is_refused(tmp_path: Path, repos: ar.TestRepos) -> None:
    """The signatures are checked for real: with key B alone, the signed repository fails."""
    root = _apt_root(tmp_path / "root", [f for f in repos.files if f.path != ar.SIGNED_KEYRING])
    update = root.run("apt-get", "update")
    out = update.stdout + update.stderr
    assert update.returncode != 0, out
    assert "NO_PUBKEY" in out, out
    assert f"E: The repository 'file:{repos.mount_point}/{ar.SIGNED} pcs InRelease' is not signed." in out
    assert ar.LEGACY not in "".join(line for line in out.splitlines() if line.startswith(("E:", "W:")))


@pytest.mark.parametrize(
    ("repo", "keyring"), [(ar.SIGNED, ar.SIGNED_KEYRING), (ar.LEGACY, ar.LEGACY_KEYRING)]
)
def test_release_is_signed_twice_by_its_own_key_only(
    tmp_path: Path, repos: ar.TestRepos, repo: str, keyring: str
) -> None:
    """InRelease and Release.gpg both verify with the repository's key, neither with the other's."""
    other = ar.LEGACY_KEYRING if keyring == ar.SIGNED_KEYRING else ar.SIGNED_KEYRING
    dist = repos.dir / repo / "dists" / ar.SUITES[repo]
    for name, path in ((keyring, tmp_path / "own.gpg"), (other, tmp_path / "other.gpg")):
        path.write_bytes(repos.file(name).content)
    home = tmp_path / "gnupg"  # gpgv reads no keyring of the host's
    home.mkdir(mode=0o700)
    for signature in (["InRelease"], ["Release.gpg", "Release"]):
        for key, verifies in (("own.gpg", True), ("other.gpg", False)):
            argv = ["gpgv", "--homedir", str(home), "--keyring", str(tmp_path / key)]
            gpgv = subprocess.run(
                [*argv, *(str(dist / s) for s in signature)], check=False, capture_output=True
            )
            assert (gpgv.returncode == 0) == verifies, gpgv.stderr


def test_the_pin_holds_versioned_at_1_0_with_2_0_available(apt: AptRoot) -> None:
    policy = apt.run("apt-cache", "policy", ar.VERSIONED).stdout
    assert re.search(r"^\s+Candidate: 1\.0$", policy, re.MULTILINE), policy
    assert re.search(r"^\s+2\.0 500$", policy, re.MULTILINE), policy
    assert re.search(r"^\s+1\.0 1001$", policy, re.MULTILINE), policy


def test_dependencies_resolve_a_then_b_then_c(apt: AptRoot) -> None:
    sim = apt.run("apt-get", "install", "-s", ar.DEP_CHAIN[0])
    assert sim.returncode == 0, sim.stdout + sim.stderr
    installed = re.findall(r"^Inst (\S+) ", sim.stdout, re.MULTILINE)
    assert installed == list(reversed(ar.DEP_CHAIN)), sim.stdout
    assert re.search(
        rf"^Inst {ar.DEP_CHAIN[0]} \(1\.0 pcs-test-signed:pcs \[all\]\)$", sim.stdout, re.MULTILINE
    )


def test_apt_sees_every_package_and_version_the_api_names(apt: AptRoot, repos: ar.TestRepos) -> None:
    madison = apt.run("apt-cache", "madison", *repos.packages).stdout
    seen: dict[str, set[str]] = {}  # an "all" package is in each architecture's index: seen twice
    for shown, version, source in re.findall(r"^\s*(\S+) \|\s*(\S+) \| (\S+)", madison, re.MULTILINE):
        name = shown.removesuffix(f":{repos.foreign_arch}")  # apt names a foreign package name:arch
        assert (shown != name) == (name == ar.FOREIGN), madison
        seen.setdefault(name, set()).add(version)
        assert source == f"file:{repos.mount_point}/{repos.repo_of[name]}", madison
    assert {n: sorted(v) for n, v in seen.items()} == repos.packages
    assert len(ar.BENCH) == 20
    assert set(ar.BENCH) | {ar.REMOVABLE, ar.LEGACY_ONLY, ar.FOREIGN, *ar.DEP_CHAIN} <= set(repos.packages)
    assert repos.packages[ar.VERSIONED] == ["1.0", "2.0"]
    assert [n for n, r in repos.repo_of.items() if r == ar.LEGACY] == [ar.LEGACY_ONLY]


def test_the_foreign_package_is_in_its_architectures_index_only(
    apt: AptRoot, repos: ar.TestRepos, tmp_path: Path
) -> None:
    dist = repos.dir / ar.SIGNED / "dists" / ar.SUITES[ar.SIGNED] / ar.COMPONENT
    indexes = sorted(dist.glob("binary-*/Packages"))
    assert {p.parent.name for p in indexes} >= {"binary-amd64", "binary-arm64", "binary-i386"}
    for index in indexes:
        names = re.findall(r"^Package: (\S+)$", index.read_text(), re.MULTILINE)
        assert (ar.FOREIGN in names) == (index.parent.name == f"binary-{repos.foreign_arch}"), index
        assert ar.DEP_CHAIN[0] in names, index
    native = native_arch()
    assert repos.foreign_arch != native
    # the host's architecture alone: apt has no such package; with the foreign one added: name:arch
    alone = apt.run("apt-get", "-o", f"APT::Architectures={native}", "install", "-s", ar.FOREIGN)
    assert alone.returncode != 0, alone.stdout
    assert f"E: Unable to locate package {ar.FOREIGN}" in alone.stderr, alone.stderr
    added = apt.run("apt-get", "install", "-s", f"{ar.FOREIGN}:{repos.foreign_arch}")
    assert added.returncode == 0, added.stdout + added.stderr
    assert re.findall(r"^Inst (\S+) \((\S+) .*\[(\S+)\]\)$", added.stdout, re.MULTILINE) == [
        (f"{ar.FOREIGN}:{repos.foreign_arch}", "1.0", repos.foreign_arch)
    ], added.stdout
    deb = repos.dir / ar.SIGNED / "pool" / "main" / f"{ar.FOREIGN}_1.0_{repos.foreign_arch}.deb"
    fields = ["dpkg-deb", "-f", str(deb), "Architecture", "Multi-Arch", "Depends"]
    control = subprocess.run(fields, capture_output=True, text=True, check=True).stdout
    assert control == f"Architecture: {repos.foreign_arch}\nMulti-Arch: same\n", "no Depends"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "control")], check=True)
    assert sorted(p.name for p in (tmp_path / "control").iterdir()) == ["control"], "no maintainer scripts"
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    assert [line.split()[-1] for line in listing.splitlines() if not line.startswith("d")] == [
        f"./usr/share/pcs-test/{ar.FOREIGN}"
    ], listing


def test_the_bench_packages_install_independently(apt: AptRoot) -> None:
    sim = apt.run("apt-get", "install", "-s", *ar.BENCH)
    assert sorted(re.findall(r"^Inst (\S+) ", sim.stdout, re.MULTILINE)) == sorted(ar.BENCH), sim.stdout


@pytest.mark.parametrize(
    ("variant", "where"), [("broken_uri", "missing pcs"), ("missing_suite", f"{ar.SIGNED} nosuch")]
)
def test_a_broken_repository_fails_update_naming_it(
    tmp_path: Path, repos: ar.TestRepos, variant: str, where: str
) -> None:
    broken: ar.AptFile = getattr(repos, variant)()
    root = _apt_root(tmp_path / "root", [*repos.files, broken])
    update = root.run("apt-get", "update")
    out = update.stdout + update.stderr
    assert update.returncode == 100, out
    named = f"E: The repository 'file:{repos.mount_point}/{where} Release' does not have a Release file."
    errors = [line for line in out.splitlines() if line.startswith("E:")]
    assert errors == [named], out


def test_each_package_installs_its_named_file(tmp_path: Path, repos: ar.TestRepos) -> None:
    for version in ar.VERSIONS:
        deb = repos.dir / ar.SIGNED / "pool" / "main" / f"{ar.VERSIONED}_{version}_all.deb"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / version)], check=True)
        assert ar.installed_version(tmp_path / version, ar.VERSIONED) == version
        assert ar.installed_version(tmp_path / version, ar.REMOVABLE) is None
    deb = repos.dir / ar.LEGACY / "pool/main/pcs-legacy-only_1.0_all.deb"
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    assert re.search(
        r"^-rw-r--r-- root/root .* \./usr/share/pcs-test/pcs-legacy-only$", listing, re.MULTILINE
    )


def test_the_apt_files(repos: ar.TestRepos) -> None:
    assert [f.path for f in repos.files] == [
        ar.SIGNED_SOURCES,
        ar.SIGNED_KEYRING,
        ar.LEGACY_LIST,
        ar.LEGACY_KEYRING,
        ar.PIN,
    ]
    sources = repos.file("pcs-signed.sources").content.decode()
    assert f"URIs: file://{repos.mount_point}/signed\n" in sources
    assert "Signed-By: /etc/apt/keyrings/pcs-test-signed.gpg\n" in sources
    assert (
        repos.file("pcs-legacy.list").content
        == f"deb file://{repos.mount_point}/legacy pcs-legacy main\n".encode()
    )
    assert repos.file(ar.PIN).content == b"Package: pcs-versioned\nPin: version 1.0*\nPin-Priority: 1001\n"
    for keyring in (ar.SIGNED_KEYRING, ar.LEGACY_KEYRING):
        assert repos.file(keyring).content[0] in (0x98, 0x99), "a binary OpenPGP public key, not armored"
    assert all(f.mode == 0o644 for f in repos.files)
    with pytest.raises(KeyError, match=r"pcs-signed\.sources"):
        repos.file("nothing.list")


def test_the_mount_point_goes_into_the_uris_only(tmp_path: Path, repos: ar.TestRepos) -> None:
    other = ar.build_test_repos(mount_point="/mnt/elsewhere", cache=repos.dir.parents[1])
    assert other.dir == repos.dir, "the same cached tree"
    assert other.file("pcs-legacy.list").content == b"deb file:///mnt/elsewhere/legacy pcs-legacy main\n"
    assert other.file(ar.SIGNED_KEYRING) == repos.file(ar.SIGNED_KEYRING)
    for bad in ("srv/pcs-apt", "/srv/pcs apt", "/srv/../etc", "/srv/pcs-apt/", "/"):
        with pytest.raises(ar.AptRepoError, match=r"mount point .*: give an absolute path"):
            ar.build_test_repos(mount_point=bad, cache=tmp_path / "unused")
    assert not (tmp_path / "unused").exists()


def test_concurrent_builders_build_once(tmp_path: Path) -> None:
    needs.tools(ar.TOOLS)
    code = "import sys; from pathlib import Path; from tests import apt_repos as ar; "
    code += "print(ar.build_test_repos(cache=Path(sys.argv[1])).dir)"
    argv = [sys.executable, "-c", code, str(tmp_path / "cache")]
    builders = [subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    dirs = {b.communicate(timeout=120)[0].strip() for b in builders}
    assert [b.returncode for b in builders] == [0, 0]
    assert dirs == {str(tmp_path / "cache" / ar.recipe_key() / "repos")}
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".lock", ar.recipe_key()]
    modes = {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "cache" / ar.recipe_key()).rglob("*")}
    assert modes == {"0o755", "0o644"}, "readable by apt's _apt user"


def test_copy_repos(tmp_path: Path, repos: ar.TestRepos) -> None:
    copied = ar.copy_repos(repos, tmp_path / "copy")
    linked = ar.copy_repos(repos, tmp_path / "link", link=True)
    release = Path(ar.SIGNED, "dists", "pcs", "InRelease")
    assert copied.files == linked.files == repos.files
    assert (copied.dir / release).read_bytes() == (repos.dir / release).read_bytes()
    assert not (copied.dir / release).samefile(repos.dir / release)
    assert (linked.dir / release).samefile(repos.dir / release)


def test_install_files_writes_under_the_root(tmp_path: Path) -> None:
    ar.install_files(tmp_path, [ar.AptFile("/etc/apt/x.list", b"x\n", 0o600)])
    written = tmp_path / "etc/apt/x.list"
    assert written.read_bytes() == b"x\n"
    assert written.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in written.parent.iterdir()) == ["x.list"]


@pytest.mark.parametrize("path", ["etc/apt/x.list", "/etc/apt/../x.list", "/etc//apt/x.list", "/"])
def test_install_files_refuses_a_path_that_is_not_absolute_and_normal(tmp_path: Path, path: str) -> None:
    with pytest.raises(ar.AptRepoError, match="give an absolute normal path"):
        ar.install_files(tmp_path, [ar.AptFile(path, b"")])


def test_install_files_refuses_to_follow_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "root/etc").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root/etc/apt").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ar.AptRepoError, match=r"etc/apt is a symlink"):
        ar.install_files(tmp_path / "root", [ar.AptFile("/etc/apt/x.list", b"")])
    assert list((tmp_path / "elsewhere").iterdir()) == []
