"""The packages_apt job's plan and parsers (roles/packages_apt/module_utils/packages_apt_plan.py) on
fixture data: what the target gets, loses and keeps, and what is refused."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from tests.unit.role_files import load_role_file

plan_lib = load_role_file("packages_apt/module_utils/packages_apt_plan.py")

SETTINGS: dict[str, Any] = {
    "remove": True,
    "max_removals": 20,
    "protected": list(plan_lib.DEFAULT_PROTECTED),
    "protected_sources": [],
}


def pkg(
    version: str = "1.0", *, manual: bool = True, hold: bool = False, arch: str = "amd64", **extra: Any
) -> dict[str, Any]:
    return {
        "version": version,
        "arch": arch,
        "manual": manual,
        "hold": hold,
        "essential": extra.get("essential", False),
        "priority": extra.get("priority", "optional"),
        "state": "installed",
    }


def afile(content: bytes, owner: str | None = None) -> dict[str, Any]:
    return {
        "sha256": hashlib.sha256(content).hexdigest(),
        "owner": owner,
        "b64": base64.b64encode(content).decode(),
    }


def facts(
    packages: dict[str, Any], files: dict[str, Any] | None = None, foreign: list[str] | None = None
) -> dict[str, Any]:
    return {
        "tools": True,
        "native_arch": "amd64",
        "foreign_archs": foreign or [],
        "packages": packages,
        "files": files or {},
        "problems": [],
        "audit": "",
    }


def plan(source: dict[str, Any], target: dict[str, Any], **settings: Any) -> dict[str, Any]:
    result: dict[str, Any] = plan_lib.make_plan(source, target, {**SETTINGS, **settings})
    return result


# --------------------------------------------------------------------------- packages


def test_missing_manual_packages_are_installed_and_auto_ones_left_to_apt() -> None:
    source = facts({"pcs-a": pkg(), "pcs-b": pkg(manual=False), "base": pkg()})
    target = facts({"base": pkg()})
    got = plan(source, target)
    assert got["install"] == ["pcs-a"]
    assert got["remove"] == []
    assert got["problems"] == []
    assert plan_lib.has_work(got)


def test_held_packages_install_at_the_sources_version_then_hold() -> None:
    source = facts({"pcs-versioned": pkg("1.0", hold=True), "pcs-x": pkg("2.0", hold=True)})
    target = facts({"pcs-x": pkg("3.0")})
    got = plan(source, target)
    assert got["install"] == ["pcs-versioned=1.0", "pcs-x=2.0"]
    assert got["hold"] == ["pcs-versioned", "pcs-x"]


def test_held_on_both_at_other_versions_is_held_again_after_the_install() -> None:
    got = plan(facts({"pcs-x": pkg("1.0", hold=True)}), facts({"pcs-x": pkg("2.0", hold=True)}))
    assert got["install"] == ["pcs-x=1.0"]
    assert got["hold"] == ["pcs-x"]
    same = facts({"pcs-x": pkg("1.0", hold=True)})
    assert plan(same, same)["hold"] == []


def test_an_auto_held_package_installed_by_name_is_marked_auto_again() -> None:
    got = plan(facts({"lib-x": pkg("1.0", hold=True, manual=False)}), facts({}))
    assert got["install"] == ["lib-x=1.0"]
    assert got["auto"] == ["lib-x"]


def test_held_at_the_same_version_needs_only_the_hold() -> None:
    got = plan(facts({"pcs-x": pkg("2.0", hold=True)}), facts({"pcs-x": pkg("2.0")}))
    assert got["install"] == []
    assert got["hold"] == ["pcs-x"]
    assert got["unhold"] == []


def test_other_version_is_an_upgrade_candidate() -> None:
    got = plan(facts({"pcs-versioned": pkg("1.0")}), facts({"pcs-versioned": pkg("2.0")}))
    assert got["upgrade"] == {"pcs-versioned": "1.0"}
    assert got["install"] == []


def test_manual_on_target_not_on_source_is_removed_unless_protected() -> None:
    target = facts(
        {
            "pcs-removable": pkg(),
            "linux-image-6.1.0-9-amd64": pkg(),
            "openssh-server": pkg(),
            "libc-bin": pkg(essential=True),
            "mawk": pkg(priority="required"),
            "pcs-auto": pkg(manual=False),
        }
    )
    got = plan(facts({}), target)
    assert got["remove"] == ["pcs-removable"]
    assert got["protected_kept"] == {
        "libc-bin": "Essential: yes",
        "linux-image-6.1.0-9-amd64": "protected by 'linux-image-*'",
        "mawk": "Priority: required",
        "openssh-server": "protected by 'openssh-server'",
    }


def test_essential_and_required_are_kept_even_with_no_patterns() -> None:
    target = facts({"libc-bin": pkg(essential=True), "mawk": pkg(priority="required"), "x-y": pkg()})
    assert plan(facts({}), target, protected=[])["remove"] == ["x-y"]


def test_remove_false_turns_removals_into_a_report() -> None:
    got = plan(facts({}), facts({"pcs-removable": pkg()}), remove=False)
    assert got["remove"] == []
    assert got["not_removed"] == ["pcs-removable"]
    assert not plan_lib.has_work(got)


def test_more_removals_than_max_removals_is_a_problem_listing_them() -> None:
    target = facts({f"pcs-bench-{n:02d}": pkg() for n in range(1, 4)})
    got = plan(facts({}), target, max_removals=2)
    assert len(got["problems"]) == 1
    assert "3 packages would be removed, more than packages_apt.max_removals (2)" in got["problems"][0]
    assert "pcs-bench-01, pcs-bench-02, pcs-bench-03" in got["problems"][0]
    assert plan(facts({}), target, max_removals=3)["problems"] == []


def test_marks_are_made_equal() -> None:
    source = facts({"a-man": pkg(), "b-auto": pkg(manual=False), "c-same": pkg()})
    target = facts({"a-man": pkg(manual=False), "b-auto": pkg(), "c-same": pkg()})
    got = plan(source, target)
    assert (got["manual"], got["auto"]) == (["a-man"], ["b-auto"])


def test_holds_released_unless_the_package_goes() -> None:
    source = facts({"kept": pkg()})
    target = facts({"kept": pkg(hold=True), "gone": pkg(hold=True)})
    got = plan(source, target)
    assert got["unhold"] == ["kept"]
    assert got["remove"] == ["gone"]


def test_a_second_run_on_equal_machines_has_no_work() -> None:
    key = b"KEY"
    files = {
        "/etc/apt/sources.list.d/x.sources": afile(b"Types: deb\n"),
        "/etc/apt/keyrings/x.gpg": afile(key),
    }
    machine = facts({"a-1": pkg(), "b-2": pkg(manual=False, hold=True)}, files, ["i386"])
    got = plan(machine, machine)
    assert not plan_lib.has_work(got)
    assert got["writes"] == {}


def test_foreign_architectures() -> None:
    source = facts({}, foreign=["i386"])
    target = facts({"libc6:armhf": pkg(manual=False, arch="armhf")}, foreign=["armhf", "arm64"])
    got = plan(source, target)
    assert got["archs"] == {"add": ["i386"], "remove": ["arm64"], "kept": ["armhf"]}


def test_a_package_of_a_foreign_architecture() -> None:
    """Keyed name:arch (as apt-mark prints it): installed with its architecture added first; on a
    target whose source has neither, removed and its architecture with it (the apply module removes
    packages before architectures), unless removals are off or the package is protected."""
    key = "pcs-foreign:i386"
    with_it = facts({key: pkg(arch="i386")}, foreign=["i386"])
    got = plan(with_it, facts({}))
    assert (got["install"], got["archs"]["add"]) == ([key], ["i386"])
    assert got["update_reason"] == "architectures are added"
    got = plan(facts({}), with_it)
    assert (got["remove"], got["archs"]) == ([key], {"add": [], "remove": ["i386"], "kept": []})
    got = plan(facts({}), with_it, remove=False)
    assert (got["not_removed"], got["archs"]["remove"], got["archs"]["kept"]) == ([key], [], ["i386"])
    got = plan(facts({}), with_it, protected=["pcs-foreign"])  # a pattern matches the name
    assert (got["protected_kept"], got["archs"]["kept"]) == ({key: "protected by 'pcs-foreign'"}, ["i386"])
    auto = facts({key: pkg(arch="i386", manual=False)}, foreign=["i386"])
    assert plan(with_it, auto)["manual"] == [key]
    assert not plan_lib.has_work(plan(with_it, with_it))


LIST = "deb.example.org_debian_dists_stable_InRelease"
PACKAGES = "deb.example.org_debian_dists_stable_main_binary-amd64_Packages"
OLD, NEW = {"sha256": "aa", "date": 100}, {"sha256": "bb", "date": 200}


@pytest.mark.parametrize(
    ("source_lists", "target_lists", "reason"),
    [
        ({LIST: OLD, PACKAGES: {}}, {LIST: OLD, PACKAGES: {}}, ""),  # the same lists: no update
        ({LIST: OLD, PACKAGES: {}}, {LIST: NEW, PACKAGES: {}, "x_Packages": {}}, ""),  # newer, and more
        ({LIST: NEW, PACKAGES: {}}, {LIST: OLD, PACKAGES: {}}, "older than the source's (1 of 2 files)"),
        ({LIST: OLD, PACKAGES: {}}, {LIST: OLD}, "older than the source's (1 of 2 files)"),  # one missing
        ({LIST: OLD}, {}, "older than the source's (1 of 1 files)"),  # the target never updated
        ({LIST: OLD}, {LIST: {"sha256": "cc", "date": None}}, "(1 of 1 files)"),  # no Date: not vouched for
        ({LIST: {"sha256": None, "date": 100}}, {LIST: {"sha256": None, "date": None}}, "(1 of 1 files)"),
        ({"flat_Packages": {}}, {"flat_Packages": {}}, "(1 of 1 files)"),  # no Release covers it
        ({}, {LIST: OLD}, "the source has no package lists"),  # nothing to vouch for the target's
    ],
)
def test_the_update_before_an_install_only_when_the_targets_lists_are_behind(
    source_lists: dict[str, Any], target_lists: dict[str, Any], reason: str
) -> None:
    source, target = facts({"a-1": pkg()}), facts({})
    source["lists"], target["lists"] = source_lists, target_lists
    got = plan(source, target)
    assert got["install"] == ["a-1"]
    assert (reason in got["update_reason"]) if reason else got["update_reason"] == ""


@pytest.mark.parametrize(
    ("text", "date"),
    [
        ("Origin: x\nDate: Sat, 07 Dec 2024 09:30:00 UTC\nSuite: s\n", 1733563800),
        (
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nDate: Sat, 07 Dec 2024 09:30:00 +0000\n",
            1733563800,
        ),
        ("Origin: x\n", None),
        ("Date: yesterday\n", None),
    ],
)
def test_release_dates(text: str, date: int | None) -> None:
    assert plan_lib.release_date(text) == date


def test_changed_apt_files_or_a_new_architecture_always_update() -> None:
    lists = {LIST: OLD}
    source = facts({}, {SIGNED: afile(b"new")}, ["i386"])
    target = facts({})
    source["lists"] = target["lists"] = lists
    assert plan(source, target)["update_reason"] == "the apt files change"
    target["files"] = source["files"]
    assert plan(source, target)["update_reason"] == "architectures are added"
    target["foreign_archs"] = ["i386"]
    assert plan(source, target)["update_reason"] == ""


def test_a_different_native_architecture_is_refused() -> None:
    target = facts({})
    target["native_arch"] = "arm64"
    assert "syncs machines of one architecture" in plan(facts({}), target)["problems"][0]


@pytest.mark.parametrize("name", ["-oDir=/tmp", "Foo", "a", "a b", "pkg;rm", "pkg:i386;x", "x\ny"])
def test_bad_package_names_are_refused(name: str) -> None:
    assert plan_lib.package_key_problem(name)
    assert any(repr(name) in p for p in plan(facts({name: pkg()}), facts({}))["problems"])


@pytest.mark.parametrize("name", ["pcs-a", "libstdc++6", "g++-12", "libc6:i386", "python3.11"])
def test_good_package_names(name: str) -> None:
    assert plan_lib.package_key_problem(name) is None


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("1.0", True),
        ("1:2.3-4+deb12u1", True),
        ("2.0~rc1", True),
        ("-1", False),
        ("a1", False),
        ("1 2", False),
        ("", False),
    ],
)
def test_versions(version: str, ok: bool) -> None:
    assert (plan_lib.version_problem(version) is None) is ok


# --------------------------------------------------------------------------- apt files

SIGNED = "/etc/apt/sources.list.d/pcs-signed.sources"
KEY = "/etc/apt/keyrings/pcs-test-signed.gpg"


def test_files_added_replaced_removed_and_owned_ones_left_to_dpkg() -> None:
    source = facts(
        {},
        {
            SIGNED: afile(b"new"),
            KEY: afile(b"key"),
            "/etc/apt/preferences.d/pcs.pref": afile(b"pin"),
            "/etc/apt/trusted.gpg.d/debian.asc": afile(b"deb", owner="debian-archive-keyring"),
            "/etc/apt/sources.list.d/vendor.list": afile(b"v2"),
        },
    )
    target = facts(
        {},
        {
            SIGNED: afile(b"old"),
            "/etc/apt/sources.list.d/stale.list": afile(b"stale"),
            "/etc/apt/sources.list.d/vendor.list": afile(b"v1", owner="vendor-release"),
            "/etc/apt/trusted.gpg.d/debian.asc": afile(b"deb", owner="debian-archive-keyring"),
            "/etc/apt/trusted.gpg.d/own.gpg": afile(b"x", owner="own-keyring"),
            "/usr/share/keyrings/other.gpg": afile(b"k"),
        },
    )
    got = plan(source, target)
    assert got["files"] == {
        "add": [KEY, "/etc/apt/preferences.d/pcs.pref"],
        "replace": [SIGNED],
        "remove": ["/etc/apt/sources.list.d/stale.list"],
        "owned": ["/etc/apt/sources.list.d/vendor.list"],
        "protected": [],
    }
    assert got["writes"] == {
        KEY: base64.b64encode(b"key").decode(),
        "/etc/apt/preferences.d/pcs.pref": base64.b64encode(b"pin").decode(),
        SIGNED: base64.b64encode(b"new").decode(),
        "/etc/apt/sources.list.d/stale.list": None,
    }


def test_protected_sources_are_not_removed() -> None:
    target = facts(
        {},
        {
            "/etc/apt/sources.list.d/company-x.list": afile(b"c"),
            "/etc/apt/sources.list.d/y.list": afile(b"y"),
        },
    )
    got = plan(facts({}), target, protected_sources=["/etc/apt/sources.list.d/company-*"])
    assert got["files"]["remove"] == ["/etc/apt/sources.list.d/y.list"]
    assert got["files"]["protected"] == ["/etc/apt/sources.list.d/company-x.list"]


@pytest.mark.parametrize(
    "path",
    [
        "/etc/apt/sources.list",
        "/etc/apt/sources.list.d/a_b-c.1.list",
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/preferences",
        "/etc/apt/preferences.d/pcs",
        "/etc/apt/preferences.d/pcs.pref",
        "/etc/apt/trusted.gpg",
        "/etc/apt/trusted.gpg.d/k.asc",
        "/etc/apt/keyrings/k.gpg",
        "/usr/share/keyrings/k.pgp",
    ],
)
def test_paths_the_job_writes(path: str) -> None:
    assert plan_lib.path_problem(path) is None


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "/etc/apt/sources.list.d/../../passwd",
        "/etc/apt/sources.list.d/sub/x.list",
        "/etc/apt/sources.list.d/.hidden.list",
        "/etc/apt/sources.list.d/x.list.save",
        "/etc/apt/sources.list.d/x y.list",
        "/etc/apt/sources.list.d/x\n.list",
        "/etc/apt/sources.list.d/-o.list",
        "/etc/apt/apt.conf.d/99evil",
        "/etc/apt/preferences.d/x.conf",
        "/etc/apt/keyrings/x.txt",
        "/usr/share/keyrings/sub/x.gpg",
        "etc/apt/sources.list",
        "/etc/apt//sources.list",
    ],
)
def test_paths_the_job_never_writes(path: str) -> None:
    assert plan_lib.path_problem(path)


def test_sources_files_name_their_keys() -> None:
    deb822 = (
        "# comment\nTypes: deb\nURIs: file:///srv/pcs-apt/signed\nSuites: pcs\nComponents: main\n"
        "Signed-By: /etc/apt/keyrings/pcs-test-signed.gpg\n\n"
        "Types: deb\nURIs: http://example.org/x\nSuites: a b\n"
        "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n"
    )
    assert plan_lib.repositories("/etc/apt/sources.list.d/x.sources", deb822) == [
        {"uris": ["file:///srv/pcs-apt/signed"], "suites": ["pcs"], "keys": [KEY]},
        {"uris": ["http://example.org/x"], "suites": ["a", "b"], "keys": []},
    ]
    legacy = (
        "deb [arch=amd64 signed-by=/usr/share/keyrings/a.gpg] http://a/ s main\n"
        "# deb http://commented/ x main\ndeb-src http://b/ t main # tail\n"
    )
    assert plan_lib.repositories("/etc/apt/sources.list", legacy) == [
        {"uris": ["http://a/"], "suites": ["s"], "keys": ["/usr/share/keyrings/a.gpg"]},
        {"uris": ["http://b/"], "suites": ["t"], "keys": []},
    ]


@pytest.mark.parametrize(
    "key", ["/etc/shadow", "/etc/apt/keyrings/../../shadow", "/root/k.gpg", "/etc/apt/keyrings/sub/k.gpg"]
)
def test_keys_outside_the_key_dirs_are_refused(key: str) -> None:
    problem = plan_lib.key_reference_problem("/etc/apt/sources.list.d/x.sources", key)
    assert problem
    assert "x.sources" in problem


# --------------------------------------------------------------------------- dpkg and apt output

STATUS = """Package: pcs-a
Status: install ok installed
Priority: optional
Architecture: all
Version: 1.0

