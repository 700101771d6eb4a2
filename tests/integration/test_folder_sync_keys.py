"""folder_sync on sandbox machines: private keys in .ssh directories are recognised by their content
and never reach the target, whatever their name and the user's filters; the dry-run and the log name
each one; rsync's own error reaches the terminal and the log."""

from __future__ import annotations

import zlib

from tests.integration.folder_sync_helpers import folder_config, manifest, sh
from tests.integration.helpers import log_records, run_sync, write_config
from tests.sandbox import Machine, Sandbox

# Run in the source machine (bash): real keys of every kind, under names no name rule knows, in
# .ssh directories at any depth; and what must still sync.
KEYS_SCRIPT = r"""
set -euo pipefail
a=/home/alice
mkdir -p $a/.ssh/keys $a/projects/x/.ssh /root/.ssh $a/docs
k() { ssh-keygen -q -N '' -C alice@source "$@"; }
k -t ed25519 -f $a/.ssh/work_laptop                 # OpenSSH, with work_laptop.pub beside it
k -t rsa -b 2048 -m PEM -f $a/.ssh/github           # "RSA PRIVATE KEY"
rm $a/.ssh/github.pub                               # ... without a .pub
k -t ecdsa -m PEM -f $a/.ssh/ec_thing && rm $a/.ssh/ec_thing.pub          # "EC PRIVATE KEY"
k -t ed25519 -f $a/projects/x/.ssh/deploy && rm $a/projects/x/.ssh/deploy.pub  # nested .ssh
k -t rsa -b 2048 -m PKCS8 -f /root/.ssh/backup && rm /root/.ssh/backup.pub     # "PRIVATE KEY"
printf 'PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: x\nPublic-Lines: 2\n' \
  > $a/.ssh/keys/putty.txt                          # a renamed .ppk
cp $a/.ssh/work_laptop $'/home/alice/.ssh/odd\nname $(touch pwned) *'
printf 'Host work\n  IdentityFile ~/.ssh/work_laptop\n' > $a/.ssh/config
printf 'notes: the PRIVATE KEY lives in work_laptop\n' > $a/.ssh/notes.txt
cp $a/.ssh/work_laptop.pub $a/.ssh/authorized_keys
printf '|1|x= ssh-ed25519 AAAA\n' > $a/.ssh/known_hosts
ln -s github $a/.ssh/link-to-github
printf 'doc\n' > $a/docs/readme.txt
"""
KEYS = [
    "/home/alice/.ssh/work_laptop",
    "/home/alice/.ssh/github",
    "/home/alice/.ssh/ec_thing",
    "/home/alice/projects/x/.ssh/deploy",
    "/home/alice/.ssh/keys/putty.txt",
    "/home/alice/.ssh/odd\nname $(touch pwned) *",
    "/root/.ssh/backup",
]
SYNCED = [
    "/home/alice/.ssh/work_laptop.pub",
    "/home/alice/.ssh/config",
    "/home/alice/.ssh/notes.txt",
    "/home/alice/.ssh/authorized_keys",
    "/home/alice/.ssh/known_hosts",
    "/home/alice/docs/readme.txt",
]


KEY_SCAN = "/root/.local/state/pc-switcher/key-scan"  # the walk cache of the key scan (source)


def _cache_name(folder: str, kind: str = "cache") -> str:
    return f"{zlib.crc32(folder.encode()):08x}.{kind}"


def _shown(path: str) -> str:
    return path.replace("\n", "\\#012")


def _assert_keys_kept_off(source: Machine, target: Machine) -> None:
    """After the first sync: no source key on the target (the target's own kept), the rest synced,
    no name run by a shell, the log naming each key (never its content), the walk cache private."""
    for key in KEYS:
        if key != "/home/alice/.ssh/github":
            assert not target.path(key).exists(), key
    assert target.path("/home/alice/.ssh/github").read_text() == "TARGET-KEY\n"
    for path in SYNCED:
        assert target.path(path).read_bytes() == source.path(path).read_bytes(), path
    assert target.run(["readlink", "/home/alice/.ssh/link-to-github"]).stdout.strip() == "github"
    for machine in (source, target):  # no shell ever ran the name: no "pwned" where one would start
        for where in ("/", "/root", "/home/alice/.ssh", "/home/alice"):
            assert not machine.path(f"{where}/pwned").exists()

    # the log names each key (path only, never its content)
    messages = [str(record.get("message", "")) for record in log_records(source)]
    named = [
        m.split("private key never synced: ", 1)[1] for m in messages if "private key never synced: " in m
    ]
    assert sorted(named) == sorted(_shown(key) for key in KEYS)
    assert not any("PRIVATE KEY-----" in m or "PuTTY-User-Key" in m for m in messages)

    # the walk cache and the record of the folder's syncs: private files per folder in the source's
    # state directory, never synced
    caches = sorted(p.name for p in source.path(KEY_SCAN).iterdir())
    assert caches == sorted(_cache_name(f, kind) for f in ("/home", "/root") for kind in ("cache", "synced"))
    assert source.path(KEY_SCAN).stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in source.path(KEY_SCAN).iterdir())
    assert not target.path("/root/.local/state/pc-switcher/key-scan").exists()


