"""folder_sync's private-key detector (roles/folder_sync/files/folder_sync_rsync.py): every regular
file under a ``.ssh`` directory whose content is a private key is excluded, whatever its name, by a
rule that rsync itself (the real one) applies before any user rule; everything else there syncs.
rsync's own error reaches the wrapper's result, its stderr and the log."""

from __future__ import annotations

import json
import marshal
import os
import random
import stat
import subprocess
import sys
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.unit.role_files import load_role_file

WRAPPER = Path(__file__).parents[2] / "roles" / "folder_sync" / "files" / "folder_sync_rsync.py"


def _load() -> ModuleType:
    return load_role_file("folder_sync/files/folder_sync_rsync.py")


W = _load()


def _run(argv: list[str], cwd: Path | None = None) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60, cwd=cwd)
    assert res.returncode == 0, f"{argv}: {res.stderr}"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Real private keys of every kind (ssh-keygen, openssl) and real non-keys, by a short name."""
    d = tmp_path_factory.mktemp("keys")
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@host", "-f", str(d / "openssh")])
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(d / "openssh_enc")])
    _run(["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-m", "PEM", "-N", "", "-f", str(d / "rsa_pem")])
    _run(["ssh-keygen", "-q", "-t", "ecdsa", "-m", "PEM", "-N", "", "-f", str(d / "ec_pem")])
    _run(["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-m", "PKCS8", "-N", "", "-f", str(d / "pkcs8")])
    _run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(d / "ed_pkcs8.pem")])
    _run(["openssl", "pkcs8", "-topk8", "-in", str(d / "ed_pkcs8.pem"), "-passout", "pass:x",
          "-out", str(d / "enc_pkcs8.pem")])  # fmt: skip
    _run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", str(d / "ed_pkcs8.pem"), "-outform", "DER",
          "-out", str(d / "pkcs8.der")])  # fmt: skip
    _run(["openssl", "pkcs8", "-topk8", "-in", str(d / "ed_pkcs8.pem"), "-passout", "pass:x",
          "-outform", "DER", "-out", str(d / "enc_pkcs8.der")])  # fmt: skip
    _run(["openssl", "rsa", "-in", str(d / "rsa_pem"), "-outform", "DER", "-out", str(d / "rsa.der")])
    _run(["openssl", "ec", "-in", str(d / "ec_pem"), "-outform", "DER", "-out", str(d / "ec.der")])
    _run(["openssl", "pkey", "-in", str(d / "ed_pkcs8.pem"), "-pubout", "-out", str(d / "pub.pem")])
    _run(["openssl", "pkey", "-in", str(d / "ed_pkcs8.pem"), "-pubout", "-outform", "DER",
          "-out", str(d / "pub.der")])  # fmt: skip
    _run(["openssl", "req", "-x509", "-key", str(d / "ed_pkcs8.pem"), "-subj", "/CN=x", "-days", "1",
          "-out", str(d / "cert.pem")])  # fmt: skip
    _run(["openssl", "x509", "-in", str(d / "cert.pem"), "-outform", "DER", "-out", str(d / "cert.der")])
    found = {path.name: path.read_bytes() for path in d.iterdir()}
    found["ppk2"] = b"PuTTY-User-Key-File-2: ssh-rsa\r\nEncryption: none\r\nComment: x\r\nPublic-Lines: 1\r\n"
    found["ppk3"] = b"PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: aes256-cbc\nKey-Derivation: Argon2id\n"
    found["bag_attributes"] = (
        b"Bag Attributes\n    localKeyID: 01 02\nsubject=/CN=x\n" + found["enc_pkcs8.pem"]
    )
    found["crlf"] = found["rsa_pem"].replace(b"\n", b"\r\n")
    found["pgp"] = (
        b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF...\n-----END PGP PRIVATE KEY BLOCK-----\n"
    )
    found["ssh2"] = b"---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\nComment: x\nP2/56wAAA...\n"
    found["known_hosts"] = b"|1|abc=|def= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI...\n"
    found["config"] = b"Host work\n  IdentityFile ~/.ssh/work_laptop\n  # the PRIVATE KEY is in work_laptop\n"
    found["authorized_keys"] = found["openssh.pub"]
    found["empty"] = b""
    found["random"] = os.urandom(4096)
    return found


PRIVATE = [
    "openssh", "openssh_enc", "rsa_pem", "ec_pem", "pkcs8", "ed_pkcs8.pem", "enc_pkcs8.pem", "pkcs8.der",
    "enc_pkcs8.der", "rsa.der", "ec.der", "ppk2", "ppk3", "bag_attributes", "crlf", "pgp", "ssh2",
]  # fmt: skip
NOT_PRIVATE = [
    "openssh.pub", "rsa_pem.pub", "pub.pem", "pub.der", "cert.pem", "cert.der", "known_hosts", "config",
    "authorized_keys", "empty", "random",
]  # fmt: skip


@pytest.mark.parametrize("name", PRIVATE)
def test_private_keys_are_recognised(keys: dict[str, bytes], name: str) -> None:
    data = keys[name]
    assert W.is_private_key(data[: W.KEY_HEAD], len(data))


@pytest.mark.parametrize("name", NOT_PRIVATE)
def test_public_keys_and_other_files_are_not(keys: dict[str, bytes], name: str) -> None:
    data = keys[name]
    assert not W.is_private_key(data[: W.KEY_HEAD], len(data))


# Names a key may have: odd characters, rsync wildcard characters, what a shell would expand.
ODD_NAMES = [
    "work_laptop",
    "github",
    "with space",
    "new\nline",
    "tab\there",
    "trailing space ",
    "-leading-dash",
    "$(touch pwned)",
    "quote'\"s",
    "st*r",
    "q?mark",
    "[bracket]",
    "back\\slash",
    "back\\slash*star",
    "ünïcødé",
    "**",
]


def _tree(root: Path, keys: dict[str, bytes]) -> tuple[set[str], set[str]]:
    """A home with keys under odd names in .ssh directories (nested ones too) and non-key files; the
    relative paths of the keys and of the files that must sync."""
    private: set[str] = set()
    public: set[str] = set()

    def put(rel: str, data: bytes, is_key: bool) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        (private if is_key else public).add(rel)

    for i, name in enumerate(ODD_NAMES):
        put(f"alice/.ssh/{name}", keys[PRIVATE[i % len(PRIVATE)]], True)
    put("alice/.ssh/work_laptop.pub", keys["openssh.pub"], False)
    for name in ("known_hosts", "config", "authorized_keys", "empty", "random"):
        put(f"alice/.ssh/{name}", keys[name], False)
    put("alice/.ssh/keys/deeper/renamed.txt", keys["ppk3"], True)
    put("alice/projects/x/.ssh/deploy", keys["ec_pem"], True)
    put("alice/projects/x/.ssh/cert.der", keys["cert.der"], False)
    put(".ssh/root_key", keys["rsa.der"], True)
    put("alice/notes/.sshx/not-ssh", keys["openssh"], False)  # not a .ssh directory: out of scope
    os.mkfifo(root / "alice/.ssh/agent.fifo")  # never opened (it would block a read)
    (root / "alice/.ssh/link-to-key").symlink_to("github")  # sent as a link, not its content
    (root / "alice/ssh-link").symlink_to(".ssh")  # not followed, as rsync -a does not
    return private, public


def test_find_private_keys_finds_each_key_and_nothing_else(tmp_path: Path, keys: dict[str, bytes]) -> None:
    private, _ = _tree(tmp_path / "home", keys)
    found, unreadable = W.find_private_keys(str(tmp_path / "home") + "/")
    assert set(found) == private
    assert unreadable == []
    # a transfer root inside a .ssh directory: every file below it counts
    inside, _ = W.find_private_keys(str(tmp_path / "home/alice/.ssh"))
    assert set(inside) == {p.removeprefix("alice/.ssh/") for p in private if p.startswith("alice/.ssh/")}


def _wrapper(argv: list[str], progress: Path) -> tuple[int, dict[str, Any], str, list[dict[str, Any]]]:
    state = progress.parent / "state"
    res = subprocess.run(
        [sys.executable, str(WRAPPER), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        # the walk cache in the test's own state directory, never the home's
        env={"PCSWITCHER_PROGRESS": str(progress), "PATH": "/usr/bin:/bin", "XDG_STATE_HOME": str(state)},
        check=False,
    )
    lines = [json.loads(line) for line in progress.read_text().splitlines()] if progress.exists() else []
    return res.returncode, json.loads(res.stdout), res.stderr, lines


def test_real_rsync_never_sends_a_key_whatever_the_user_filters(
    tmp_path: Path, keys: dict[str, bytes]
) -> None:
    """The wrapper's rules come before user rules that include the keys; rsync (the real one)
    excludes each key, under any name, sends every other file, and leaves the target's own key at
    the same path as it is (an exclude protects it from --delete and from being overwritten)."""
    src, dst = tmp_path / "home", tmp_path / "target"
    private, public = _tree(src, keys)
    (dst / "alice/.ssh").mkdir(parents=True)
    (dst / "alice/.ssh/github").write_bytes(b"TARGET'S OWN KEY\n")
    user_rules = ["--filter=+ .ssh/github", "--filter=+ /alice/.ssh/***", "--filter=+ *", "--include=*"]
    argv = ["--label", f"{src}/", "--scan-keys", f"{src}/", "--", "rsync", "-a", "--delete", *user_rules]
    rc, result, _, lines = _wrapper([*argv, f"{src}/", f"{dst}/"], tmp_path / "p.jsonl")
    assert rc == 0
    for rel in private - {"alice/.ssh/github"}:
        assert not os.path.lexists(dst / rel), rel
    assert (dst / "alice/.ssh/github").read_bytes() == b"TARGET'S OWN KEY\n"
    for rel in public:
        assert (dst / rel).read_bytes() == (src / rel).read_bytes(), rel
    assert os.readlink(dst / "alice/.ssh/link-to-key") == "github"
    assert (dst / "alice/.ssh/agent.fifo").is_fifo()
    # each key named (path only, control characters shown as rsync does), never its content
    named = sorted(W.shown(f"{src}/{rel}") for rel in private)
    assert sorted(result["keys"]) == named
    assert "alice/.ssh/new\\#012line" in " ".join(result["keys"])
    debug = sorted(
        line["message"].split("never synced: ", 1)[1]
        for line in lines
        if "never synced: " in line.get("message", "")
    )
    assert debug == named
    assert {
        "level": "INFO",
        "message": f"{src}/: {len(private)} private keys in .ssh directories never synced "
        "(not sent, left as they are on the target)",
    } in lines
    text = json.dumps(lines)
    assert "BEGIN" not in text
    assert "PuTTY" not in text


def test_rsyncs_own_error_is_the_reason_and_reaches_the_log(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_text("x")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where rsync needs a directory")
    argv = ["--label", "/src/", "--", "rsync", "-a", f"{src}/", f"{blocker}/sub/"]
    rc, result, stderr, lines = _wrapper(argv, tmp_path / "p.jsonl")
    assert rc == result["rc"] == 3
    # rsync's own error line, its exit code and what it means
    own = f'rsync: [Receiver] ERROR: cannot stat destination "{blocker}/sub/": Not a directory (20)'
    assert result["error"] == f"rsync exit 3: errors selecting input/output files, dirs: {own}"
    assert stderr.splitlines()[-1] == result["error"]  # the failed task's reason (its last line)
    warnings = [line["message"] for line in lines if line.get("level") == "WARNING"]
    assert f"/src/: {own}" in warnings
    assert all(message.startswith("/src/: ") for message in warnings)


def test_a_missing_rsync_is_a_reason_too(tmp_path: Path) -> None:
    rc, result, stderr, _ = _wrapper(["--", "/nonexistent/rsync", "-a", "x/", "y/"], tmp_path / "p.jsonl")
    assert (rc, result["rc"]) == (127, 127)
    assert result["error"].startswith("rsync exit 127: rsync not found: /nonexistent/rsync: ")
    assert stderr.splitlines()[-1] == result["error"]


@pytest.mark.parametrize(
    ("rc", "stderr", "reason"),
    [
        (
            23,
            [
                'rsync: [receiver] mkdir "/x" failed: Permission denied (13)',
                "rsync error: some files/attrs were not transferred (see previous errors) (code 23)",
            ],
            "rsync exit 23: partial transfer due to error: "
            'rsync: [receiver] mkdir "/x" failed: Permission denied (13)',
        ),
        (
            255,
            ["Warning: Permanently added '[127.0.0.2]:22' (ED25519) to the list of known hosts.",
             "ssh: connect to host 127.0.0.2 port 22: Connection refused",
             "rsync: connection unexpectedly closed (0 bytes received so far) [sender]",
             "rsync error: unexplained error (code 255) at io.c(232) [sender=3.5.0]"],
            "rsync exit 255: the connection to the target failed (ssh): "
            "ssh: connect to host 127.0.0.2 port 22: Connection refused / "
            "rsync: connection unexpectedly closed (0 bytes received so far) [sender]",
        ),
        (12, [f"rsync: error {i}" for i in range(5)], "rsync exit 12: error in rsync protocol data stream: "
         "rsync: error 3 / rsync: error 4 (and 3 more error lines before these, in the log)"),
        (30, [], "rsync exit 30: timeout in data send/receive"),
        (-9, [], "rsync exit -9: killed by signal 9"),
    ],
)  # fmt: skip
def test_failure_reason(rc: int, stderr: list[str], reason: str) -> None:
    assert W.rsync_failure(rc, stderr) == reason


def test_exclude_rule_escapes_wildcards_and_control_characters() -> None:
    assert W.exclude_rule("alice/.ssh/github") == "- /alice/.ssh/github"
    assert W.exclude_rule("alice/.ssh/st*r [1]") == "- /alice/.ssh/st\\*r \\[1]"
    assert W.exclude_rule("a/.ssh/new\nline\\x") == "- /a/.ssh/new?line\\\\x"
    assert W.exclude_rule("a/.ssh/back\\slash") == "- /a/.ssh/back\\slash"  # literal: no wildcard


@pytest.mark.parametrize(
    "rules",
    [
        ["--filter=!"],
        ["--filter= clear "],
        ["--exclude=!"],
        ["-f", "!"],
        ["-f!"],
        ["--filter", "clear"],
        ["--filter=merge {merged}"],
        ["--filter=. {merged}"],
        ["--filter=merge,- {nested}"],
    ],
)
def test_a_rule_that_clears_the_list_is_refused(
    tmp_path: Path, keys: dict[str, bytes], rules: list[str]
) -> None:
    """``!``/``clear`` would drop the key rules before it (rsync applies it to everything before):
    the wrapper refuses to run rsync, and nothing is sent."""
    src, dst = tmp_path / "home", tmp_path / "target"
    _tree(src, keys)
    (tmp_path / "merged").write_text("- *.tmp\n!\n")
    (tmp_path / "nested").write_text(f"merge {tmp_path / 'merged'}\n")
    rules = [r.format(merged=tmp_path / "merged", nested=tmp_path / "nested") for r in rules]
    argv = ["--scan-keys", f"{src}/", "--", "rsync", "-a", *rules, f"{src}/", f"{dst}/"]
    rc, result, stderr, _ = _wrapper(argv, tmp_path / "p.jsonl")
    assert (rc, result["rc"]) == (2, 2)
    assert "a filter rule that clears the rule list" in result["error"]
    assert stderr.splitlines()[-1] == result["error"]
    assert not dst.exists()


def test_a_per_directory_clear_keeps_the_key_rules(tmp_path: Path, keys: dict[str, bytes]) -> None:
    """A ``!`` in a per-directory (dir-merge) file clears only that file's rules: allowed, and the
    keys stay excluded."""
    src, dst = tmp_path / "home", tmp_path / "target"
    private, _ = _tree(src, keys)
    (src / "alice/.pcswitcher-filter").write_text("!\n+ *\n")
    argv = ["--scan-keys", f"{src}/", "--", "rsync", "-a", "--filter=dir-merge .pcswitcher-filter"]
    rc, _, _, _ = _wrapper([*argv, f"{src}/", f"{dst}/"], tmp_path / "p.jsonl")
    assert rc == 0
    assert not any(os.path.lexists(dst / rel) for rel in private)
    assert (dst / "alice/.ssh/config").exists()


def test_the_walk_finds_every_ssh_directory(tmp_path: Path) -> None:
    """Against os.walk: a random tree of directories with .ssh directories anywhere — a directory
    whose only subdirectory is .ssh, an empty .ssh, .ssh at the root, deep ones — all found."""
    rng = random.Random(20261203)  # noqa: S311 - a reproducible tree, not a secret
    root = tmp_path / "tree"
    root.mkdir()
    dirs = [root]
    for i in range(3000):
        parent = rng.choice(dirs)
        child = parent / (".ssh" if rng.random() < 0.05 else f"d{i}")
        child.mkdir(exist_ok=True)
        if child.name != ".ssh":
            dirs.append(child)
        if rng.random() < 0.3:
            (child / f"f{i}").write_text("x")
    (root / "only/.ssh").mkdir(parents=True)
    (root / ".ssh").mkdir(exist_ok=True)
    expected = set()
    for path, subdirs, _ in os.walk(root):
        if ".ssh" in subdirs:
            expected.add(os.path.join(path, ".ssh"))
            subdirs.remove(".ssh")
    assert set(W._ssh_dirs(str(root))) == expected
    assert len(expected) > 50


# -- the walk cache -----------------------------------------------------------------------------------


def _reference(root: Path) -> set[str]:
    """The .ssh directories a full walk finds (os.walk; symlinks to directories are not directories)."""
    found = set()
    for path, subdirs, _ in os.walk(root):
        subdirs[:] = [d for d in subdirs if not os.path.islink(os.path.join(path, d))]
        if ".ssh" in subdirs:
            found.add(os.path.join(path, ".ssh"))
            subdirs.remove(".ssh")
    return found


def _settle(*tops: Path) -> int:
    """Waits until the filesystem's clock is past the ctime of every directory under ``tops``
    (a probe file rewritten until its ctime is newer: at most one clock tick) and returns the
    probe's ctime: every later change gets a newer ctime than any of them."""
    newest = max(os.lstat(path).st_ctime_ns for top in tops for path, _, _ in os.walk(top))
    probe = tops[0].parent / "clock-probe"
    while True:
        probe.write_bytes(b"x")
        now = probe.stat().st_ctime_ns
        if now > newest:
            return now