Package: libc-bin
Essential: yes
Status: install ok installed
Priority: required
Architecture: amd64
Version: 2.36-9

Package: pcs-versioned
Status: hold ok installed
Architecture: all
Version: 1.0
Description: two
 lines

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1

Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.36-9
"""
EXTENDED = (
    "Package: libc6\nArchitecture: i386\nAuto-Installed: 1\n\n"
    "Package: pcs-a\nArchitecture: all\nAuto-Installed: 0\n"
)


def test_packages_from_dpkg_status_and_apt_marks() -> None:
    got = plan_lib.packages_from_status(STATUS, EXTENDED, "amd64")
    assert sorted(got) == ["libc-bin", "libc6:i386", "pcs-a", "pcs-versioned"]
    assert got["libc6:i386"]["manual"] is False
    assert got["pcs-a"]["manual"] is True
    assert got["pcs-versioned"]["hold"] is True
    assert (got["libc-bin"]["essential"], got["libc-bin"]["priority"]) == (True, "required")


def test_apt_simulation_output() -> None:
    out = (
        "NOTE: This is only a simulation!\nInst pcs-c (1.0 pcs [all])\n"
        "Inst pcs-versioned [2.0] (1.0 pcs [all])\nRemv pcs-removable [1.0]\nRemv old\n"
        "Conf pcs-c (1.0 pcs [all])\nInst libc6:i386 (2.36 Debian:12 [i386])\n"
    )
    assert plan_lib.simulation(out) == {
        "install": [["pcs-c", "1.0"], ["pcs-versioned", "1.0"], ["libc6:i386", "2.36"]],
        "remove": [["pcs-removable", "1.0"], ["old", ""]],
    }


def test_candidates_from_apt_cache_policy() -> None:
    out = (
        "pcs-versioned:\n  Installed: 2.0\n  Candidate: 1.0\n  Version table:\n"
        "none:\n  Installed: (none)\n  Candidate: (none)\n"
    )
    assert plan_lib.candidates(out) == {"pcs-versioned": "1.0", "none": ""}


def test_install_problems_name_the_package() -> None:
    out = (
        "Reading package lists...\nE: Unable to locate package pcs-nowhere\n"
        "E: Version '9.9' for 'pcs-versioned' was not found\n"
        "E: Package 'ghost' has no installation candidate\n"
    )
    assert plan_lib.install_problems(plan_lib.apt_errors(out)) == [
        "package pcs-nowhere is not in the target's repositories: it cannot be installed there",
        "pcs-versioned 9.9 is not in the target's repositories: it cannot be installed there",
        "package ghost is not in the target's repositories: it cannot be installed there",
    ]


def test_update_errors_name_the_repository() -> None:
    repos = {
        SIGNED: [{"uris": ["file:///srv/pcs-apt/signed"], "suites": ["pcs"], "keys": []}],
        "/etc/apt/sources.list.d/pcs-broken.sources": [
            {"uris": ["file:///srv/pcs-apt/missing"], "suites": ["pcs"], "keys": []}
        ],
    }
    line = "Err:2 file:/srv/pcs-apt/missing pcs InRelease File not found - /srv/pcs-apt/missing/dists/pcs/x"
    assert (
        plan_lib.repository_of(line, repos)
        == "/etc/apt/sources.list.d/pcs-broken.sources (file:///srv/pcs-apt/missing pcs)"
    )
    assert plan_lib.repository_of("E: something else", repos) is None


def test_progress_lines_count_packages() -> None:
    seen: list[str] = []
    lines = [
        "pmstatus:pcs-c:10:Preparing pcs-c",
        "pmstatus:dpkg-exec:15:Running dpkg",
        "pmstatus:pcs-c:20:Unpacking",
        "pmstatus:pcs-b:40:Installing pcs-b",
        "dlstatus:1:0:x",
    ]
    got = [plan_lib.progress_item(line, seen, 2) for line in lines]
    assert got == [
        {"percent": 10, "item": "1 of 2 pcs-c"},
        None,
        {"percent": 20, "item": "1 of 2 pcs-c"},
        {"percent": 40, "item": "2 of 2 pcs-b"},
        None,
    ]


def test_the_plan_checks_the_sources_files_again() -> None:
    """The target's module trusts no input: a path off the allowlist or a key outside the key dirs
    in the source's facts is a problem, whoever made them."""
    evil = b"Types: deb\nURIs: http://x/\nSuites: s\nSigned-By: /etc/shadow\n"
    source = facts({}, {"/etc/cron.d/evil": afile(b"x"), "/etc/apt/sources.list.d/k.sources": afile(evil)})
    got = plan(source, facts({}))["problems"]
    assert any("/etc/cron.d/evil is not an apt source" in p for p in got)
    assert any("k.sources names the key '/etc/shadow'" in p for p in got)


