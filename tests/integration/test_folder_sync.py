"""The folder_sync job end to end: the real CLI in the sandbox machine ``source`` syncing to ``target``."""

from __future__ import annotations

import signal
import subprocess

import pytest

from tests.integration.folder_sync_helpers import (
    bind_mount,
    build_tree,
    change_tree,
    folder_config,
    itemize_pass,
    last_result,
    login_user,
    manifest,
    rsync_processes,
    sh,
    stand_in_sudo,
    sync_as,
    without_rsync,
)
from tests.integration.helpers import (
    describe,
    log_records,
    run_cli,
    run_sync,
    start_sync,
    tagged,
    wait_until_clean,
    write_config,
)
from tests.sandbox import Machine, Sandbox
from tests.waiting import wait_for

DATA = "/home/user/data"
PER_DIR = "per-directory filter files (.pcswitcher-filter)"  # the wrapper's DEBUG line on them


def _sync(sandbox: Sandbox, *args: str) -> str:
    res = run_sync(sandbox, "--only", "folder_sync", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def _compare(sandbox: Sandbox, path: str) -> None:
    source, target = sandbox["source"], sandbox["target"]
    assert manifest(target, path) == manifest(source, path)
    assert itemize_pass(sandbox, path) == []
    for tool in (["getfacl", "-R", "-p", "."], ["getfattr", "-R", "-h", "-d", "-m", "-", "."]):
        ours, theirs = source.run(tool, cwd=path), target.run(tool, cwd=path)
        assert ours.returncode == theirs.returncode == 0, ours.stderr + theirs.stderr
        assert _blocks(theirs.stdout) == _blocks(ours.stdout), tool


def _blocks(text: str) -> list[str]:
    """getfacl/getfattr output as sorted per-file blocks (directory order differs between machines)."""
    return sorted(block.strip() for block in text.split("\n\n") if block.strip())


def _allocated(machine: Machine, name: str) -> int:
    """The bytes the file ``name`` of DATA has on disk (its blocks, not its size)."""
    blocks, unit = machine.run(["stat", "-c", "%b %B", f"{DATA}/{name}"]).stdout.split()
    return int(blocks) * int(unit)


def _inode(machine: Machine, name: str) -> str:
    return machine.run(["stat", "-c", "%i", f"{DATA}/{name}"]).stdout.strip()


def test_mirror_is_exact_and_second_sync_is_a_noop(sandbox: Sandbox) -> None:
    source, target = sandbox["source"], sandbox["target"]
    build_tree(source, DATA)
    # the target has stale things that must go, and a folder the source never had
    sh(
        target,
        "mkdir -p /home/user/data/stale-dir && echo old > /home/user/data/stale-dir/f"
        " && echo x > /home/user/old",
    )
    write_config(source, folder_config([{"source": "/home"}]))

    _sync(sandbox)
    _compare(sandbox, DATA)
    first = last_result(source)
    assert first["files_transferred"] > 10
    assert first["deleted"] >= 3  # stale-dir, stale-dir/f, /home/user/old

    # the sparse file stays sparse on the target, its two links one inode there too; the dense
    # file is dense
    assert _allocated(target, "sparse.img") < 64 << 20 >> 4
    assert _inode(target, "sparse.img") == _inode(target, "links/sparse-link.img")
    assert _allocated(target, "gains-holes.img") >= 20 << 20

    change_tree(source, DATA)
    _sync(sandbox)
    _compare(sandbox, DATA)
    # the file that gained an 18 MiB hole has it on the target too
    assert _allocated(source, "gains-holes.img") < 3 << 20
    assert _allocated(target, "gains-holes.img") < 3 << 20
    second = last_result(source)
    assert second["deleted"] >= 4
    # every deletion was logged at DEBUG
    deletions = [r for r in log_records(source) if ": deleted " in str(r.get("message", ""))]
    assert deletions
    assert all(r["level"] == "DEBUG" for r in deletions)
    assert any("random.bin" in str(r["message"]) for r in deletions)

    _sync(sandbox)
    third = last_result(source)
    assert third == {"files_transferred": 0, "bytes": 0, "deleted": 0, "dry_run": False}
    records = log_records(source)
    final = records[-1]["jobs"][0]
    assert final["status"] == "succeeded"
    assert final["changed"] == 0, final
    # no per-directory filter file on either machine: rsync was not told to look for one
    said = [str(r.get("message")) for r in records]
    assert f"/home/: {PER_DIR} left out: there are none on either machine" in said


def _never_sync_tree(source: Machine, target: Machine) -> None:
    """Secrets, pc-switcher's state, caches and filtered files on the source; the target's own key
    and state, and a file under an excluded directory, on the target."""
    sh(
        source,
        """
        set -e
        mkdir -p /home/user/.ssh /home/user/.local/state/pc-switcher/logs /home/user/.config/pc-switcher
        mkdir -p /home/user/.cache/pip/http /home/user/.cache/thumbs /home/user/proj/build /home/user/proj/src
        mkdir -p /home/user/.cache/mesa_shader_cache /home/user/.gnupg/private-keys-v1.d /home/user/keep
        for k in id_ed25519 id_rsa id_ecdsa_sk id_b id_pub work_ed25519 deploy.pem; do
          echo SECRET > /home/user/.ssh/$k
        done
        for k in id_ed25519.pub id_rsa.pub known_hosts config authorized_keys; do
          echo public > /home/user/.ssh/$k
        done
        echo state > /home/user/.local/state/pc-switcher/sync.lock
        echo log > /home/user/.local/state/pc-switcher/logs/x.jsonl
        echo cfg > /home/user/.config/pc-switcher/config.yml
        echo pip > /home/user/.cache/pip/http/wheel
        echo thumb > /home/user/.cache/thumbs/t.png
        echo shader > /home/user/.cache/mesa_shader_cache/index
        echo gpg > /home/user/.gnupg/private-keys-v1.d/K.key
        echo pubring > /home/user/.gnupg/pubring.kbx
        echo built > /home/user/proj/build/out.o
        echo code > /home/user/proj/src/main.c
        echo tmp > /home/user/proj/src/scratch.tmp
        echo '- build/' > /home/user/proj/.pcswitcher-filter
        echo 'keep me' > /home/user/keep/file
        echo 'drop me' > /home/user/keep/file.bak
        echo '- *.bak' > /root/folder-filter
        """,
    )
    # the target's own key and pc-switcher state: never overwritten, never deleted
    sh(
        target,
        """
        set -e
        mkdir -p /home/user/.ssh /home/user/.local/state/pc-switcher /home/user/.cache/thumbs/old
        echo TARGET-KEY > /home/user/.ssh/id_ed25519
        echo TARGET-STATE > /home/user/.local/state/pc-switcher/sync.lock
        echo excluded-on-target > /home/user/.cache/thumbs/old/x
        """,
    )


def _assert_fixed_rules_held(target: Machine) -> None:
    """Private keys, pc-switcher's state and config, gpg's private keys: never synced, the target's own
    never overwritten or deleted; the default never_sync (a shader cache) left out."""

    def exists(path: str) -> bool:
        return target.path(path).exists()

    for key in ("id_rsa", "id_ecdsa_sk", "id_b", "id_pub", "work_ed25519", "deploy.pem"):
        assert not exists(f"/home/user/.ssh/{key}"), key
    assert target.path("/home/user/.ssh/id_ed25519").read_text() == "TARGET-KEY\n"
    for public in ("id_ed25519.pub", "id_rsa.pub", "known_hosts", "config", "authorized_keys"):
        assert exists(f"/home/user/.ssh/{public}"), public
    assert target.path("/home/user/.local/state/pc-switcher/sync.lock").read_text() == "TARGET-STATE\n"
    assert not exists("/home/user/.local/state/pc-switcher/logs")
    assert not exists("/home/user/.config/pc-switcher/config.yml")
    assert not exists("/home/user/.gnupg/private-keys-v1.d")
    assert exists("/home/user/.gnupg/pubring.kbx")
    assert not exists("/home/user/.cache/mesa_shader_cache")  # user-adjustable default never_sync


def _assert_filters_held(target: Machine) -> None:
    """The user's rules in their order: a re-included child of an excluded dir, an excluded dir kept
    on the target (protected from --delete), the per-directory filter, filter_file and filters."""

    def exists(path: str) -> bool:
        return target.path(path).exists()

    # re-include of a child of an excluded dir
    assert exists("/home/user/.cache/pip/http/wheel")
    assert not exists("/home/user/.cache/thumbs/t.png")
    assert exists("/home/user/.cache/thumbs/old/x")  # excluded = protected from --delete
    # per-directory filter file, folder filter_file and folder filters
    assert not exists("/home/user/proj/build")
    assert exists("/home/user/proj/src/main.c")
    assert exists("/home/user/proj/.pcswitcher-filter")
    assert not exists("/home/user/proj/src/scratch.tmp")
    assert exists("/home/user/keep/file")
    assert not exists("/home/user/keep/file.bak")


def test_never_sync_items_and_filter_precedence(sandbox: Sandbox) -> None:
    source, target = sandbox["source"], sandbox["target"]
    _never_sync_tree(source, target)
    config = folder_config(
        [{"source": "/home", "filter_file": "/root/folder-filter", "filters": ["- *.tmp"]}],
        # a user who tries to include everything secret: the fixed rules come first and win
        filters=[
            "+ .ssh/***",
            "+ .local/state/pc-switcher/***",
            "+ .config/pc-switcher/***",
            "+ .gnupg/***",
            "+ .cache/pip/***",
            "- .cache/*",
        ],
    )
    write_config(source, config)
    _sync(sandbox)

    _assert_fixed_rules_held(target)
    _assert_filters_held(target)
    said = [str(r.get("message")) for r in log_records(source)]
    assert f"/home/: {PER_DIR} read: there are some on the source" in said

    # never_sync is adjustable, the fixed rules are not: with an empty never_sync the keys stay out
    config["folder_sync"]["never_sync"] = []
    write_config(source, config)
    _sync(sandbox)
    assert target.path("/home/user/.cache/pip/http/wheel").exists()
    assert not target.path("/home/user/.ssh/id_rsa").exists()
    assert target.path("/home/user/.ssh/id_ed25519").read_text() == "TARGET-KEY\n"


def test_dry_run_changes_nothing_and_lists_the_changes(sandbox: Sandbox) -> None:
    source, target = sandbox["source"], sandbox["target"]
    build_tree(source, DATA)
    sh(target, "mkdir -p /home/user && echo old > /home/user/would-go")
    write_config(source, folder_config([{"source": "/home"}]))
    before = manifest(target, "/home")
    out = _sync(sandbox, "--dry-run")
    assert manifest(target, "/home") == before
    # a dry-run keeps no log: what it would do is in the output (the "Dry run:" summary, INFO)
    summary = next(line for line in out.splitlines() if "Dry run:" in line)
    assert "folder_sync would transfer " in summary
    assert "and would delete 1 on target (1 folders)." in summary
    assert "Would transfer: " in summary
    assert "plain.txt" in summary
    assert "Would delete: user/would-go" in summary
    assert not source.path("/root/.local/state/pc-switcher/logs").exists()


def test_validate_names_a_missing_source_folder_and_one_that_is_a_file(sandbox: Sandbox) -> None:
    source, target = sandbox["source"], sandbox["target"]
    source.path("/root/a-file").write_text("not a folder\n")
    folders = [{"source": "/home"}, {"source": "/srv/nothing-here"}, {"source": "/root/a-file"}]
    write_config(source, folder_config(folders))
    before = manifest(target, "/home")
    res = run_sync(sandbox, "--only", "folder_sync")
    assert res.returncode == 1
    out = res.stdout + res.stderr
    assert "/srv/nothing-here does not exist" in out, out
    assert "source folder /root/a-file on the source is not a directory" in out, out
    assert "/root/a-file does not exist" not in out
    assert manifest(target, "/home") == before
    assert not target.path("/root/a-file").exists()


def test_an_option_problem_is_refused_before_connecting(sandbox: Sandbox) -> None:
    source, target = sandbox["source"], sandbox["target"]
    # a relative path is a problem of the options: the job's option checks refuse it with the config
    # (exit 2, file:line:col), before anything connects; the other folders are not looked at
    write_config(source, folder_config([{"source": "home/user"}, {"source": "/srv/nothing-here"}]))
    before = manifest(target, "/home")
    res = run_sync(sandbox, "--only", "folder_sync")
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert "folder_sync.folders[0].source: the source folder 'home/user' must be an absolute path" in out
    assert "/srv/nothing-here" not in out
    assert manifest(target, "/home") == before


def _failure(res: subprocess.CompletedProcess[str]) -> str:
    """The validation failure's message (the problems joined by '; ')."""
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    task = "Check the options, the source, the target and its free space"
    return next(line for line in out.splitlines() if f"failed: {task}: " in line)


def test_validate_names_each_problem_of_the_target(sandbox: Sandbox) -> None:
    source, target = sandbox["source"], sandbox["target"]
    sh(source, "mkdir -p /home/user && echo one > /home/user/f")
    sh(target, "mkdir -p /home/data /home/pcs-user /root/data && echo file > /home/afile")
    targets = ["/home/nope/x", "/home/afile", "/home/data", "/home/new", "/home/pcs-user/new", "/root/data/x"]
    write_config(source, folder_config([{"source": "/home/user", "target": t} for t in targets]))
    no_parent = "the parent /home/nope of the target folder /home/nope/x does not exist on target: create it"
    not_a_dir = "target /home/afile on target is not a directory: move it away or set another target"

    # as root, with rsync missing on the target: the folders that cannot be made, and rsync
    with without_rsync(target):
        failure = _failure(run_sync(sandbox, "--only", "folder_sync"))
    assert no_parent in failure
    assert not_a_dir in failure
    assert "rsync is missing on the target target: install rsync there" in failure
    assert "does not answer" not in failure  # rsync missing is said once
    assert failure.count("; ") == 2, failure  # nothing about the folders root can write

    with login_user(target) as user:
        # a login user that is not root, no become: rsync runs as that user, who must be able to write
        failure = _failure(sync_as(sandbox, user, "--only", "folder_sync"))
        fix = "run as root or set ansible_become"
        assert f"target folder /home/data on target is not writable by {user}: {fix}" in failure
        assert (
            f"the parent /home of the target folder /home/new on target is not writable by {user}: {fix}"
            in failure
        )
        assert "/home/pcs-user/new" not in failure  # the user's own home: writable
        assert no_parent in failure
        assert not_a_dir in failure
        # /root is not searchable by the user: /root/data cannot be looked at, and is refused
        unseen = "target folder /root/data/x on target: /root/data cannot be checked (Permission denied)"
        assert unseen in failure
        assert failure.count("; ") == 4, failure

        # with become, rsync runs as root through sudo -n, and so do the checks: writability is not
        # checked. This stand-in sudo does not make them root, so /root/data still cannot be looked
        # at (the real sudo sees into it: test_become.py)
        with stand_in_sudo(target):
            failure = _failure(sync_as(sandbox, user, "--only", "folder_sync", become=True))
        assert no_parent in failure
        assert not_a_dir in failure
        assert "not writable" not in failure
        assert unseen in failure
        assert failure.count("; ") == 2, failure
    # validation failed every time: nothing was synced
    made = [
        t
        for t in ("/home/nope", "/home/new", "/home/pcs-user/new", "/root/data/x")
        if target.path(t).exists()
    ]
    assert made == []
    assert not list(target.path("/home/data").iterdir())


def test_interrupted_sync_keeps_good_files_and_resync_converges(sandbox: Sandbox) -> None:
    """Never a half-written file in place of a good one: the partly received copy is a temporary
    file beside it, which the re-sync deletes (it is not on the source) as it converges."""
    source, target = sandbox["source"], sandbox["target"]
    sh(
        source,
        "mkdir -p /home/user && head -c 300000000 /dev/urandom > /home/user/big && echo small > /home/user/s",
    )
    sh(target, "mkdir -p /home/user && head -c 1000000 /dev/urandom > /home/user/big")
    good = target.run(["sha256sum", "/home/user/big"]).stdout.split()[0]
    write_config(source, folder_config([{"source": "/home"}], rsync_args=["--bwlimit=30m"]))
    sync = start_sync(sandbox, "--only", "folder_sync")

    def transferring() -> bool:
        return bool(rsync_processes(target)) and bool(rsync_processes(source))

    assert wait_for(transferring, 60), sync.wait(5)

    def well_into_the_big_file() -> bool:  # its new copy (a temp file, not "big") has over 20 MB
        found = sh(target, "find /home/user -type f -size +20M ! -path /home/user/big")
        return bool(found.stdout.strip())

    assert wait_for(well_into_the_big_file, 60), sync.wait(5)
    assert target.run(["pgrep", "-x", "rsync"]).returncode == 0
    sync.signal(signal.SIGINT)
    rc, out = sync.wait(60)
    assert rc == 130, out
    for machine in (source, target):
        left = wait_until_clean(machine, 10)
        assert left == [], f"{machine.name}: {left}"
        assert rsync_processes(machine) == []
        assert describe(tagged(machine)) == []
    # the old file is intact: never a half-written file in its place; and the killed receiver's
    # temporary file is gone (the target's sweep removed it), not left for the next sync to delete
    assert target.run(["sha256sum", "/home/user/big"]).stdout.split()[0] == good
    assert sh(target, "find /home/user -name '.big.*'").stdout == ""
    said = [str(r.get("message")) for r in log_records(source)]
    removed = [m.split()[-3].rsplit(".", 1)[0] for m in said if "removed the killed rsync's temporary" in m]
    # who removed it depends on timing: the receiver's own signal handler when it runs within the
    # sweep's 0.3 s grace (rsync deletes its temporary file on SIGTERM), else the sweep, which says so
    assert removed in ([], ["/home/user/.big"]), said

    write_config(source, folder_config([{"source": "/home"}]))
    _sync(sandbox)
    _compare(sandbox, "/home/user")
    assert sh(target, "find /home/user -name '.big.*' -o -name .pcswitcher-partial").stdout == ""


@pytest.mark.parametrize("folders", [[{"source": "/home/user", "target": "/home/elsewhere"}]])
def test_target_path_differs_from_source(sandbox: Sandbox, folders: list[dict[str, str]]) -> None:
    source, target = sandbox["source"], sandbox["target"]
    sh(source, "mkdir -p /home/user/a && echo one > '/home/user/a/file one'")
    write_config(source, folder_config(folders))
    _sync(sandbox)
    assert target.path("/home/elsewhere/a/file one").read_text() == "one\n"
    assert not target.path("/home/user").exists()


def test_a_filter_file_on_the_target_alone_protects_there(sandbox: Sandbox) -> None:
    """The per-directory filter files are read on both machines (rsync's dir-merge): one on the
    target alone protects its paths from deletion; the wrapper found it through the sync's ssh."""
    source, target = sandbox["source"], sandbox["target"]
    sh(source, "mkdir -p /home/user/proj && echo code > /home/user/proj/main.c")
    sh(
        target,
        "mkdir -p /home/user/proj && echo mine > /home/user/proj/local.db && echo old > /home/user/proj/stale"
        " && printf -- '- local.db\\n- .pcswitcher-filter\\n' > /home/user/proj/.pcswitcher-filter",
    )
    write_config(source, folder_config([{"source": "/home/user"}]))
    _sync(sandbox)
    assert target.path("/home/user/proj/main.c").read_text() == "code\n"
    assert target.path("/home/user/proj/local.db").read_text() == "mine\n"
    assert not target.path("/home/user/proj/stale").exists()
    said = [str(r.get("message")) for r in log_records(source)]
    assert f"/home/user/: {PER_DIR} read: there are some on the target" in said


def test_mtimes_are_compared_to_the_nanosecond(sandbox: Sandbox) -> None:
    """A file rewritten at the same size within the second of its last sync is synced again, and a
    directory's mtime is exact (rsync's default compares whole seconds: both were left as they were;
    the directory case failed test_rules_up_to_the_budget... in CI). A target rsync older than 3.1.3,
    which cannot compare nanoseconds, is refused by validation with one line."""
    source, target = sandbox["source"], sandbox["target"]
    second = 1_790_000_000
    sh(source, "mkdir -p /home/user && echo one > /home/user/f && touch -d @$1.1 /home/user/f", str(second))
    write_config(source, folder_config([{"source": "/home"}]))
    _sync(sandbox)
    # the same size, the same second: only the nanoseconds tell the change
    sh(source, "echo two > /home/user/f && touch -d @$1.6 /home/user/f", str(second))
    sh(source, "touch -d @$1.2 /home/user", str(second))
    sh(target, "touch -d @$1.9 /home/user", str(second))
    _sync(sandbox)
    assert target.path("/home/user/f").read_text() == "two\n"
    _compare(sandbox, "/home/user")
    mtimes = [m.path("/home/user").stat().st_mtime_ns for m in (source, target)]
    assert mtimes == [second * 10**9 + 200_000_000] * 2

    sh(target, "printf '#!/bin/sh\\necho \"rsync  version 3.1.2  protocol version 31\"\\n' > /root/old-rsync")
    sh(target, "chmod 0755 /root/old-rsync")
    with bind_mount(target, "/root/old-rsync", "/usr/bin/rsync"):
        failure = _failure(run_sync(sandbox, "--only", "folder_sync"))
    assert failure.endswith(
        "rsync on target is too old or unknown ('rsync  version 3.1.2  protocol version 31'): the sync needs "
        "rsync 3.1.3 or newer there (its nanosecond mtime comparison): install a newer rsync on the target"
    ), failure


def _long_rules(count: int) -> list[str]:
    # shell quotes in every rule: the shell quoting of the command line makes each one 5 characters
    return [f"- /nowhere/it's-{i:06d}-a-longer-name-of-a-file-to-leave-out" for i in range(count)]


def test_rules_up_to_the_budget_sync_and_more_are_one_line(sandbox: Sandbox) -> None:
    """The validate phase carries every folder's rules twice on one `sh -c` string (128 KiB at most):
    rules just within folder_sync's budget for them check and sync; more are refused by the sync and
    by `config check` with one line, before anything runs on the target."""
    source, target = sandbox["source"], sandbox["target"]
    sh(source, "mkdir -p /home/user && echo kept > /home/user/a")
    within = folder_config([{"source": "/home", "filters": _long_rules(474)}], filters=_long_rules(10))
    write_config(source, within)
    _sync(sandbox)
    _compare(sandbox, "/home/user")
    sh(source, "echo more > /home/user/b")
    write_config(source, folder_config([{"source": "/home", "filters": _long_rules(600)}]))
    for res in (run_cli(sandbox, "config", "check"), run_sync(sandbox, "--only", "folder_sync")):
        out = res.stdout + res.stderr
        assert res.returncode == 2, out
        assert "folder_sync.filters: the filter rules take " in out, out
        assert "Traceback" not in out
    assert not target.path("/home/user/b").exists()
