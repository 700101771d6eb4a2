"""pcswitcher/install.py without installing: its refusals, the runtime file list, the tree id.

The installs themselves (venv, link, sudo, idempotence, replacement) run inside sandbox machines in
tests/integration/test_install.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pcswitcher import install

REPO = Path(__file__).resolve().parents[2]


def _checkout(tmp_path: Path) -> Path:
    """A minimal copy of the runtime tree of this checkout (pcswitcher, roles, playbooks, ...)."""
    root = tmp_path / "src"
    root.mkdir()
    for top in install.RUNTIME:
        src = REPO / top
        if src.is_dir():
            shutil.copytree(src, root / top, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, root / top)
    return root


@pytest.mark.parametrize(
    "value",
    [
        "",
        "relative/dir",
        "opt/pc-switcher",
        "/opt/pc switcher",
        "/opt/pc-switcher\n/etc",
        "/opt/pc\tswitcher",
        "/opt/$(touch /tmp/x)",
        "/opt/`id`",
        "/opt/'q'",
        '/opt/"q"',
        "/opt/../etc",
        "/opt/./pc-switcher",
        "/opt/x/.",
        "//opt/pc-switcher",
        "/opt/pc-switcher/..",
        "-rf",
        "/opt/pc;rm",
        "/opt/pc*",
    ],
)
def test_hostile_dirs_refused(value: str) -> None:
    with pytest.raises(install.InstallError, match="is not a plain absolute path"):
        install._checked_dir(value, "PREFIX")


def test_plain_dirs_accepted() -> None:
    assert install._checked_dir("/opt/pc-switcher", "PREFIX") == Path("/opt/pc-switcher")
    assert install._checked_dir("/opt/pc-switcher/", "PREFIX") == Path("/opt/pc-switcher")
    assert install._checked_dir("/srv/tools/pc_switcher-2.0+x@y", "PREFIX") == Path(
        "/srv/tools/pc_switcher-2.0+x@y"
    )


@pytest.mark.parametrize("prefix", ["/", "/usr", "/opt", "/usr/local", "/home", "/etc", "/var", "/pcs"])
def test_system_prefix_refused(prefix: str) -> None:
    with pytest.raises(install.InstallError, match="system directory or at the top level"):
        install._check_prefix(Path(prefix))


def test_foreign_prefix_refused(tmp_path: Path) -> None:
    prefix = tmp_path / "p"
    prefix.mkdir()
    (prefix / "app").mkdir()
    (prefix / ".install.abc").write_text("")  # a temp file of an interrupted install is ours
    install._check_prefix(prefix)
    (prefix / "notes.txt").write_text("mine")
    with pytest.raises(install.InstallError, match=r"holds notes\.txt, not a pc-switcher install"):
        install._check_prefix(prefix)
    (tmp_path / "file").write_text("")
    with pytest.raises(install.InstallError, match="not a directory"):
        install._check_prefix(tmp_path / "file")
    (tmp_path / "link").symlink_to(prefix)
    with pytest.raises(install.InstallError, match="not a directory"):
        install._check_prefix(tmp_path / "link")


def test_runtime_files_are_the_runtime_tree(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    (root / "pcswitcher" / "__pycache__").mkdir(exist_ok=True)
    (root / "pcswitcher" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"x")
    (root / "pc_switcher.egg-info").mkdir()
    (root / "tests").mkdir()
    (root / "tests" / "t.py").write_text("")
    files = install.runtime_files(root)
    assert "pcswitcher/cli/commands.py" in files
    assert "pcswitcher/install.py" in files
    assert "ansible.cfg" in files
    assert any(f.startswith("roles/folder_sync/") for f in files)
    assert any(f.startswith("playbooks/") for f in files)
    assert not [f for f in files if "__pycache__" in f or "egg-info" in f or f.startswith("tests/")]
    assert files == sorted(files)


def test_links_leaving_the_tree_refused(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    # the roles' links to pcswitcher/remote/agent.py stay inside: accepted, kept as links
    assert (root / "roles/cleanup/module_utils/pcswitcher_agent.py").is_symlink()
    install.runtime_files(root)
    bad = root / "roles" / "evil"
    for target in ("/etc/shadow", "../../tests/x.py", "../../../outside"):
        bad.unlink(missing_ok=True)
        bad.symlink_to(target)
        with pytest.raises(install.InstallError, match="outside the files installed"):
            install.runtime_files(root)
    bad.unlink()
    (root / "roles" / "dirlink").symlink_to("cleanup")  # a link to a dir: not a file of the list
    with pytest.raises(install.InstallError, match="outside the files installed"):
        install.runtime_files(root)
    (root / "roles" / "dirlink").unlink()
    (root / "roles" / "a\nb").write_text("")
    with pytest.raises(install.InstallError, match="control character in its name"):
        install.runtime_files(root)
    (root / "roles" / "a\nb").unlink()
    (root / "README.md").rename(root / "docs" / "R.md")
    (root / "README.md").symlink_to("docs/R.md")
    with pytest.raises(install.InstallError, match=r"README\.md is a link"):
        install.runtime_files(root)
    (root / "README.md").unlink()
    os.mkfifo(root / "roles" / "fifo")
    with pytest.raises(install.InstallError, match="not a regular file"):
        install.runtime_files(root)


def test_not_a_checkout(tmp_path: Path) -> None:
    with pytest.raises(install.InstallError, match="is not a pc-switcher checkout"):
        install.runtime_files(tmp_path)


def test_tree_id_follows_content_mode_and_names(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    first = install.tree_id(root)
    assert first == install.tree_id(root)
    assert first == install.tree_id(REPO)  # caches and build output do not count
    readme = root / "README.md"
    readme.write_text(readme.read_text() + "x")
    second = install.tree_id(root)
    assert second != first
    readme.chmod(0o755)
    assert install.tree_id(root) != second
    readme.chmod(0o644)
    readme.rename(root / "docs" / "README.md")
    assert install.tree_id(root) != second


def test_install_json_read_only_when_complete(tmp_path: Path) -> None:
    assert install.read_install(tmp_path) is None
    (tmp_path / "install.json").write_text('{"version": "1", "python": "3.11"}')
    assert install.read_install(tmp_path) is None
    (tmp_path / "install.json").write_text("{")
    assert install.read_install(tmp_path) is None
    record = {"version": "0.1.0", "python": "3.11", "id": "ab"}
    install._write_json_atomic(tmp_path / "install.json", record)
    assert install.read_install(tmp_path) == record
    assert [p.name for p in tmp_path.iterdir()] == ["install.json"]


def test_source_version_is_the_package_version() -> None:
    from pcswitcher import __version__

    assert install.source_version(REPO) == __version__


def test_main_refuses_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:
        assert install.main(["install", "--prefix", "/opt/x"]) == 2
        assert capsys.readouterr().err.startswith("error: make install needs root")
        return
    assert install.main(["install", "--prefix", "/opt/a b"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: PREFIX '/opt/a b' is not a plain absolute path")
    assert install.main(["uninstall", "--prefix", "/usr"]) == 2
    assert capsys.readouterr().err.startswith("error: PREFIX=/usr is a system directory")
    assert install.main(["install", "--bindir", "/usr/local/bin\n/etc"]) == 2
    assert "BINDIR" in capsys.readouterr().err