def test_steps_follow_the_plan() -> None:
    got = plan(facts({"pcs-a": pkg(), "b-auto": pkg(manual=False)}), facts({"b-auto": pkg()}))
    assert got["steps"] == {"apply": True, "lists": True}
    idle = plan(facts({}), facts({}))
    assert idle["steps"] == {"apply": False, "lists": False}
    marks_only = plan(facts({"b-auto": pkg(manual=False)}), facts({"b-auto": pkg()}))
    assert marks_only["steps"] == {"apply": True, "lists": False}
    assert marks_only["update_reason"] == ""  # nothing to install: no update, whatever the lists
    repair_only = facts({})
    repair_only["audit"] = "The following packages are only half configured"
    assert plan(facts({}), repair_only)["steps"] == {"apply": True, "lists": False}


def test_what_apt_did_from_its_output() -> None:
    out = (
        "Unpacking pcs-c (1.0) ...\nSetting up pcs-c (1.0) ...\nSetting up libc6:i386 (2.36-9) ...\n"
        "Removing pcs-removable (1.0) ...\nProcessing triggers for man-db (2.11.2-2) ...\n"
    )
    assert plan_lib.performed(out) == {
        "install": [["pcs-c", "1.0"], ["libc6:i386", "2.36-9"]],
        "remove": [["pcs-removable", "1.0"]],
    }
