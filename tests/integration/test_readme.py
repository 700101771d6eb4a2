"""The README's Install and Quick start commands, run verbatim on a fresh sandbox source machine
against a sandbox target.

The ``sh`` blocks that follow a ``<!-- readme-test: ... -->`` comment in README.md run line by line,
in one bash session as root (``cd`` carries over), each line's exit code checked. The only
substitution: ``<repository URL>`` in ``git clone`` becomes this checkout's path (its committed
HEAD; no network). Around the lines, as the README's prose says a person does:

- ``$EDITOR`` is a script that does what the person does in the editor: in ``inventory.yml`` it
  writes the target ``workstation2`` (the sandbox target's address, port, root, the sandbox's key);
  in ``config.yml`` it sets the snapshot location to the machines' btrfs top level (their ``/`` is
  this host's ext4, their ``/home`` and ``/root`` are btrfs subvolumes);
- the target's host key is in root's ``~/.ssh/known_hosts`` (the README: connect once and accept it).

The sync must really happen: a file made on the source before appears on the target.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sandbox import Machine, Sandbox

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MARKER = re.compile(r"<!-- readme-test: ([a-z-]+)[^>]*-->\n```sh\n(.*?)```\n", re.DOTALL)
CLONE_URL = "<repository URL>"
LOCATION = "/run/pcs-btrfs/snapshots"  # each machine's own btrfs top level, outside /home and /root
DATA = "/home/readme-user/notes.txt"

_EDITOR = """#!/bin/sh
# the person at the editor (tests/integration/test_readme.py)
set -eu
case "$1" in
  */inventory.yml) cat > "$1" <<'INVENTORY'
{inventory}INVENTORY
  ;;
  */config.yml) sed -i 's|"/.snapshots/pc-switcher"|"{location}"|' "$1"; grep -q '"{location}"' "$1" ;;
  *) echo "editor: unexpected file $1" >&2; exit 1 ;;
esac
"""


def readme_blocks() -> dict[str, list[str]]:
    """The marked ``sh`` blocks of the README: name → its lines (blank lines dropped)."""
    blocks = {
        name: [ln for ln in body.splitlines() if ln.strip()]
        for name, body in MARKER.findall(README.read_text())
    }
    assert set(blocks) == {"install", "quick-start"}, f"marked blocks in README.md: {sorted(blocks)}"
    return blocks


def _inventory(target: Machine, key: Path) -> str:
    return (
        "all:\n"
        "  hosts:\n"
        "    workstation2:\n"
        f"      ansible_host: {target.address}\n"
        f"      ansible_port: {target.port}\n"
        "      ansible_user: root\n"
        f"      ansible_ssh_private_key_file: {key}\n"
    )


def _script(lines: list[str]) -> str:
    """The lines as one bash script: each followed by a check of its exit code."""
    out = ["set -u", "cd ~"]
    for number, line in enumerate(lines, 1):
        out += [
            f'echo "+ [{number}] $(date +%T.%N | cut -c1-12)" {shlex.quote(line)}',
            line,
            f'rc=$?; [ "$rc" = 0 ] || {{ echo "readme line {number}: exit code $rc" >&2; exit 97; }}',
        ]
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def machines() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        sb.add("source")
        sb.add("target")
        yield sb


def test_readme_install_and_quick_start_verbatim(machines: Sandbox) -> None:
    blocks = readme_blocks()
    source, target = machines["source"], machines["target"]
    clone = [ln for ln in blocks["install"] if ln.startswith("git clone ")]
    assert len(clone) == 1, blocks["install"]
    assert CLONE_URL in clone[0]
    lines = [ln.replace(CLONE_URL, shlex.quote(str(REPO))) for ln in blocks["install"]] + blocks[
        "quick-start"
    ]
    assert any(ln.startswith("make install") for ln in lines)
    assert any("--allow-first-sync" in ln and "--dry-run" not in ln for ln in lines)
    # what the person does outside the lines: the editor, the host key, some data to sync
    editor = source.path("/root/.readme-editor")
    editor.write_text(
        _EDITOR.replace("{inventory}", _inventory(target, machines.client_key)).replace(
            "{location}", LOCATION
        )
    )
    editor.chmod(0o755)
    ssh_dir = source.path("/root/.ssh")
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "known_hosts").write_text(machines.known_hosts.read_text())
    source.path(DATA).parent.mkdir()
    source.path(DATA).write_text("written on the source\n")
    assert not target.path(DATA).exists()
    assert not source.path("/opt/pc-switcher").exists()

    env = [
        "env",
        "-i",
        "HOME=/root",
        "USER=root",
        "LANG=C.UTF-8",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "EDITOR=/root/.readme-editor",
    ]
    started = time.monotonic()
    res = source.run([*env, "bash", "-c", _script(lines)], cwd="/root", timeout=900)
    elapsed = time.monotonic() - started
    output = res.stdout + res.stderr
    assert res.returncode == 0, output[-6000:]
    assert "Traceback" not in output
    print(f"README lines ran in {elapsed:.1f} s:")
    print("\n".join(ln for ln in res.stdout.splitlines() if ln.startswith("+ [")))

    # installed from the clone, run from /usr/local/bin
    assert source.path("/usr/local/bin/pc-switcher").is_symlink()
    assert source.path("/opt/pc-switcher/install.json").is_file()
    assert source.path("/root/pc-switcher/.git").is_dir()
    # the sync really happened, with its snapshots
    assert target.path(DATA).read_text() == "written on the source\n"
    assert target.path(LOCATION).is_dir()
    assert [p for p in target.path(LOCATION).iterdir() if p.is_dir()], "no snapshot session on the target"
    # and nothing of it on this host
    assert not Path("/opt/pc-switcher").exists()