def _cached_scan(root: Path, state: Path, since: int) -> tuple[set[str], Any]:
    """A scan through the cache file (loaded, then saved), as the wrapper does."""
    cache = W.WalkCache(W.load_cache(str(state), str(root)), since)
    found = set(W._ssh_dirs(str(root), cache))
    W.save_cache(str(state), str(root), cache.new)
    return found, cache


def _random_tree(root: Path, rng: random.Random, count: int) -> list[Path]:
    dirs = [root]
    for i in range(count):
        parent = rng.choice(dirs)
        child = parent / (".ssh" if rng.random() < 0.05 else f"d{i}")
        child.mkdir(exist_ok=True)
        if child.name != ".ssh":
            dirs.append(child)
    return dirs


def _deep(dirs: list[Path], rng: random.Random) -> Path:
    """A directory of the tree at depth 3 or more that still exists."""
    return rng.choice([d for d in dirs if len(d.parts) - len(dirs[0].parts) >= 3 and _real_dir(d)])


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _mutations(root: Path, outside: Path, dirs: list[Path], rng: random.Random) -> list[tuple[str, Any]]:
    """Changes deep in the tree the next scan must see, each a (name, function)."""

    def add_ssh() -> None:
        (_deep(dirs, rng) / "new/deeper/.ssh").mkdir(parents=True)

    def remove_ssh() -> None:
        ssh = rng.choice(sorted(_reference(root)))
        os.rmdir(ssh) if not os.listdir(ssh) else subprocess.run(["rm", "-r", ssh], check=True)

    def rename_subtree() -> None:
        ssh = _reference(root)
        holders = [d for d in dirs[1:] if _real_dir(d) and any(p.startswith(f"{d}/") for p in ssh)]
        src = rng.choice(holders)
        dests = [d for d in dirs if _real_dir(d) and not str(d).startswith(str(src)) and d != src.parent]
        src.rename(rng.choice(dests) / f"moved-{rng.randrange(1 << 20)}")

    def touch_back() -> None:
        target = _deep(dirs, rng)
        st = target.stat()
        (target / ".ssh").mkdir()
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime as it was: ctime says it changed
        assert target.stat().st_mtime_ns == st.st_mtime_ns

    def symlink_instead() -> None:
        target = _deep(dirs, rng)
        (outside / "linked/.ssh").mkdir(parents=True, exist_ok=True)
        subprocess.run(["rm", "-r", str(target)], check=True)
        target.symlink_to(outside / "linked")  # a symlink is not followed: its .ssh is not the tree's

    def move_in() -> None:
        # a subtree made before the last scan, moved in where a cached directory of the same name was
        target = _deep(dirs, rng)
        subprocess.run(["rm", "-r", str(target)], check=True)
        (outside / "old").rename(target)

    def recreate() -> None:
        target = _deep(dirs, rng)
        subprocess.run(["rm", "-r", str(target)], check=True)
        (target / "x/.ssh").mkdir(parents=True)  # same path, new directory (ext4 may reuse the inode)

    def file_instead() -> None:
        ssh = rng.choice(sorted(_reference(root)))
        subprocess.run(["rm", "-r", ssh], check=True)
        Path(ssh).write_text("a file named .ssh")

    def ssh_at_root() -> None:  # removed when there is one, else made
        subprocess.run(["rm", "-r", str(root / ".ssh")], check=True) if (root / ".ssh").exists() else (
            root / ".ssh"
        ).mkdir()

    steps = [add_ssh, remove_ssh, rename_subtree, touch_back, symlink_instead, move_in, recreate]
    return [(f.__name__, f) for f in [*steps, file_instead, ssh_at_root, add_ssh, touch_back]]


