"""folder_sync's option checks (roles/folder_sync/filter_plugins/folder_sync_options.py).

The rsync_args parser is checked against the real rsync where it matters: which options take a
value, that rsync accepts no abbreviation, what the aliases and bundles really do, that every
allowed option and value is accepted by rsync, and that --protect-args keeps paths off the remote
command line.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import needs
from tests.unit.role_files import load_role_file

REPO = Path(__file__).resolve().parents[2]
opts: Any = load_role_file(
    "folder_sync/filter_plugins/folder_sync_options.py", "folder_sync_options_under_test"
)


@pytest.fixture
def needs_rsync() -> None:
    needs.tool("rsync")


DEFAULTS: dict[str, Any] = {
    "folders": [{"source": "/home", "target": None, "enabled": True, "filter_file": None, "filters": []}],
    "filters": [],
    "per_dir_filter": ".pcswitcher-filter",
    "never_sync": ["- .cache/nvidia/"],
    "delete": True,
    "rsync_args": [],
    "timeout": 120,
}


def problems(**changes: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = opts.option_problems({**DEFAULTS, **changes})
    return result


def args_problems(*args: str) -> list[str]:
    return [p["problem"] for p in opts.rsync_args_problems(list(args))]


def rsync(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rsync", *argv], capture_output=True, text=True, cwd=cwd, timeout=30, check=False)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "a").write_text("a\n")
    (tmp_path / "src" / "sub" / "b").write_text("b\n")
    (tmp_path / "dst").mkdir()
    return tmp_path


def test_the_defaults_have_no_problem() -> None:
    assert problems() == []


@pytest.mark.parametrize(
    "args",
    [
        ["-x"],
        ["--one-file-system", "-xx"],
        ["-xz", "--compress-level=3", "--zl=9"],
        ["--bwlimit=50m"],
        ["--bwlimit", "1.5M"],
        ["--bwlimit=0"],
        ["-c", "-I", "-W", "--no-whole-file", "--no-W", "--fsync", "--open-noatime"],
        ["--max-delete=0", "--max-delete", "100"],
    ],
)
def test_allowed_options_pass(args: list[str]) -> None:
    assert args_problems(*args) == []


@pytest.mark.usefixtures("needs_rsync")
@pytest.mark.parametrize(
    "args",
    [
        ["-x"],
        ["-xz", "--compress-level=3", "--zl=9"],
        ["--bwlimit=50m", "--bwlimit", "1.5M", "--bwlimit=0", "--bwlimit=100k", "--bwlimit=2G"],
        ["-c", "-I", "-W", "--no-whole-file", "--no-W", "--fsync", "--open-noatime"],
        ["--max-delete=0", "--max-delete", "100"],
    ],
)
def test_rsync_accepts_what_the_allowlist_allows(tree: Path, args: list[str]) -> None:
    assert args_problems(*args) == []
    res = rsync("-a", *args, "src/", "dst/", cwd=tree)
    assert res.returncode == 0, res.stderr
    assert (tree / "dst" / "sub" / "b").read_text() == "b\n"


@pytest.mark.parametrize(
    ("arg", "expect"),
    [
        ("--remove-sent-files", "rsync's alias of --remove-source-files"),
        ("--remove-source-files", "deletes the transferred files on the source"),
        ("-vn", "-n (--dry-run)"),
        ("-an", "-n (--dry-run)"),
        ("-xn", "-n (--dry-run)"),
        ("--dry-run", "report success"),
        ("-essh", "-e (--rsh)"),
        ("-e", "-e (--rsh)"),
        ("--rsh=ssh", "builds the ssh command"),
        ("--backup-dir=/root/X", "names a path"),
        ("--temp-dir=/root", "names a path"),
        ("-T/root", "-T (--temp-dir)"),
        ("-xT/root", "-T (--temp-dir)"),
        ("--del", "rsync's alias of --delete-during"),
        ("--delete-excluded", "protect"),
        ("--protect-args", "the job sets it itself"),
        ("--no-protect-args", "without a shell"),
        ("--old-args", "without a shell"),
        ("--no-owner", "turns off"),
        ("--no-o", "turns off"),
        ("-K", "-K (--keep-dirlinks)"),
        ("--inplace", "half-written"),
        ("--modify-window=1", "the job sets it itself (-1"),
        ("--modify-window=-1", "the job sets it itself (-1"),
        ("-@2", "-@ (--modify-window)"),
        ("-x@1", "-@ (--modify-window)"),
        ("--bwlim=1m", "not on folder_sync's list"),
        ("--one-file", "not on folder_sync's list"),
        ("--bwlimit=50 m", "must be a rate"),
        ("--bwlimit=-1", "must be a rate"),
        ("--bwlimit=1m\n", "must be a rate"),
        ("--compress-level=10", "level from 0 to 9"),
        ("--max-delete=-1", "a whole number"),
        ("--fsync=1", "takes no value"),
        ("-x=1", "-=: not an rsync option"),
        ("/etc/", "bare argument"),
        ("-", "bare argument"),
        ("", "bare argument"),
        ("--", "ends rsync's options"),
        ("--compress-level", "needs a value"),
    ],
)
def test_refused_arguments_are_named_with_the_reason(arg: str, expect: str) -> None:
    found = args_problems(arg)
    assert len(found) == 1, found
    assert expect in found[0], found
    assert repr(arg) in found[0] or arg == "--", found


def test_a_value_is_consumed_like_rsync_does() -> None:
    # "--bwlimit VALUE": the next argument is the value, not a path and not an option
    assert args_problems("--bwlimit", "50m", "-x") == []
    assert args_problems("--bwlimit", "/etc/") == [
        "'--bwlimit /etc/' is not allowed: the value of --bwlimit must be a rate such as 500, 50m or 1.5M"
    ]
    # a refused option's separate value is part of that option, not one more bare argument
    assert len(args_problems("--temp-dir", "/root", "-x")) == 1
    assert len(args_problems("-T", "/root", "-x")) == 1
    # everything after a refused argument is still checked
    assert len(args_problems("-n", "/etc/")) == 2


@pytest.mark.usefixtures("needs_rsync")
def test_rsync_has_no_abbreviations(tree: Path) -> None:
    for arg in ("--one-file", "--bwlim=1m", "--remove-sent", "--dry", "--delete-ex"):
        res = rsync("-a", arg, "src/", "dst/", cwd=tree)
        assert res.returncode == 1, arg
        assert "unknown option" in res.stderr, (arg, res.stderr)


@pytest.mark.usefixtures("needs_rsync")
def test_the_value_taking_options_match_rsync(tree: Path) -> None:
    for name in sorted(opts.LONG_WITH_VALUE):
        res = rsync(f"--{name}", cwd=tree)
        assert f"--{name}: missing argument" in res.stderr, (name, res.stderr)
    for letter in opts.SHORT_NAMES:
        res = rsync(f"-{letter}", cwd=tree)
        takes = "missing argument" in res.stderr
        assert takes == (letter in opts.SHORT_WITH_VALUE), (letter, res.stderr)


@pytest.mark.usefixtures("needs_rsync")
def test_what_the_refused_spellings_really_do(tree: Path) -> None:
    """The cases of the issue, on the real rsync: each does what its refusal says."""
    # --remove-sent-files removes the source's files
    res = rsync("-a", "--remove-sent-files", "src/", "dst/", cwd=tree)
    assert res.returncode == 0, res.stderr
    assert not (tree / "src" / "a").exists()
    assert (tree / "dst" / "a").exists()
    # -vn / -an are dry runs: rc 0, nothing written
    (tree / "src" / "new").write_text("new\n")
    for bundle in ("-vn", "-an"):
        res = rsync("-a", bundle, "src/", "dst/", cwd=tree)
        assert res.returncode == 0, res.stderr
        assert not (tree / "dst" / "new").exists()
    # -eCOMMAND attached replaces the transport
    marker = tree / "rsh-ran"
    rsh = tree / "rsh"
    rsh.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    rsh.chmod(0o755)
    rsync("-a", f"-e{rsh}", "src/", "host:/x/", cwd=tree)
    assert marker.exists()


@pytest.mark.usefixtures("needs_rsync")
@pytest.mark.parametrize("flag", ["--protect-args", "--secluded-args"])
def test_protect_args_keeps_paths_off_the_remote_command_line(tree: Path, flag: str) -> None:
    """rsync 3.2.4+ calls --protect-args --secluded-args: with either, the remote shell's command
    line is the server's options only; the target path goes through rsync's protocol."""
    out = tree / "argv"
    rsh = tree / "rsh"
    rsh.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {out}\nexit 1\n')
    rsh.chmod(0o755)
    target = "/home/x y/$(touch pwned)/-x\nz/"
    rsync("-a", flag, "-e", str(rsh), "src/", f"host:{target}", cwd=tree)
    argv = out.read_text().splitlines()
    assert argv[:3] == ["host", "rsync", "--server"]
    assert argv[3].startswith("-s")
    assert len(argv) == 4, argv
    rsync("-a", "-e", str(rsh), "src/", f"host:{target}", cwd=tree)
    assert "pwned" in out.read_text()  # without it, the path is on the remote command line


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("/home", True),
        ("/home/alice/", True),
        ("/root", True),
        ("/root/x", True),
        ("/srv/data", True),
        ("/opt/app/data", True),
        ("/var/www", True),
        ("/var/lib/libvirt/images", True),
        ("//home//alice", True),
        ("/", False),
        ("/srv", False),
        ("/opt/", False),
        ("/var", False),
        ("/var/lib", False),
        ("/var/lib/dpkg", False),
        ("/var/lib/apt/lists", False),
        ("/var/log", False),
        ("/var/run/x", False),
        ("/etc", False),
        ("/etc/ssh", False),
        ("/usr/local", False),
        ("/boot/efi", False),
        ("/lib", False),
        ("/lib64/x", False),
        ("/libx32", False),
        ("/bin", False),
        ("/sbin/x", False),
        ("/proc/1", False),
        ("/sys", False),
        ("/dev/shm", False),
        ("/run/user", False),
        ("/tmp/x", False),
        ("/mnt/usb", False),
        ("/media/x", False),
        ("/snap/x", False),
        ("/homeless", False),
        ("/rooted/x", False),
    ],
)
def test_targets_are_an_allowlist(target: str, allowed: bool) -> None:
    assert (opts.target_problem(target) is None) == allowed


@pytest.mark.parametrize(
    ("folder", "path", "expect"),
    [
        ({"source": "home/a"}, ["folders", 0, "source"], "absolute"),
        ({"source": "/home/a", "target": "home/b"}, ["folders", 0, "target"], "absolute"),
        ({"source": "/home/a\n"}, ["folders", 0, "source"], "control character"),
        ({"source": "/home/a", "target": "/home/b\tc"}, ["folders", 0, "target"], "control character"),
        ({"source": "/home/a", "target": "/home/b\x7f"}, ["folders", 0, "target"], "control character"),
        ({"source": "/home/./a"}, ["folders", 0, "source"], "'.' or '..'"),
        ({"source": "/home/a", "target": "/home/../etc"}, ["folders", 0, "target"], "'.' or '..'"),
        ({"source": "/home/a/.ssh"}, ["folders", 0, "source"], "never-synced"),
        ({"source": "/home/a", "target": "/root/.gnupg/x"}, ["folders", 0, "target"], "never-synced"),
        ({"source": "/usr/a"}, ["folders", 0, "source"], "outside the places"),
        ({"source": "/home/a", "filter_file": "rules"}, ["folders", 0, "filter_file"], "absolute"),
        ({"source": "/home/a", "filters": ["- x", "- y\nz"]}, ["folders", 0, "filters", 1], "control"),
    ],
)
def test_folder_problems_point_at_the_value(folder: dict[str, Any], path: list[Any], expect: str) -> None:
    found = problems(folders=[folder])
    assert [p["path"] for p in found] == [path], found
    assert expect in found[0]["problem"]


def test_disabled_folders_do_not_count_for_overlaps_but_are_checked() -> None:
    folders: list[dict[str, Any]] = [
        {"source": "/home/a", "target": "/home/x"},
        {"source": "/home/b", "target": "/home/x", "enabled": False},
    ]
    assert problems(folders=folders) == []
    folders[1]["target"] = "/etc"
    assert [p["path"] for p in problems(folders=folders)] == [["folders", 1, "target"]]


@pytest.mark.parametrize(
    ("targets", "how"),
    [
        (["/home/x", "/home/x"], "the same as"),
        (["/home/x/", "//home/x"], "the same as"),
        (["/home/x", "/home/x/y"], "nested with"),
        (["/home/x/y", "/home"], "nested with"),
    ],
)
def test_equal_or_nested_targets_are_refused(targets: list[str], how: str) -> None:
    found = problems(folders=[{"source": f"/home/s{i}", "target": t} for i, t in enumerate(targets)])
    assert len(found) == 1, found
    assert found[0]["path"] == ["folders", 1]
    assert how in found[0]["problem"]


def test_neighbours_are_not_nested() -> None:
    assert (
        problems(
            folders=[{"source": "/home/a", "target": "/home/x"}, {"source": "/home/b", "target": "/home/xy"}]
        )
        == []
    )


@pytest.mark.parametrize("name", ["../evil", ".", "..", "a/b", "a b", "x\n", "$(id)", "-"])
def test_per_dir_filter_is_a_plain_name(name: str) -> None:
    if name == "-":
        assert problems(per_dir_filter=name) == []  # a plain name, if odd
        return
    assert [p["path"] for p in problems(per_dir_filter=name)] == [["per_dir_filter"]]


@pytest.mark.parametrize("value", [-1, "-5"])
def test_timeout_is_not_negative(value: object) -> None:
    assert [p["path"] for p in problems(timeout=value)] == [["timeout"]]


def test_rules_with_control_characters_are_refused() -> None:
    found = problems(filters=["- a", "+ b\r"], never_sync=["- c\x00"])
    assert [p["path"] for p in found] == [["filters", 1], ["never_sync", 0]]


@pytest.mark.parametrize("rule", ["!", "clear", " ! ", "clear,x", "!,s"])
def test_rules_that_clear_the_rule_list_are_refused(rule: str) -> None:
    found = problems(
        filters=["- a", rule],
        never_sync=[rule],
        folders=[{"source": "/home/a", "filters": [rule]}],
    )
    paths = sorted(p["path"] for p in found)
    assert paths == [["filters", 1], ["folders", 0, "filters", 0], ["never_sync", 0]]
    assert all("clears the rules before it" in p["problem"] for p in found)


def test_the_rsync_binary_clears_the_list_with_those_rules(tmp_path: Path) -> None:
    """What the check refuses is what rsync does: a '!' after an exclude brings the file back."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "id_rsa").write_text("key\n")
    for rule, listed in (("- noop", False), ("!", True), ("clear", True)):
        res = subprocess.run(
            ["rsync", "-r", "--list-only", "--filter=- id_rsa", f"--filter={rule}", f"{tmp_path}/src/"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert ("id_rsa" in res.stdout) is listed, (rule, res.stdout)
    assert problems(filters=["- noop"]) == []


def test_the_ansible_filter_says_where() -> None:
    lines = opts.FilterModule().filters()["folder_sync_option_problems"]({**DEFAULTS, "rsync_args": ["-n"]})
    assert len(lines) == 1
    assert lines[0].startswith("folder_sync_rsync_args[0]: '-n' is not allowed: -n (--dry-run)")


def _rules(count: int, quote: str = "") -> list[str]:
    return [f"- /some/where/{quote}{i:06d}-a-longer-name-of-a-file-to-leave-out" for i in range(count)]


def test_rules_within_the_command_lines_budget_pass() -> None:
    folders = [{"source": "/home", "filters": _rules(300)}]
    assert problems(folders=folders, filters=_rules(100)) == []


@pytest.mark.parametrize("quote", ["", "'"], ids=["plain", "quotes"])
def test_rules_beyond_the_command_lines_budget_are_one_problem(quote: str) -> None:
    """Counted as the command line carries them: a folder's rules twice, shell quoting included (a
    quote becomes five characters), a disabled folder not at all."""
    count = 520 if quote else 600
    if quote:  # the same rules without the quote fit: the quoting is what is counted
        assert problems(folders=[{"source": "/home", "filters": _rules(count)}]) == []
    found = problems(folders=[{"source": "/home", "filters": _rules(count, quote)}])
    assert [p["path"] for p in found] == [["filters"]]
    assert found[0]["problem"].startswith("the filter rules take ")
    assert found[0]["fix"] == "put long lists of rules in a folder's filter_file"
    disabled = [{"source": "/home", "enabled": False, "filters": _rules(count, quote)}, {"source": "/root"}]
    assert problems(folders=disabled) == []
