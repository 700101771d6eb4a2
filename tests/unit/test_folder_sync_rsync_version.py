"""The target's rsync must be 3.1.3 or newer (folder_sync_check.rsync_version_problem): the first
receiver that compares mtimes to the nanosecond, as the job's ``--modify-window=-1`` asks. An
allowlist: only an answer that names such a version passes."""

from __future__ import annotations

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