def _reference_size(root: Path) -> int:
    """The size of the regular files a full walk visits (not below .ssh: the key scan reads those)."""
    size = 0
    for path, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d != ".ssh" and not os.path.islink(os.path.join(path, d))]
        for name in files:
            st = os.lstat(os.path.join(path, name))
            size += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return size


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_cached_walk_sees_every_change(tmp_path: Path, seed: int) -> None:
    """A random tree scanned through the cache file after each change deep inside it finds exactly
    what a full walk finds, and the same size of its files (rsync's progress total); with nothing
    changed no directory is listed again."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible tree, not a secret
    root, outside, state = tmp_path / "tree", tmp_path / "outside", tmp_path / "state"
    root.mkdir()
    dirs = _random_tree(root, rng, 600)
    for i, folder in enumerate(dirs):
        if rng.random() < 0.5:
            (folder / f"file{i}").write_bytes(b"x" * rng.randrange(5000))
    (root / "link").symlink_to("d0")  # neither a directory nor a regular file: no size
    (outside / "old/c/d/.ssh").mkdir(parents=True)
    (outside / "old/e").mkdir()
    (outside / "old/e/moved-in").write_bytes(b"y" * 777)
    found, cache = _cached_scan(root, state, _settle(root, outside))
    assert found == _reference(root) == set(W._ssh_dirs(str(root)))
    assert cache.listed == cache.visited  # no cache file yet: every directory listed
    assert cache.size == _reference_size(root) > 0
    found, cache = _cached_scan(root, state, _settle(root, outside))
    assert found == _reference(root)
    assert (cache.listed, cache.dirty, cache.size) == (0, False, _reference_size(root))  # nothing listed
    for name, change in _mutations(root, outside, dirs, rng):
        change()
        found, cache = _cached_scan(root, state, _settle(root, outside))
        assert found == _reference(root), name
        assert 0 < cache.listed < cache.visited, name
        assert cache.size == _reference_size(root), name
        assert found == set(W._ssh_dirs(str(root))), name


def test_the_walks_size_is_the_files_size_when_their_directory_was_listed(tmp_path: Path) -> None:
    """The size total is an estimate: a file that grows in place leaves its directory as it was, so
    the cache keeps its old size until an entry of that directory is created, removed or renamed."""
    root, state = tmp_path / "tree", tmp_path / "state"
    (root / "a").mkdir(parents=True)
    (root / "a/log").write_bytes(b"x" * 100)
    assert _cached_scan(root, state, _settle(root))[1].size == 100
    (root / "a/log").write_bytes(b"x" * 1000)  # in place
    assert _cached_scan(root, state, _settle(root))[1].size == 100
    (root / "a/new").write_bytes(b"x" * 10)
    assert _cached_scan(root, state, _settle(root))[1].size == 1010


def test_a_change_within_the_clock_tick_of_the_scan_is_listed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory whose ctime is not older than the scan's start (less the margin) is not kept:
    a change in the same clock tick could leave its metadata as it was."""
    root, state = tmp_path / "tree", tmp_path / "state"
    (root / "a/b").mkdir(parents=True)
    since = _settle(root)
    (root / "a/c").mkdir()  # a's ctime is now >= since: racy
    _, cache = _cached_scan(root, state, since)
    assert "a" not in cache.new
    assert {"", "a/b"} <= set(cache.new)
    (root / "a/c/.ssh").mkdir()
    found, cache = _cached_scan(root, state, _settle(root))
    assert found == {str(root / "a/c/.ssh")}


