"""The run's master prefers AES-GCM only when nobody chose the ssh ciphers (real ``ssh -G``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcswitcher.remote import ssh
from pcswitcher.remote.inventory import Target
from tests import needs


@pytest.fixture(autouse=True)
def _ssh_client() -> None:
    needs.tool("ssh")


def test_prefers_aes_gcm_and_keeps_every_default_cipher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssh, "_has_aes_instructions", lambda: True)
    target = Target(name="t", address="127.0.0.9")
    option = ssh.cipher_preference(target)
    assert option[0] == "-o"
    ciphers = option[1].removeprefix("Ciphers=").split(",")
    assert ciphers[:2] == list(ssh.FAST_CIPHERS)
    default = ssh._ssh_ciphers(["ssh", "-F", "/dev/null", "-G", "127.0.0.9"])
    assert sorted(ciphers) == sorted(default), "only the order changes"


@pytest.mark.parametrize(
    "args",
    [("-o", "Ciphers=aes256-ctr"), ("-c", "aes256-ctr"), ("-oCiphers=aes256-ctr",)],
)
def test_inventory_ssh_args_that_choose_ciphers_win(
    monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    monkeypatch.setattr(ssh, "_has_aes_instructions", lambda: True)
    assert ssh.cipher_preference(Target(name="t", address="127.0.0.9", ssh_common_args=args)) == []


def test_a_user_ssh_config_that_chooses_ciphers_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ssh, "_has_aes_instructions", lambda: True)
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n  Ciphers aes256-ctr\n")
    target = Target(name="t", address="127.0.0.9", ssh_extra_args=("-F", str(config)))
    assert ssh.cipher_preference(target) == []


def test_without_aes_instructions_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssh, "_has_aes_instructions", lambda: False)
    assert ssh.cipher_preference(Target(name="t", address="127.0.0.9")) == []
