"""The infrastructure roles' inputs come from their argspecs (pcswitcher/config/role_sections.py).

For btrfs_snapshots, sync_history, cleanup and carry: every argspec option is fed by a config
setting, set by the driver (role_sections.DRIVER_SET) or always left at its default
(LEFT_AT_DEFAULT), exactly one of these; defaults/main.yml equals the argspec's defaults; every
config setting of the sections ``snapshots:`` and ``history:`` names an argspec option and has its
default; and what the driver passes the role is what the config says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pcswitcher.config.init_text import default_config_text
from pcswitcher.config.reference import render
from pcswitcher.config.role_sections import (
    DRIVER_SET,
    DURATION,
    HISTORY,
    LEFT_AT_DEFAULT,
    SECTIONS,
    SNAPSHOTS,
    RoleSection,
)
from pcswitcher.config.schema import config_schema
from pcswitcher.config.settings import Config, HistoryConfig, SnapshotsConfig, load_config
from pcswitcher.jobs.runner import PlaybookResult
from pcswitcher.run.carry import DEFAULT_LINK
from pcswitcher.run.safety import TARGET_LOCK_PATH, Safety

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(DRIVER_SET)
BY_ROLE = {section.role: section for section in SECTIONS}


def _argspec(role: str) -> dict[str, Any]:
    data = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = data["argument_specs"]["main"]["options"]
    assert isinstance(options, dict)
    return {key.removeprefix(f"{role}_"): spec for key, spec in options.items()}


def _config_fed(role: str) -> set[str]:
    section = BY_ROLE.get(role)
    if section is None:
        return set()
    return {option for s in section.settings if not s.own for option in (s.option, *s.also)}


def _leaves(schema: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, sub in schema["properties"].items():
        if sub.get("type") == "object" and "properties" in sub:
            keys |= _leaves(sub, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def test_the_infrastructure_roles_are_covered() -> None:
    assert ROLES == ["btrfs_snapshots", "carry", "cleanup", "sync_history"]
    assert sorted(LEFT_AT_DEFAULT) == ROLES
    assert set(BY_ROLE) == {"btrfs_snapshots", "sync_history"}


@pytest.mark.parametrize("role", ROLES)
def test_every_option_is_fed_by_the_config_or_set_by_the_driver_or_left_at_its_default(role: str) -> None:
    options = set(_argspec(role))
    kinds = {
        "config": _config_fed(role),
        "driver": set(DRIVER_SET[role]),
        "default": set(LEFT_AT_DEFAULT[role]),
    }
    for a, b in (("config", "driver"), ("config", "default"), ("driver", "default")):
        assert not kinds[a] & kinds[b], f"{role}: {sorted(kinds[a] & kinds[b])} both {a} and {b}"
    named = set().union(*kinds.values())
    assert named == options, (
        f"{role}: options of none of the three: {sorted(options - named)}; "
        f"not options of the role: {sorted(named - options)}"
    )


@pytest.mark.parametrize("role", ROLES)
def test_defaults_file_equals_the_argspec_defaults(role: str) -> None:
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    argspec = _argspec(role)
    expected = {f"{role}_{name}": spec["default"] for name, spec in argspec.items() if "default" in spec}
    assert defaults == expected


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.key)
def test_every_setting_is_an_option_with_its_default(section: RoleSection) -> None:
    schema = config_schema({})["properties"][section.key]
    assert schema == section.schema()
    argspec = _argspec(section.role)
    own = {s.key for s in section.settings if s.own}
    assert _leaves(schema) == {s.key for s in section.settings}
    # The config's defaults, given to the role, are the argspec's (for the options with a setting).
    values = section.defaults()
    for name, value in section.option_values(values).items():
        assert value == argspec[name.removeprefix(f"{section.role}_")]["default"], name
    assert own <= {"enabled"}, "a setting of the driver's own is declared in Python: keep them few"


def test_the_duration_form_reads_back() -> None:
    assert DURATION.to_option(None) == 0
    assert DURATION.from_option(0) is None
    for seconds in (90, 3600, 7 * 86400, 10 * 86400):
        assert DURATION.to_option(DURATION.from_option(seconds)) == seconds


def _config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return load_config(path, {})


def _passed(config: Config, *, everything: bool = False) -> dict[str, Any]:
    """The extra vars the driver passes btrfs_snapshots (pre) and sync_history (read) for ``config``;
    ``everything``: also those of a rollback and of recording the history."""
    calls: list[dict[str, Any]] = []

    def play(playbook: Path, ident: str, extravars: dict[str, Any], check: bool) -> PlaybookResult:
        calls.append(extravars)
        return PlaybookResult("successful", 0, 1.0, set_stats={})

    safety = Safety.from_config(Path("/p"), config, "S1", play)
    safety.snapshot("pre")
    safety.read_history()
    if everything:
        safety.rollback(None, dry_run=True)
        safety.record_history()
    return {key: value for extravars in calls for key, value in extravars.items()}


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.key)
def test_the_driver_sets_what_it_says_it_sets(tmp_path: Path, section: RoleSection) -> None:
    passed = {
        key.removeprefix(f"{section.role}_")
        for key in _passed(_config(tmp_path, "jobs: {}\n"), everything=True)
        if key.startswith(f"{section.role}_")
    }
    assert DRIVER_SET[section.role] <= passed
    assert not LEFT_AT_DEFAULT[section.role] & passed


SET_ALL = """\
jobs: {}
snapshots:
  subvolumes: {source: [/, /home], target: [/srv]}
  location: {source: /s, target: /t}
  keep: 3
  older_than: 2w
  prune: false