def _cache_file(state: Path, root: Path) -> Path:
    name: str = W.cache_name(str(root))
    return state / "pc-switcher" / "key-scan" / name


def test_the_cache_file_is_private_and_replaced_atomically(tmp_path: Path) -> None:
    root, state = tmp_path / "tree", tmp_path / "xdg"
    (root / "a/.ssh").mkdir(parents=True)
    since = _settle(root)
    _cached_scan(root, state / "pc-switcher", since)
    path = _cache_file(state, root)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temp file left
    head, _, body = path.read_bytes().partition(b"\n")
    header = json.loads(head)
    assert (header["version"], header["root"], header["marker"], header["crc32"]) == (
        4,
        str(root),
        "",
        zlib.crc32(body),
    )
    assert set(marshal.loads(body)) == {"", "a"}  # noqa: S302 - the test's own file
    # a temp file left by a run killed while writing: removed by the next save
    stale = path.parent / f".{path.name}.99999.tmp"
    stale.write_bytes(b"half")
    (path.parent / f"{'ab' * 32}.cache").write_bytes(b"{}")  # version 2's name (SHA-256): gone too
    W.save_cache(str(state / "pc-switcher"), str(root), {})
    assert sorted(os.listdir(path.parent)) == [path.name]
    # a failed rename (the final name is a directory): the temp file is removed, the error raised
    path.unlink()
    path.mkdir()
    with pytest.raises(IsADirectoryError):
        W.save_cache(str(state / "pc-switcher"), str(root), {})
    assert sorted(os.listdir(path.parent)) == [path.name]


