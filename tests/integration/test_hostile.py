"""Hostile settings: no setting, path or fault makes pc-switcher destroy data outside what it mirrors.

Every case of :data:`CASES` is a few lines: the config's job sections (YAML text, written as a user
would, so a YAML ``|`` block's trailing newline is real), an optional shell setup on the target, the
text the refusal must contain and where it is refused:

- ``code=2`` (the default): an option error. ``pc-switcher config check`` refuses it (exit 2, one
  ``error:`` line naming it) and so does ``pc-switcher sync`` (exit 2, before connecting: no run
  directory on either machine).
- ``code=1``: only the target can tell (e.g. a symlink in a target path). ``config check`` accepts
  the config; ``sync`` fails in the job's validate phase (exit 1) and names it.

Either way the canary trees on both machines are byte for byte as before (content, modes, owners,
mtimes, xattrs: :func:`manifest`), and nothing of the run is left. Adding a case is adding a
``Case(...)`` to the table.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.folder_sync_helpers import manifest, sh
from tests.integration.helpers import (
    HISTORY_FLAGS,
    PC_SWITCHER,
    assert_one_error_line,
    leftovers,
    run_dirs,
    stderr_lines,
)
from tests.sandbox import Sandbox

DIR = "/root/hostile"
CANARY_SETUP = r"""
set -eu
mkdir -p /home/fz/keep/sub /home/fz/dst /root/victim /home/fz/src/sub
printf 'keep a\n' > /home/fz/keep/a; printf 'keep c\n' > /home/fz/keep/sub/c
printf 'dst\n' > /home/fz/dst/d1
printf 'victim\n' > /root/victim/v1; mkdir -p /root/victim/deep; printf 'v2\n' > /root/victim/deep/v2
printf 'src 1\n' > /home/fz/src/s1; printf 'src 3\n' > /home/fz/src/sub/s3
"""
# What is compared before and after every case, on each machine.
CANARIES = ("/home/fz", "/root/victim")
FOLDER = "  folders:\n    - source: /home/fz/src\n      target: /home/fz/dst\n"
FOLDER_FILTERS = f"folder_sync:\n{FOLDER}      filters: [{{}}]\n"


@dataclass
class Case:
    id: str
    sections: str  # YAML of the job sections (after `jobs:`); FOLDER is the usual folders list
    expect: list[str]  # parts of the refusal (the error line; for code 1, a line of the output)
    code: int = 2  # 2: refused by config check and sync; 1: refused by sync's validate on the target
    setup: str = ""  # bash run as root on the target first (undone by `undo`)
    undo: str = ""
    jobs: str = "folder_sync"


def _args(*args: str) -> str:
    quoted = ", ".join('"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"' for a in args)
    return f"folder_sync:\n{FOLDER}  rsync_args: [{quoted}]\n"


def _target(target: str, source: str = "/home/fz/src") -> str:
    return f'folder_sync:\n  folders:\n    - source: "{source}"\n      target: "{target}"\n'


def _targets(*targets: str) -> str:
    items = "".join(f'    - source: /home/fz/src\n      target: "{t}"\n' for t in targets)
    return f"folder_sync:\n  folders:\n{items}"


FORBIDDEN_TARGETS = [
    "/",
    "/etc",
    "/etc/x",
    "/usr",
    "/usr/local/x",
    "/boot/x",
    "/bin",
    "/sbin/x",
    "/lib/x",
    "/lib64/x",
]
FORBIDDEN_TARGETS += ["/proc/x", "/sys/x", "/dev/x", "/run/x", "/tmp/x", "/mnt/x"]
OUTSIDE = "is outside the places a mirror with delete may write"
CASES = [
    # ---- case 1: the source loses its files
    Case(
        "remove-sent-files", _args("--remove-sent-files"), ["'--remove-sent-files'", "--remove-source-files"]
    ),
    Case("remove-source-files", _args("--remove-source-files"), ["'--remove-source-files'", "deletes"]),
    Case("remote-option", _args("-M--remove-source-files"), ["-M (--remote-option)"]),
    # ---- case 2: a target with a newline
    Case("target-newline", _target("/home/fz/ke\\nep"), ["folders[0].target", "control character"]),
    Case(
        "target-yaml-block-newline",
        "folder_sync:\n  folders:\n    - source: /home/fz/src\n      target: |\n        /home/fz/keep\n",
        ["folders[0].target", "'/home/fz/keep\\n'", "control character"],
    ),
    Case("target-tab", _target("/home/fz/ke\\tep"), ["control character"]),
    Case(
        "source-newline", _target("/home/fz/keep", source="/home/fz/sr\\nc"), ["folders[0].source", "control"]
    ),
    # ---- case 3: a dry run that reports success
    Case("bundled-vn", _args("-vn"), ["'-vn'", "-n (--dry-run)"]),
    Case("bundled-an", _args("-an"), ["'-an'", "-n (--dry-run)"]),
    Case("dry-run", _args("--dry-run"), ["'--dry-run'", "report success"]),
    Case("list-only", _args("--list-only"), ["'--list-only'"]),
    # ---- case 4: writing outside the target
    Case(
        "target-is-symlink",
        _target("/home/fz/linkdir"),
        ["/home/fz/linkdir is a symlink (to /root/victim)"],
        code=1,
        setup="ln -s /root/victim /home/fz/linkdir",
        undo="rm /home/fz/linkdir",
    ),
    Case(
        "symlink-in-target-path",
        _target("/home/fz/rootlink/victim"),
        ["/home/fz/rootlink is a symlink (to /root)"],
        code=1,
        setup="ln -s /root /home/fz/rootlink",
        undo="rm /home/fz/rootlink",
    ),
    Case("backup-dir", _args("--backup-dir=/root/X"), ["'--backup-dir=/root/X'", "names a path"]),
    Case("backup", _args("-b"), ["-b (--backup)"]),
    Case("temp-dir", _args("--temp-dir=/root"), ["'--temp-dir=/root'", "names a path"]),
    Case("temp-dir-split", _args("--temp-dir", "/root"), ["'--temp-dir /root'"]),
    Case("temp-dir-short", _args("-T/root"), ["-T (--temp-dir)"]),
    Case("bare-path", _args("/etc/"), ["bare argument '/etc/'", "one more source"]),
    Case("double-dash", _args("--", "/etc/"), ["'--' ends rsync's options"]),
    Case("rsh-attached", _args("-essh -o ProxyCommand=touch /tmp/pwned"), ["-e (--rsh)"]),
    Case("rsh-long", _args("--rsh=sh -c 'touch /tmp/pwned'"), ["--rsh="]),
    Case("rsync-path", _args("--rsync-path=touch /tmp/pwned; rsync"), ["--rsync-path"]),
    Case("keep-dirlinks", _args("-K"), ["-K (--keep-dirlinks)", "follows symlinks"]),
    Case("link-dest", _args("--link-dest=/root"), ["--link-dest"]),
    Case("files-from", _args("--files-from=/etc/passwd"), ["--files-from"]),
    Case("rate-is-a-path", _args("--bwlimit", "/etc/"), ["'--bwlimit /etc/'", "a rate"]),
    Case("unknown-abbreviation", _args("--remove-sent"), ["'--remove-sent'", "not on folder_sync's list"]),
    # ---- case 5: equal or nested targets
    Case("equal-targets", _targets("/home/fz/dst", "/home/fz/dst"), ["folders[1]", "the same as"]),
    Case("equal-targets-slash", _targets("/home/fz/dst", "/home/fz//dst/"), ["folders[1]", "the same as"]),
    Case("nested-targets", _targets("/home/fz/dst", "/home/fz/dst/sub"), ["folders[1]", "nested with"]),
    Case("nested-targets-parent", _targets("/home/fz/dst/sub", "/home/fz"), ["folders[1]", "nested with"]),
    # ---- case 6: targets a mirror with delete would wreck
    *(
        Case(f"target-{path.strip('/').replace('/', '-') or 'root-dir'}", _target(path), [OUTSIDE])
        for path in FORBIDDEN_TARGETS
    ),
    Case("target-var", _target("/var"), ["/var itself"]),
    Case("target-srv", _target("/srv/"), ["/srv itself"]),
    Case("target-var-lib", _target("/var/lib"), ["system state"]),
    Case("target-var-lib-dpkg", _target("/var/lib/dpkg/info"), ["system state"]),
    Case("target-dotdot", _target("/home/../etc"), ["'..' components"]),
    Case("target-in-ssh", _target("/root/.ssh"), ["never-synced location"]),
    # ---- option errors that only the sync found before
    Case("relative-source", _target("/home/fz/dst", source="home/fz/src"), ["folders[0].source", "absolute"]),
    Case("source-dotdot", _target("/home/fz/dst", source="/home/fz/../../etc"), ["'..' components"]),
    Case(
        "timeout-negative",
        f"folder_sync:\n{FOLDER}  timeout: -1\n",
        ["folder_sync.timeout", "0 (no timeout)"],
    ),
    Case("per-dir-filter-path", f"folder_sync:\n{FOLDER}  per_dir_filter: ../evil\n", ["plain file name"]),
    # a rule that empties the rule list would drop the fixed never-sync rules (private keys) before it
    Case("filter-clear-bang", f"folder_sync:\n{FOLDER}  filters: ['!']\n", ["filters[0]", "clears the"]),
    Case("filter-clear-word", f"folder_sync:\n{FOLDER}  filters: ['clear']\n", ["clears the rules"]),
    Case("folder-filter-clear", FOLDER_FILTERS.format("'!'"), ["folders[0].filters[0]", "clears the rules"]),
    Case("never-sync-clear", f"folder_sync:\n{FOLDER}  never_sync: ['clear']\n", ["never_sync[0]"]),
    Case("per-dir-filter-dot", f"folder_sync:\n{FOLDER}  per_dir_filter: '..'\n", ["plain file name"]),
    Case(
        "filter-rule-newline", f'folder_sync:\n{FOLDER}  filters: ["- a\\n+ /etc"]\n', ["control character"]
    ),
    Case("filter-file-relative", _target("/home/fz/dst") + "      filter_file: rules.txt\n", ["filter file"]),
    Case(
        "dummy-success-negative",
        "dummy_success:\n  source_duration: -5\n",
        ["dummy_success.source_duration", "0 or more"],
        jobs="dummy_success",
    ),
    Case("dummy-fail-negative", "dummy_fail:\n  duration: -5\n", ["dummy_fail.duration"], jobs="dummy_fail"),
]


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox() as sandbox:
        sandbox.add("source")
        sandbox.add("target")
        for name in ("source", "target"):
            sh(sandbox[name], CANARY_SETUP)
        yield sandbox


def _config(sb: Sandbox, case: Case) -> str:
    text = f"jobs:\n  {case.jobs}: true\nsnapshots:\n  enabled: false\n{case.sections}"
    path = sb["source"].path(f"{DIR}/{case.id}.yml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return f"{DIR}/{case.id}.yml"


def _state(sb: Sandbox) -> dict[str, Any]:
    return {name: {c: manifest(sb[name], c) for c in CANARIES} for name in ("source", "target")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_setting_is_refused_and_nothing_changes(sb: Sandbox, case: Case) -> None:
    source, target = sb["source"], sb["target"]
    if case.setup:
        sh(target, case.setup)
    try:
        before = _state(sb)
        config = _config(sb, case)
        check = source.run([PC_SWITCHER, "config", "check", "-c", config], timeout=120)
        argv = [PC_SWITCHER, "sync", "target", "-c", config, "-i", str(sb.inventory_path), *HISTORY_FLAGS]
        sync = source.run(argv, timeout=240)
        if case.code == 2:
            # sync: one line (the first problem); config check: every problem, one line each
            line = assert_one_error_line(sync, 2)
            lines = stderr_lines(check)
            assert check.returncode == 2, check.stderr
            assert "Traceback" not in check.stdout + check.stderr
            assert lines, check.stderr
            assert line.startswith(lines[0].split(" — ")[0]), (line, lines)
            for each in (line, *lines):
                assert each.startswith("error: "), each
                assert " — " in each, f"no fix named: {each}"
            for part in case.expect:
                assert part in line, (part, line)
                assert part in "\n".join(lines), (part, lines)
            assert run_dirs(source) == [], "the sync started before refusing"
            assert run_dirs(target) == [], "the sync started before refusing"
        else:
            assert check.returncode == 0, check.stderr
            out = sync.stdout + sync.stderr
            assert sync.returncode == 1, out[-3000:]
            assert "Traceback" not in out
            for part in case.expect:
                assert part in out, (part, out[-3000:])
        assert _state(sb) == before
        for machine in (source, target):
            assert not machine.path("/tmp/pwned").exists()
        assert leftovers(sb) == {}
    finally:
        if case.undo:
            sh(target, case.undo)


ODD = "/home/fz/odd dir 'q' \"dq\" $(touch pwned) `id`/-x ünï ✓"


def test_a_target_with_odd_characters_is_synced_and_nothing_else_is_touched(sb: Sandbox) -> None:
    """A real sync into a folder whose name has spaces, quotes, $(...), backquotes, a component
    with a leading dash and unicode: the files arrive there and nowhere else; nothing is run."""
    source, target = sb["source"], sb["target"]
    sh(target, 'mkdir -p "$(dirname "$1")"', ODD)
    before = {c: manifest(target, c) for c in CANARIES if c != "/home/fz"}
    keep = manifest(target, "/home/fz/keep")
    sections = textwrap.dedent(
        f"""\
        folder_sync:
          folders:
            - source: /home/fz/src
              target: {_yaml_string(ODD)}
        """
    )
    config = _config(sb, Case("odd-target", sections, []))
    argv = [PC_SWITCHER, "sync", "target", "-c", config, "-i", str(sb.inventory_path), *HISTORY_FLAGS]
    res = source.run(argv, timeout=240)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert manifest(target, ODD) == manifest(source, "/home/fz/src")
    assert {c: manifest(target, c) for c in CANARIES if c != "/home/fz"} == before
    assert manifest(target, "/home/fz/keep") == keep
    for machine in (source, target):
        for where in ("/tmp", "/root", "/", "/home/fz", "/home/fz/src"):
            assert not machine.path(f"{where}/pwned").exists(), (machine.name, where)
    sh(target, 'rm -rf "$1"', ODD.rsplit("/", 1)[0])
    assert leftovers(sb) == {}


def _yaml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_there_are_enough_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 50