history:
  path: /var/lib/pcs/h.json
"""


@pytest.mark.parametrize("text", ["jobs: {}\n", SET_ALL], ids=["defaults", "all set"])
def test_the_driver_passes_what_the_config_says(tmp_path: Path, text: str) -> None:
    config = _config(tmp_path, text)
    passed = _passed(config)
    data = yaml.safe_load(text)
    for section in (SNAPSHOTS, HISTORY):
        values = {**section.defaults()}
        for key, value in (data.get(section.key) or {}).items():
            values[key] = {**values[key], **value} if isinstance(value, dict) else value
        expected = section.option_values(values)
        assert {key: passed[key] for key in expected} == expected
    if text == SET_ALL:
        assert passed["btrfs_snapshots_older_than"] == 14 * 86400
        assert passed["sync_history_source_path"] == "/var/lib/pcs/h.json"


def test_the_loaded_defaults_are_the_argspecs() -> None:
    snapshots, history = _argspec("btrfs_snapshots"), _argspec("sync_history")
    assert SnapshotsConfig() == SnapshotsConfig(
        enabled=True,
        source_subvolumes=tuple(snapshots["source_subvolumes"]["default"]),
        target_subvolumes=tuple(snapshots["subvolumes"]["default"]),
        source_location=snapshots["source_location"]["default"],
        target_location=snapshots["location"]["default"],
        keep=snapshots["keep"]["default"],
        older_than=snapshots["older_than"]["default"] or None,
        prune=snapshots["prune"]["default"],
    )
    assert HistoryConfig().path == history["path"]["default"]


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.key)
def test_init_and_the_reference_show_every_setting(section: RoleSection) -> None:
    reference, init = render({}), default_config_text({})
    for key in sorted(_leaves(section.schema())):
        assert f"| `{section.key}.{key}` |" in reference
        assert f"  {key.rsplit('.', 1)[-1]}: " in init


@pytest.mark.parametrize(
    ("role", "option", "value"),
    [
        ("btrfs_snapshots", "lock_path", TARGET_LOCK_PATH),
        ("carry", "link", DEFAULT_LINK),
    ],
)
def test_what_the_driver_sets_is_the_roles_default(role: str, option: str, value: str) -> None:
    """The lock path (agent.LOCK_FILE) and the command's link exist once in Python; the role's
    default, for a playbook run by hand, is the same value."""
    assert _argspec(role)[option]["default"] == value