def _rewrite(
    path: Path, header: dict[str, Any] | None = None, dirs: Any = None, checksum: bool = True
) -> None:
    """The cache file with another header or body (its checksum made to match unless told not)."""
    head, _, body = path.read_bytes().partition(b"\n")
    if dirs is not None:
        body = marshal.dumps(dirs, 4)
    fields = {**json.loads(head), **(header or {})}
    if checksum:
        fields["crc32"] = zlib.crc32(body)
    path.write_bytes(json.dumps(fields).encode() + b"\n" + body)


def _corrupt(path: Path, how: str, tmp_path: Path) -> None:
    dirs = marshal.loads(path.read_bytes().partition(b"\n")[2])  # noqa: S302 - the test's own file
    if how == "garbage":
        path.write_bytes(b"\x00{not json")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:-3])
    elif how == "flipped":  # a changed byte: the checksum no longer matches
        _rewrite(path, dirs={rel: [e[0], e[1] + 1, *e[2:]] for rel, e in dirs.items()}, checksum=False)
    elif how == "other-version":
        _rewrite(path, {"version": 0})
    elif how == "other-python":  # marshal's format may change with the interpreter
        _rewrite(path, {"python": "3.7/3"})
    elif how == "other-root":
        _rewrite(path, {"root": "/elsewhere"})
    elif how == "other-marker":  # the entries say whether they hold another name
        _rewrite(path, {"marker": ".rsync-filter"})
    elif how == "bad-entries":  # a hand-made file of the wrong shape, its checksum right
        _rewrite(path, dirs={rel: [e[0], e[1], e[2], e[3], [7, None]] for rel, e in dirs.items()})
    elif how == "no-sizes":  # version 3's entries, without the files' size, under this version's header
        _rewrite(path, dirs={rel: e[:6] for rel, e in dirs.items()})
    elif how == "mode-0644":
        path.chmod(0o644)
    elif how == "other-owner":
        os.chown(path, 65534, 65534)
    elif how == "symlink":
        (tmp_path / "elsewhere.json").write_bytes(path.read_bytes())
        path.unlink()
        path.symlink_to(tmp_path / "elsewhere.json")
    elif how == "dir-symlink":
        path.parent.rename(tmp_path / "moved-cache-dir")
        path.parent.symlink_to(tmp_path / "moved-cache-dir")