def test_private_keys_never_reach_the_target_whatever_their_name(sandbox: Sandbox) -> None:
    source, target = sandbox["source"], sandbox["target"]
    sh(source, KEYS_SCRIPT)
    # a key of the target's own at the path of a source key: neither overwritten nor deleted
    sh(target, "mkdir -p /home/alice/.ssh && echo TARGET-KEY > /home/alice/.ssh/github")
    config = folder_config(
        [{"source": "/home", "filters": ["+ /alice/.ssh/github", "+ .ssh/***"]}, {"source": "/root"}],
        filters=["+ .ssh/*", "+ *"],  # a user who includes everything in .ssh: the key rules come first
    )
    write_config(source, config)

    # the dry-run names each key and changes nothing (nor writes the walk cache)
    before = manifest(target, "/home")
    res = run_sync(sandbox, "--only", "folder_sync", "--dry-run")
    assert res.returncode == 0, res.stdout + res.stderr
    assert manifest(target, "/home") == before
    assert not source.path(KEY_SCAN).exists()
    summary = next(line for line in res.stdout.splitlines() if "Dry run:" in line)
    assert f"Would not sync {len(KEYS)} private keys in .ssh: " in summary
    for key in KEYS:
        assert _shown(key) in summary, key

    res = run_sync(sandbox, "--only", "folder_sync")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"Not synced {len(KEYS)} private keys in .ssh: " in res.stdout
    _assert_keys_kept_off(source, target)

    # a second sync, the cache in use: a key in a new .ssh deep in a directory already cached is
    # found; the keys stay off the target, the target's own key stays
    sh(source, "mkdir -p /home/alice/docs/new/.ssh && ssh-keygen -q -N '' -f /home/alice/docs/new/.ssh/k")
    res = run_sync(sandbox, "--only", "folder_sync")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"Not synced {len(KEYS) + 1} private keys in .ssh: " in res.stdout
    assert not target.path("/home/alice/docs/new/.ssh/k").exists()
    assert target.path("/home/alice/docs/new/.ssh/k.pub").exists()
    assert target.path("/home/alice/.ssh/github").read_text() == "TARGET-KEY\n"
    assert not target.path("/home/alice/.ssh/work_laptop").exists()
    scans = [str(r["message"]) for r in log_records(source) if "key scan: " in str(r.get("message", ""))]
    listed, _, total = next(m for m in scans if m.startswith("/home/")).split("key scan: ")[1].split()[:3]
    assert 0 < int(listed) < int(total), scans  # docs/new and its parent listed, the rest from the cache


def test_rsyncs_own_error_reaches_the_terminal_and_the_log(sandbox: Sandbox) -> None:
    """A directory on the target that rsync (as root) cannot write into: an immutable one. The sync
    fails with rsync's exit code, its meaning and rsync's own error line, on the terminal and in the
    log; the target's data is intact."""
    source, target = sandbox["source"], sandbox["target"]
    sh(
        source,
        "mkdir -p /home/bob/locked && echo new > /home/bob/locked/new.txt && echo ok > /home/bob/ok.txt",
    )
    sh(
        target,
        "mkdir -p /home/bob/locked && echo old > /home/bob/locked/old.txt && chattr +i /home/bob/locked",
    )
    try:
        write_config(source, folder_config([{"source": "/home"}]))
        res = run_sync(sandbox, "--only", "folder_sync")
        assert res.returncode == 1, res.stdout + res.stderr
        output = res.stdout + res.stderr
        reason = "rsync exit 23: partial transfer due to error: rsync: [receiver] mkstemp "
        assert reason in output
        assert "/home/bob/locked/.new.txt." in output
        assert "failed: Operation not permitted (1)" in output
        assert "One or more items failed" not in output
        records = log_records(source)
        warnings = [str(r.get("message")) for r in records if r.get("level") == "WARNING"]
        assert any("rsync: [receiver] mkstemp" in m and "Operation not permitted (1)" in m for m in warnings)
        assert any(
            reason in str(r.get("message")) for r in records if r.get("level") in ("ERROR", "CRITICAL")
        )
        assert target.path("/home/bob/locked/old.txt").read_text() == "old\n"
    finally:
        sh(target, "chattr -i /home/bob/locked")
