"""folder_sync's fixed never-sync rules (roles/folder_sync/vars/main.yml) against the real rsync:
which names they keep out and which they let through, at the folder's top and deep in it. A rule
rewritten to cost rsync less (it tests every rule against every name it lists) must keep exactly
these answers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests import needs

REPO = Path(__file__).resolve().parents[2]
FIXED: list[str] = yaml.safe_load((REPO / "roles/folder_sync/vars/main.yml").read_text())[
    "folder_sync_fixed_rules"
]

# the file's path below a user's home -> kept out by the fixed rules
NAMES = {
    ".ssh/id_rsa": True,
    ".ssh/id_ed25519_sk": True,
    ".ssh/id_": True,
    ".ssh/id_b": True,
    ".ssh/id_ub": True,
    ".ssh/id_pub": True,
    ".ssh/id_rsa.pub": False,
    ".ssh/id_rsapub": True,
    ".ssh/id_rsa.pubx": True,
    ".ssh/work_ed25519": True,
    ".ssh/work_ed25519.pub": False,
    ".ssh/deploy.pem": True,
    ".ssh/deploy.key": True,
    ".ssh/putty.ppk": True,
    ".ssh/config": False,
    ".ssh/known_hosts": False,
    ".ssh/authorized_keys": False,
    "notssh/id_rsa": False,
    ".gnupg/secring.gpg": True,
    ".gnupg/private-keys-v1.d/abc.key": True,
    ".gnupg/pubring.kbx": False,
    "certs/me.p12": True,
    "certs/me.pfx": True,
    "certs/me.p12.txt": False,
    "certs/privkey1.pem": True,
    "certs/privkey.pem": True,
    "certs/server-key.pem": True,
    "certs/server_key.pem": True,
    "certs/server.key.pem": True,
    "certs/-key.pem": True,
    "certs/_key.pem": True,
    "certs/.key.pem": True,
    "certs/serverkey.pem": False,
    "certs/server+key.pem": False,
    "certs/key.pem": False,
    "certs/server-key.pem.bak": False,
    "certs/cert.pem": False,
    ".config/pc-switcher/config.yaml": True,
    ".config/pc-switcher-other/x": False,
    ".local/state/pc-switcher/logs/x.log": True,
    ".pcswitcher-partial/x": True,
    "notes.txt": False,
}


@pytest.mark.parametrize("depth", ["alice", "alice/projects/deep"])
def test_the_fixed_rules_keep_out_exactly_these_names(tmp_path: Path, depth: str) -> None:
    needs.tool("rsync")
    src = tmp_path / "home"
    for rel in NAMES:
        path = src / depth / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")
    res = subprocess.run(
        ["rsync", "-r", "--list-only", *[f"--filter={rule}" for rule in FIXED], f"{src}/"],
        capture_output=True,
        text=True,
        check=True,
    )
    listed = {line.split(None, 4)[4] for line in res.stdout.splitlines()}
    wrong = {rel: kept_out for rel, kept_out in NAMES.items() if (f"{depth}/{rel}" in listed) is kept_out}
    assert wrong == {}, "True: should have been kept out, False: should have been sent"