BAD_CACHES = [
    "garbage",
    "truncated",
    "flipped",
    "other-version",
    "other-python",
    "other-root",
    "other-marker",
    "bad-entries",
    "no-sizes",
    "mode-0644",
    "other-owner",
    "symlink",
    "dir-symlink",
]


@pytest.mark.parametrize("how", BAD_CACHES)
def test_a_bad_cache_is_ignored_and_replaced(tmp_path: Path, how: str) -> None:
    """A corrupt, foreign, unreadable or not private cache (or one reached through a symlink) is
    ignored: a full walk, which finds what has changed since; then it is replaced, never through a
    symlink (a symlinked cache directory is refused: nothing is written through it)."""
    root, state = tmp_path / "tree", tmp_path / "xdg" / "pc-switcher"
    (root / "a/b/.ssh").mkdir(parents=True)
    (root / "c").mkdir()
    _cached_scan(root, state, _settle(root))
    path = _cache_file(state.parent, root)
    _corrupt(path, how, tmp_path)
    (root / "c/.ssh").mkdir()  # a change the (damaged) cache does not know of
    cache = W.WalkCache(W.load_cache(str(state), str(root)), _settle(root))
    assert set(W._ssh_dirs(str(root), cache)) == {str(root / "a/b/.ssh"), str(root / "c/.ssh")}
    assert cache.listed == cache.visited
    if how == "dir-symlink":
        with pytest.raises(NotADirectoryError):
            W.save_cache(str(state), str(root), cache.new)
        assert os.listdir(tmp_path / "moved-cache-dir") == [path.name]
        return
    W.save_cache(str(state), str(root), cache.new)
    assert not path.is_symlink()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.stat().st_uid == os.geteuid()
    assert set(W.load_cache(str(state), str(root))) == {"", "a", "a/b", "c"}
    if how == "symlink":
        assert (tmp_path / "elsewhere.json").exists()  # the link replaced, not its target written


