"""The folder_sync role on its own: converge -> idempotence -> verify, like a molecule scenario.

molecule is not part of the toolchain (offline, no driver for these namespace machines), so this test
runs the same sequence with plain ``ansible-playbook playbooks/folder_sync.yml`` from inside the
sandbox machine ``source`` against the sandbox machine ``target``: the first run changes things, the
second must report ``changed=0``, and the target must then equal the source.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.integration.folder_sync_helpers import build_tree, itemize_pass, manifest, sh
from tests.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = str(REPO / ".venv" / "bin" / "ansible-playbook")
DATA = "/home/user/data"


def _play(sandbox: Sandbox) -> str:
    extra = {"folder_sync_folders": [{"source": "/home/user"}], "folder_sync_never_sync": []}
    res = sandbox["source"].run(
        [
            ANSIBLE_PLAYBOOK,
            "-i",
            str(sandbox.inventory_path),
            "-l",
            "target",
            "-e",
            json.dumps(extra),
            "playbooks/folder_sync.yml",
        ],
        cwd=str(REPO),
        timeout=300,
        env={"PATH": f"{REPO / '.venv' / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin", "ANSIBLE_NOCOLOR": "1"},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def _recap(output: str) -> dict[str, int]:
    line = next(line for line in output.splitlines() if line.startswith("target "))
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


def test_converge_idempotence_verify(sandbox: Sandbox) -> None:
    source, target = sandbox["source"], sandbox["target"]
    build_tree(source, DATA)
    sh(target, "mkdir -p /home/user && echo stale > /home/user/stale")

    converge = _recap(_play(sandbox))  # converge
    assert converge["changed"] >= 1
    assert converge["failed"] == 0

    idempotence = _recap(_play(sandbox))  # idempotence
    assert idempotence["changed"] == 0, idempotence
    assert idempotence["failed"] == 0

    # verify
    assert manifest(target, DATA) == manifest(source, DATA)
    assert itemize_pass(sandbox, DATA) == []
    assert not target.path("/home/user/stale").exists()
