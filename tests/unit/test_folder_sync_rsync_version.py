"""The target's rsync must be 3.1.3 or newer (folder_sync_check.rsync_version_problem): the first
receiver that compares mtimes to the nanosecond, as the job's ``--modify-window=-1`` asks. An
allowlist: only an answer that names such a version passes."""

from __future__ import annotations

import subprocess

import pytest

from tests.unit.role_files import load_role_file

check = load_role_file("folder_sync/files/folder_sync_check.py")


@pytest.mark.parametrize(
    "answer",
    [
        "rsync  version 3.1.3  protocol version 31\nCopyright (C) 1996-2018 by Andrew Tridgell\n",
        "rsync  version 3.2.7  protocol version 31\n",
        "rsync  version v3.4.1  protocol version 32\n",
        "\nrsync  version 3.5.0  protocol version 32\n",
        "rsync  version 4.0.0  protocol version 33\n",
    ],
)
def test_these_versions_pass(answer: str) -> None:
    assert check.rsync_version_problem(answer, "t") == []


@pytest.mark.parametrize(
    "answer",
    [
        "rsync  version 3.1.2  protocol version 31\n",
        "rsync  version 3.0.9  protocol version 30\n",
        "rsync  version 2.6.9  protocol version 29\n",
        # openrsync (macOS) names the rsync it is compatible with on its second line
        "openrsync: protocol version 29\nrsync version 2.6.9 compatible\n",
        "my-rsync wrapper\nrsync  version 3.2.7  protocol version 31\n",
        "rsync  version 3.2  protocol version 31\n",
        "rsync  version three\n",
        "rsync\n",
    ],
)
def test_older_or_unknown_versions_are_one_line_with_the_fix(answer: str) -> None:
    problems = check.rsync_version_problem(answer, "target")
    assert len(problems) == 1
    assert "\n" not in problems[0]
    assert problems[0].startswith("rsync on target is too old or unknown (")
    assert problems[0].endswith(
        "needs rsync 3.1.3 or newer there (its nanosecond mtime comparison): "
        "install a newer rsync on the target"
    )


PLAN = {"host": "target", "name": "target", "remote_rsync": "rsync", "folders": [{"target": "/home/"}]}


def _answer(script: str) -> list[str]:
    """check_target's problems for a target whose ssh session runs ``script`` (stdin: the input)."""
    proc = subprocess.Popen(
        ["sh", "-c", "cat > /dev/null; " + script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    problems: list[str] = check.check_target(PLAN, proc)
    return problems


def test_the_target_check_names_an_old_rsync_beside_the_folders_problems() -> None:
    old = "echo 'rsync  version 3.1.2  protocol version 31'; "
    mark = f"echo {check.MARK}; "
    assert _answer(old + mark + "echo 'target /home/ on target is not a directory'") == [
        check.rsync_version_problem("rsync  version 3.1.2  protocol version 31", "target")[0],
        "target /home/ on target is not a directory",
    ]
    # rsync answers but the checks could not run: both said
    problems = _answer(old + "echo 'sh: 1: python3: not found' >&2; exit 127")
    assert len(problems) == 2
    assert problems[0].startswith("rsync on target is too old or unknown")
    assert problems[1].startswith(
        "the target folders could not be checked over ssh: sh: 1: python3: not found"
    )
    # a good rsync, checks that could not run: that alone
    good = "echo 'rsync  version 3.2.7  protocol version 31'; "
    assert _answer(good + "echo 'python3: not found' >&2; exit 127") == [
        "the target folders could not be checked over ssh: python3: not found: install python3 on the "
        "target (or set ansible_python_interpreter)"
    ]
    assert _answer(good + mark) == []