def _scan_in_process(root: Path, state: Path, dry_run: bool, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The wrapper's own scan (Wrapper.scan_keys) with its DEBUG messages."""
    import argparse

    progress = root.parent / "progress.jsonl"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("PCSWITCHER_PROGRESS", str(progress))
    monkeypatch.setattr(W, "RACY_NS", 0)  # the tree was settled: the scan's start is past every ctime
    args = argparse.Namespace(base=0.0, span=100.0, label="L", report=10, dry_run=dry_run)
    wrapper = W.Wrapper(args)
    keys, _ = wrapper.scan_keys(str(root) + "/")
    wrapper.progress.close()
    messages = [json.loads(line)["message"] for line in progress.read_text().splitlines()]
    progress.unlink()
    return [*keys, *(m for m in messages if "key scan" in m)]


def test_a_dry_run_reads_the_cache_and_never_writes_one(
    tmp_path: Path, keys: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, state = tmp_path / "tree", tmp_path / "xdg"
    (root / "a/b/.ssh").mkdir(parents=True)
    (root / "a/b/.ssh/work").write_bytes(keys["openssh"])
    (root / "c").mkdir()
    _settle(root)
    # a dry-run without a cache: a full walk, and nothing created (not even the state directory)
    assert _scan_in_process(root, state, True, monkeypatch) == [
        "a/b/.ssh/work",
        "L: key scan: 4 of 4 directories listed",
    ]
    assert not state.exists()
    # a real scan writes it; the next dry-run uses it (nothing listed), still reads every key
    assert _scan_in_process(root, state, False, monkeypatch)[1] == "L: key scan: 4 of 4 directories listed"
    path = _cache_file(state, root)
    before = (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino)
    (root / "a/b/.ssh/work").write_bytes(b"not a key any more")
    assert _scan_in_process(root, state, True, monkeypatch) == ["L: key scan: 0 of 4 directories listed"]
    # a change: the dry-run lists the changed directory and finds the new key, the file stays as it was
    (root / "c/.ssh").mkdir()
    (root / "c/.ssh/id").write_bytes(keys["ec_pem"])
    _settle(root)
    assert _scan_in_process(root, state, True, monkeypatch) == [
        "c/.ssh/id",
        "L: key scan: 1 of 4 directories listed",
    ]
    assert (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino) == before
    assert os.listdir(path.parent) == [path.name]


def test_odd_names_survive_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Directory names with newlines, bytes that are not UTF-8, shell and glob characters, leading
    dashes: kept and found again through the cache file (and the folder's own path odd too)."""
    root, state = tmp_path / "odd\nroot \udcff", tmp_path / "state"
    odd = ["new\nline", os.fsdecode(b"\xff\xfe"), "-rf", "$(touch pwned)", " sp ace ", "*?[x", "back\\slash"]
    for name in odd:
        (root / name / "inner" / ".ssh").mkdir(parents=True)
    expected = {str(root / name / "inner/.ssh") for name in odd}
    found, cache = _cached_scan(root, state, _settle(root))
    assert found == expected
    found, cache = _cached_scan(root, state, _settle(root))
    assert (found, cache.listed) == (expected, 0)
    (root / odd[1] / ".ssh").mkdir()
    found, cache = _cached_scan(root, state, _settle(root))
    assert found == {*expected, str(root / odd[1] / ".ssh")}
    assert cache.listed == 1
    assert not (tmp_path / "pwned").exists()


def test_a_cache_that_cannot_be_written_is_a_debug_line(
    tmp_path: Path, keys: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state directory is a file (or unwritable): the scan still finds every key; the DEBUG line
    says the cache was not saved; nothing fails."""
    root, state = tmp_path / "tree", tmp_path / "xdg"
    (root / "a/.ssh").mkdir(parents=True)
    (root / "a/.ssh/id").write_bytes(keys["openssh"])
    state.write_text("a file where the state directory would be")
    result = _scan_in_process(root, state, False, monkeypatch)
    assert result[0] == "a/.ssh/id"
    assert result[1].startswith("L: key scan: 2 of 2 directories listed; walk cache not saved: [Errno 17] ")


# -- per-directory filter files: the walk says whether the source has one ------------------------------
MARKER = ".pcswitcher-filter"


def _marked_scan(root: Path, state: Path) -> tuple[bool, Any]:
    """A scan through the cache file looking for MARKER, as the wrapper's with --per-dir-filter."""
    cache = W.WalkCache(W.load_cache(str(state), str(root), MARKER), _settle(root), MARKER)
    W.find_private_keys(str(root), cache)
    W.save_cache(str(state), str(root), cache.new, MARKER)
    return cache.marked, cache


@pytest.mark.parametrize(
    "where",
    ["", "top", "a/leaf", "a/b/c/deep", ".ssh", "a/.ssh/sub", "a/leaf/symlink", "a/leaf/dir"],
)
def test_the_walk_finds_a_per_directory_filter_file_anywhere(tmp_path: Path, where: str) -> None:
    """An entry named as the per-directory filter files, of any type, in any directory the walk
    visits (the root, a directory without subdirectories, deep, in and below .ssh directories, which
    the key scan reads instead): found, also from the cache when nothing changed; gone once it is
    removed; found when it comes back into a cached directory."""
    root, state = tmp_path / "tree", tmp_path / "state"
    for sub in ("a/leaf", "a/b/c/deep", ".ssh", "a/.ssh/sub", "e/f"):
        (root / sub).mkdir(parents=True)
    folder = {"": "", "top": "", "a/leaf/symlink": "a/leaf", "a/leaf/dir": "a/leaf"}.get(where, where)
    marker = root / folder / MARKER
    if where == "a/leaf/symlink":
        marker.symlink_to("/nonexistent")
    elif where == "a/leaf/dir":
        marker.mkdir()
    elif where:
        marker.write_text("- x\n")
    assert _marked_scan(root, state)[0] is bool(where)
    found, cache = _marked_scan(root, state)  # from the cache
    assert (found, cache.listed) == (bool(where), 0)
    if where:
        subprocess.run(["rm", "-r", str(marker)], check=True)
        assert _marked_scan(root, state)[0] is False
        marker.write_text("- y\n")
        assert _marked_scan(root, state)[0] is True
    assert W.find_private_keys(str(root)) == ([], [])  # without a marker: the keys alone, as before


def test_another_marker_name_walks_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache says whether each directory holds one name: for another name it is not used."""
    root, state = tmp_path / "tree", tmp_path / "state"
    (root / "a/b").mkdir(parents=True)
    (root / "a/b/.rsync-filter").write_text("- x\n")
    assert _marked_scan(root, state)[0] is False
    cache = W.WalkCache(W.load_cache(str(state), str(root), ".rsync-filter"), _settle(root), ".rsync-filter")
    W.find_private_keys(str(root), cache)
    assert cache.marked is True
    assert cache.listed == cache.visited == 3
