#!/usr/bin/env python3
"""Run the rsync of one folder of the folder_sync job and turn its output into progress lines.

Usage (run on the source by roles/folder_sync/tasks/sync.yml)::

    folder_sync_rsync.py [--base B] [--span S] [--label L] [--report N] [--dry-run] [--scan-keys ROOT]
                         [--sparse-from BYTES] [--per-dir-filter NAME [--target-python PATH]]
                         -- rsync ARGS... SOURCE/ DEST/

rsync must be given ``--stats --out-format=/%i %n%L`` (the task does). This wrapper:

* asks rsync for its progress: rsync 3.2.0 and later (its ``--version``) print one progress2 line
  when they get SIGVTALRM (:meth:`Wrapper.ask_progress`, every 0.25 s), an older one gets
  ``--info=progress2`` (a line after every file), as do the rsyncs of the large files (few files);
* with ``--scan-keys ROOT`` (rsync's source folder), first finds every private key in the ``.ssh``
  directories below ROOT by its content (:func:`find_private_keys`) and puts one ``--filter=- /PATH``
  rule per key before all of rsync's arguments, so before every other filter rule; names each key
  (path only) in a DEBUG message and counts them in an INFO one. The walk that finds the ``.ssh``
  directories reuses the last walk's listings where a directory's metadata is unchanged
  (:class:`WalkCache`, a file per ROOT in ``$XDG_STATE_HOME/pc-switcher/key-scan/``, read always,
  written only without ``--dry-run``);
* with ``--per-dir-filter NAME`` (and ``--scan-keys``), leaves rsync's rule ``--filter=dir-merge
  NAME`` out when no directory of the source (the key scan's walk, which also looks for an entry
  NAME) or of the target (``find`` there, started by ``--target-python`` through the same ssh before
  the key scan: :func:`marker_check`) has one: rsync would read none; says which in a DEBUG message;
* with ``--sparse-from BYTES``, runs rsync with ``--max-size=BYTES --info=skip1`` and then, for the
  files it skipped, one rsync with ``--sparse`` for those with holes and one without for the others
  (:func:`later_passes`; docs/jobs/folder_sync.md, "Sparse files"); the figures below are summed
  over them;
* passes rsync's stderr on, line by line as it comes, to its own stderr and as WARNING messages;
  when rsync fails, its last stderr line is the reason: rsync's exit code, its meaning and rsync's
  last error lines (:func:`rsync_failure`);

* reads rsync's stdout, which rsync writes into a file in memory (:func:`output_file`): the
  ``progress2`` lines (overall bytes, percent), the itemized lines (``/>f+++++++++ path`` — the
  current file; ``/*deleting   path`` — a deletion; the ``/`` tells them from a skipped file's
  ``NAME is over max-size``) and the ``--stats`` block at the end;
* appends JSON lines to ``$PCSWITCHER_PROGRESS`` (when set): ``percent`` (``B + S * rsync%``) and
  ``item`` (current file, bytes, the rate of the last 5 s) at most 4 times a second, a DEBUG
  message with the figures every 5 s, one DEBUG message per deletion, and, with ``--dry-run``, one
  DEBUG message per would-be change (the first ``--report`` of them);
* prints one JSON object on stdout when rsync ends: ``rc``, ``files_transferred``, ``bytes``
  (total transferred file size), ``deleted``, ``changes`` (itemized lines), ``sample`` (the first
  ``--report`` itemized transfers/changes), ``deletions`` (the first ``--report`` deleted paths),
  ``keys`` (the excluded private keys' paths), ``error`` (when rsync failed) and exits with rsync's
  exit code.

It never daemonizes and keeps its environment (the run tag ``PCSWITCHER_RUN_ID``), so the abort
sweep finds it and rsync; rsync also gets SIGTERM if this wrapper dies (parent-death signal), and
SIGINT/SIGTERM/SIGHUP sent to the wrapper are passed on to rsync. Python 3.9+, standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import marshal
import os
import re
import select
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
import zlib
from collections import deque

TYPE_CHECKING = False  # typing is not imported at run time: 3 ms of every start
if TYPE_CHECKING:
    from typing import Any

PROGRESS_INTERVAL = 0.25  # s between progress lines (percent + item), and between requests for one
RATE_WINDOW = 5.0  # s: the rate is that of the bytes sent in about the last this many seconds
# rsync 3.2.0 and later print one progress line when they get this signal (its NEWS: "status output
# in response to a signal"): the progress without a line per file (--info=progress2 writes one)
PROGRESS_SIGNAL = signal.SIGVTALRM
PROGRESS_BY_SIGNAL_FROM = (3, 2, 0)
_RSYNC_VERSION = re.compile(rb"\Arsync +version v?(\d+)\.(\d+)\.(\d+)")
MESSAGE_INTERVAL = 5.0  # s between DEBUG messages with bytes / rate / ETA
PR_SET_PDEATHSIG = 1
# rsync's output, read so far, is freed from its file in memory (output_file) this many bytes at a time
FREE_STEP = 1 << 22
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_LINE_END = re.compile(rb"[\r\n]")

# "   1,234,567  12%   10.00MB/s    0:00:12 (xfr#3, to-chk=10/100)": progress2's line and the one
# printed on PROGRESS_SIGNAL (whose rate and time are not meaningful: the wrapper works out its own)
_PROGRESS2 = re.compile(r"^\s*(?P<bytes>[\d,.]+)\s+(?P<pct>\d+)%\s+\S+/s\s")
_STAT = re.compile(r"^(?P<key>[A-Za-z][A-Za-z ]+):\s+(?P<value>[\d,.]+)")

# rsync's exit codes (its manual, EXIT VALUES); 255: the remote shell (ssh) failed
RSYNC_EXIT = {
    1: "syntax or usage error",
    2: "protocol incompatibility",
    3: "errors selecting input/output files, dirs",
    4: "requested action not supported",
    5: "error starting client-server protocol",
    6: "daemon unable to append to log-file",
    10: "error in socket I/O",
    11: "error in file I/O",
    12: "error in rsync protocol data stream",
    13: "errors with program diagnostics",
    14: "error in IPC code",
    20: "received SIGUSR1 or SIGINT",
    21: "some error returned by waitpid()",
    22: "error allocating core memory buffers",
    23: "partial transfer due to error",
    24: "partial transfer due to vanished source files",
    25: "the --max-delete limit stopped deletions",
    30: "timeout in data send/receive",
    35: "timeout waiting for daemon connection",
    127: "rsync not found",
    255: "the connection to the target failed (ssh)",
}
STDERR_KEPT = 200  # last lines of rsync's stderr kept for the failure's reason
STDERR_LOGGED = 1000  # lines of rsync's stderr passed on to the log (a flood of errors: the first ones)


def rsync_failure(rc: int, stderr: list[str]) -> str:
    """One line for a failed rsync: its exit code and its meaning, then rsync's own last error
    lines (the specific ones, e.g. ``rsync: [receiver] mkdir "/x" failed: Permission denied (13)``,
    before its generic ``rsync error: ... (code N)`` lines, which only repeat the code)."""
    meaning = RSYNC_EXIT.get(rc, "killed by signal " + str(-rc) if rc < 0 else "unknown exit code")
    lines = [line.strip() for line in stderr if line.strip()]
    lines = [line for line in lines if not line.startswith("Warning: Permanently added")]
    specific = [line for line in lines if not line.startswith("rsync error:")]
    reasons = (specific or lines)[-2:]
    more = len(specific) - len(reasons) if specific else 0
    text = f"rsync exit {rc}: {meaning}"
    if reasons:
        text += ": " + " / ".join(reasons)
    if more > 0:
        text += f" (and {more} more error lines before these, in the log)"
    return text


def _number(text: str) -> int:
    digits = re.sub(r"[^\d]", "", text)
    return int(digits) if digits else 0


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


class Progress:
    """Appends JSON lines to the progress file (nothing when ``$PCSWITCHER_PROGRESS`` is empty)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh: Any = None
        self._lock = threading.Lock()  # rsync's stdout and stderr are read by two threads
        if path:
            with contextlib.suppress(OSError):
                self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open while rsync runs

    def write(self, **line: Any) -> None:
        if self._fh is None:
            return
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._fh.write(json.dumps(line) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()


# -- private keys in .ssh directories ---------------------------------------------------------------
KEY_HEAD = 16 * 1024  # bytes of a file in .ssh read to tell a private key (an RSA-16384 key: 12.6 KiB)
# PEM blocks of every kind of private key (RSA, EC, DSA, OPENSSH, ENCRYPTED, PKCS#8, PGP ... BLOCK,
# ssh.com's "---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----"), anywhere in the head (text may come
# before the block); PuTTY's .ppk (any version); OpenSSH's old SSH-1 key format.
_KEY_TEXT = re.compile(
    rb"-{3,}\s*BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-{3,}|PuTTY-User-Key-File-\d+:|SSH PRIVATE KEY FILE FORMAT",
    re.IGNORECASE,
)
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


def _der_length(data: bytes, pos: int) -> tuple[int, int]:
    """The length of the DER element whose length octets start at ``pos`` and where its content
    starts; (-1, -1) when it is not a definite DER length."""
    if pos >= len(data):
        return -1, -1
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if not 1 <= count <= 4 or pos + 1 + count > len(data):
        return -1, -1
    return int.from_bytes(data[pos + 1 : pos + 1 + count], "big"), pos + 1 + count


def _der_private_key(data: bytes, size: int) -> bool:
    """A binary (DER) private key: one SEQUENCE that is the whole file, whose first element is a
    small version INTEGER (PKCS#1 RSA, DSA, SEC1 EC, PKCS#8, PKCS#12) or which is an AlgorithmIdentifier
    SEQUENCE followed by an OCTET STRING (encrypted PKCS#8). Certificates and public keys are neither."""
    if size > len(data) or size < 8 or data[0] != 0x30:
        return False
    length, start = _der_length(data, 1)
    if start < 0 or start + length != size:
        return False
    if data[start : start + 2] == b"\x02\x01" and start + 2 < size:
        return data[start + 2] <= 3
    if data[start] == 0x30:
        inner, inner_start = _der_length(data, start + 1)
        after = inner_start + inner
        return inner_start > 0 and after < size and data[after] == 0x04
    return False


def is_private_key(head: bytes, size: int) -> bool:
    """``head`` (the first :data:`KEY_HEAD` bytes of a file of ``size`` bytes) is a private key."""
    return bool(_KEY_TEXT.search(head)) or _der_private_key(head, size)


def _read_head(path: str) -> tuple[bytes, int] | None:
    """The first KEY_HEAD bytes and the size of the regular file ``path``; None when it is not a
    regular file (it changed since it was listed). Raises OSError when it cannot be read."""
    try:
        fd = os.open(path, _OPEN_FLAGS | getattr(os, "O_NOATIME", 0))
    except PermissionError:  # O_NOATIME needs the file's owner (or root): read it without
        fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        chunks: list[bytes] = []
        got = 0
        while got < KEY_HEAD:
            chunk = os.read(fd, KEY_HEAD - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks), st.st_size
    finally:
        os.close(fd)


# Filesystems by type (statfs f_type): ext2/3/4, xfs, tmpfs, btrfs update a directory's mtime and ctime
# whenever an entry is created, removed or renamed in it: the walk cache trusts a listing there only
# (an allowlist: NFS caches attributes, FUSE may do anything).
_FS_CACHED = {0xEF53, 0x58465342, 0x01021994, 0x9123683E}


def _fs_type(path: str, dev: int, known: dict[int, int]) -> int:
    """The filesystem type (statfs f_type) of ``path`` on device ``dev``; 0 when unknown."""
    if dev not in known:
        fs_type = 0
        with contextlib.suppress(Exception):
            buf = ctypes.create_string_buffer(256)  # struct statfs; f_type (a C long) comes first
            if _libc().statfs(os.fsencode(path), buf) == 0:
                fs_type = ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF
        known[dev] = fs_type
    return known[dev]


# -- the walk cache (as git's untracked cache) --------------------------------------------------------
CACHE_VERSION = 4  # 2: each directory also says whether it holds an entry named as the marker;
# 3: CRC-32 (zlib) for the file name and the body's checksum, not SHA-256 (hashlib: 4 ms to import);
# 4: each directory also keeps the size of its regular files (rsync's progress total), and a directory
# without subdirectories is kept too (listed on ext4, xfs and tmpfs as well: its files' sizes)
CACHE_DIR = "key-scan"  # in pc-switcher's state directory
RACY_NS = 1_000_000_000  # a directory changed this close to the scan is listed again next time
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


Listing = tuple[list[str], bool, int]  # a directory's subdirectory names, marker found, files' size


class WalkCache:
    """The subdirectory names of each directory of the last walk, by path relative to the root,
    with the directory's (st_dev, st_ino, st_mtime_ns, st_ctime_ns), whether it holds an entry
    named ``marker`` (the per-directory filter files' name; "" for none) and the size of its
    regular files when it was listed: ``[dev, ino, mtime, ctime - mtime (mostly 0: a shorter file),
    [names], marked, size]``. The sizes summed over the walk (:attr:`size`) are the total of rsync's
    progress, an estimate: a file that grew in place since its directory was listed counts at its
    old size. A listing is reused only when all four are
    unchanged (creating, removing or renaming an entry changes a directory's mtime and ctime;
    ``touch -d`` sets back mtime, never ctime), on a filesystem of :data:`_FS_CACHED`. A directory
    whose ctime or mtime is not older than ``since_ns`` (the scan's start less :data:`RACY_NS`: a
    change in the same clock tick would leave its ctime as it was) is not kept: it is listed again
    next time."""

    def __init__(self, dirs: dict[str, Any] | None = None, since_ns: int = 0, marker: str = "") -> None:
        self.old: dict[str, Any] = dirs if isinstance(dirs, dict) else {}
        self.new: dict[str, list[Any]] = {}
        self.since_ns = since_ns
        self.marker = marker
        self.marked = False  # a directory of the walk holds an entry named ``marker``
        self.listed = 0  # directories listed (not taken from the cache)
        self.visited = 0
        self.size = 0  # the regular files' size in the directories of the walk
        self.sized = True  # ... of every one of them (not on a filesystem whose listings are not kept)

    def reset(self) -> None:
        """Forget the last walk (a full walk follows)."""
        self.old, self.new, self.listed, self.visited, self.marked = {}, {}, 0, 0, False
        self.size, self.sized = 0, True

    @property
    def dirty(self) -> bool:
        """The cache file would change (a directory listed again, gone, or not kept)."""
        return self.listed > 0 or len(self.new) != len(self.old)

    def cached(self, rel: str, st: os.stat_result) -> list[str] | None:
        """The names kept for the directory ``rel`` when its metadata ``st`` is unchanged (and
        whether it holds the marker, in :attr:`marked`). An entry
        of the wrong shape (the file's checksum held: only a hand-made file) raises TypeError,
        IndexError or KeyError: :func:`_ssh_dirs` then walks without the cache."""
        entry = self.old.get(rel)
        if (
            entry is not None
            and entry[3] == st.st_ctime_ns - st.st_mtime_ns
            and entry[2] == st.st_mtime_ns
            and entry[1] == st.st_ino
            and entry[0] == st.st_dev
        ):
            self.size += entry[6]
            self.new[rel] = entry
            self.marked = self.marked or bool(entry[5])
            names: list[str] = entry[4]
            return names
        return None

    def keep(self, rel: str, st: os.stat_result, listed: Listing) -> None:
        names, marked, size = listed
        self.marked = self.marked or marked
        self.size += size
        if st.st_ctime_ns < self.since_ns and st.st_mtime_ns < self.since_ns:
            changed = st.st_ctime_ns - st.st_mtime_ns
            self.new[rel] = [st.st_dev, st.st_ino, st.st_mtime_ns, changed, names, marked, size]


def state_dir() -> str:
    """pc-switcher's state directory of the user running this: ``$XDG_STATE_HOME/pc-switcher``
    (an absolute ``XDG_STATE_HOME``), else ``~/.local/state/pc-switcher``."""
    base = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "pc-switcher")


def cache_name(root: str, kind: str = "cache") -> str:
    """The cache file's name for the transfer root ``root``: the CRC-32 of its path (the header
    names the root: two roots of one name would only miss the cache); ``kind`` "synced": the
    record of its syncs (:func:`load_synced`)."""
    return f"{zlib.crc32(os.fsencode(root)):08x}.{kind}"


def _open_cache_dir(state: str, create: bool) -> int:
    """A descriptor of ``STATE/key-scan``, neither it nor ``STATE`` followed through a symlink;
    created (0700, ``STATE``'s parents too) when ``create``. It must be a directory of this user
    that no one else can write to (made 0700 when it is ours). Raises OSError."""
    if create:
        os.makedirs(os.path.dirname(state), mode=0o700, exist_ok=True)
    parent = os.open(os.path.dirname(state), os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for name in (os.path.basename(state), CACHE_DIR):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            os.close(parent)
            parent = fd
        st = os.fstat(parent)
        if st.st_uid != os.geteuid():
            raise PermissionError(f"{state}/{CACHE_DIR} belongs to another user")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(parent, 0o700)
        return parent
    except BaseException:
        os.close(parent)
        raise


def _read_private(state: str, name: str) -> bytes:
    """The content of ``STATE/key-scan/NAME`` (b"" when there is none, or it cannot be read, or is
    not this user's 0600 regular file; never through a symlink)."""
    try:
        dir_fd = _open_cache_dir(state, create=False)
    except OSError:
        return b""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        with open(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
                return b""
            return fh.read()
    except OSError:
        return b""
    finally:
        os.close(dir_fd)


def load_cache(state: str, root: str, marker: str = "") -> dict[str, Any]:
    """The directories kept by the last walk of ``root`` ({} when there is no cache file, or it
    cannot be read, is not this user's 0600 regular file, or not of this version, root, marker and
    checksum)."""
    data = _read_private(state, cache_name(root))
    try:
        return _parse_cache(data, root, marker) if data else {}
    except (ValueError, RecursionError):
        return {}


SYNCED_KEPT = 16  # destinations a record keeps, the latest


def load_synced(state: str, root: str) -> list[str]:
    """The destinations (rsync's last argument, ``HOST:/PATH/``) that the folder ``root`` was synced
    to before, by an rsync that succeeded; [] when there is no record or it is not this user's
    0600 file of this root."""
    try:
        record = json.loads(_read_private(state, cache_name(root, "synced")) or b"{}")
    except (ValueError, RecursionError):  # a hand-made file: damaged, or nested too deep
        return []
    targets = record.get("targets") if isinstance(record, dict) and record.get("root") == root else None
    return [t for t in targets if isinstance(t, str)] if isinstance(targets, list) else []


def save_synced(state: str, root: str, targets: list[str]) -> None:
    """Replaces the record of ``root``'s destinations (the last :data:`SYNCED_KEPT`), as
    :func:`save_cache` its cache. Raises OSError."""
    record = {"root": root, "targets": targets[-SYNCED_KEPT:]}
    _save_private(state, cache_name(root, "synced"), json.dumps(record).encode("ascii"))


def _cache_header(root: str, body: bytes, marker: str) -> dict[str, Any]:
    """The header line's fields: the body is :mod:`marshal` data (ten times faster to load than
    JSON), so the interpreter's version and marshal's format are part of it."""
    return {
        "version": CACHE_VERSION,
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}/{marshal.version}",
        "root": root,
        "marker": marker,
        "crc32": zlib.crc32(body),
    }


def _parse_cache(data: bytes, root: str, marker: str = "") -> dict[str, Any]:
    """The directories of a cache file: a JSON header line (:func:`_cache_header`), then the
    directories (marshal). {} when the header does not match this version, interpreter, root and
    body (its checksum: a damaged file is never unmarshalled). Raises ValueError."""
    head, _, body = data.partition(b"\n")
    if json.loads(head) != _cache_header(root, body, marker):
        return {}
    try:
        dirs = marshal.loads(body)  # noqa: S302 - this user's 0600 file, written by save_cache, checksum held
    except (EOFError, TypeError) as exc:
        raise ValueError(str(exc)) from exc
    return dirs if type(dirs) is dict else {}


_V2_NAME = re.compile(r"[0-9a-f]{64}\.cache")  # version 2's files, named by SHA-256: never read again


def save_cache(state: str, root: str, dirs: dict[str, Any], marker: str = "") -> None:
    """Replaces the cache file of ``root`` (:func:`_save_private`). Raises OSError."""
    body = marshal.dumps(dirs, 4)
    _save_private(
        state, cache_name(root), json.dumps(_cache_header(root, body, marker)).encode("ascii") + b"\n" + body
    )


def _save_private(state: str, name: str, data: bytes) -> None:
    """Replaces ``STATE/key-scan/NAME`` with ``data`` atomically (a temp file of mode 0600 beside
    it, then a rename; the temp file removed on failure, and any left by a killed run;
    SIGINT/SIGTERM/SIGHUP held meanwhile). Raises OSError."""
    temp = f".{name}.{os.getpid()}.tmp"
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        dir_fd = _open_cache_dir(state, create=True)
        try:
            for stale in os.listdir(dir_fd):  # left by a run killed (SIGKILL) while writing, or old
                if stale.startswith(f".{name}.") and stale.endswith(".tmp") or _V2_NAME.fullmatch(stale):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(stale, dir_fd=dir_fd)
            _write_new(temp, data, dir_fd)
            try:
                os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=dir_fd)
                raise
        finally:
            os.close(dir_fd)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _write_new(name: str, data: bytes, dir_fd: int) -> None:
    """Creates ``name`` (0600, never through a symlink) with ``data``; removed on failure."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    try:
        with open(fd, "wb", closefd=False) as fh:
            fh.write(data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)
        raise
    finally:
        os.close(fd)


# -- the walk ------------------------------------------------------------------------------------------
def _listing(path: str, marker: str = "", sizes: bool = True) -> Listing | None:
    """The names of the subdirectories of ``path`` (by the entries' types: symlinks are not
    directories), whether it has an entry named ``marker`` (of any type) and, with ``sizes``, the
    size of its regular files (an ``lstat`` each; rsync's progress total); None when it cannot be
    listed (rsync cannot read it either, and says so)."""
    try:
        with os.scandir(path) as listing:
            names = []
            marked = False
            size = 0
            for entry in listing:
                marked = marked or entry.name == marker
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        names.append(entry.name)
                    elif sizes and entry.is_file(follow_symlinks=False):
                        size += entry.stat(follow_symlinks=False).st_size
            return names, marked, size
    except OSError:
        return None


def _subdirs(path: str, rel: str, st: os.stat_result, cache: WalkCache, fs: dict[int, int]) -> list[str]:
    """The subdirectory names of the directory ``path`` (``st``: its lstat, taken before listing):
    from the cache, else by listing it (the walk tries the cache first on a filesystem it knows).
    On a filesystem whose listings are not kept, the files' sizes are not taken either (an
    ``lstat`` a file on every sync, over NFS): the walk's total is then unknown."""
    cacheable = _fs_type(path, st.st_dev, fs) in _FS_CACHED
    names = cache.cached(rel, st) if cacheable else None
    if names is None:
        cache.listed += 1
        listed = _listing(path, cache.marker, sizes=cacheable)
        if listed is None:
            return []
        names = listed[0]
        if cacheable:
            cache.keep(rel, st, listed)
        else:
            cache.marked = cache.marked or listed[1]
            cache.sized = False
    return names


def _ssh_dirs(root: str, cache: WalkCache | None = None) -> list[str]:
    """Every directory named ``.ssh`` under ``root`` (not below one: those are scanned whole), by a
    walk of the directories alone: each one ``lstat``-ed, listed unless ``cache`` holds its
    listing and its metadata is unchanged (or its link count says it has no subdirectory); the
    entries' types come with the listing (no ``stat`` of files). Symlinks are not followed (nor by
    rsync -a), the root excepted."""
    cache = cache if cache is not None else WalkCache()
    try:
        return _walk(root, cache)
    except (TypeError, IndexError, KeyError):  # a cache entry of the wrong shape: walk without it
        cache.reset()
        return _walk(root, cache)


def _walk(root: str, cache: WalkCache) -> list[str]:
    """:func:`_ssh_dirs`' loop, kept lean: it runs for every directory of the folder (tens of
    thousands), most of them from the cache, and each run waits for it before rsync starts."""
    found: list[str] = []
    fs: dict[int, int] = {}
    prefix = root.rstrip("/") + "/"
    lstat, cached = os.lstat, cache.cached
    stack = [""]
    while stack:
        rel = stack.pop()
        path = prefix + rel if rel else root
        try:
            st = lstat(path) if rel else os.stat(root)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue  # replaced by a file or a symlink since its parent was listed
        cache.visited += 1
        names = cached(rel, st) if fs.get(st.st_dev) in _FS_CACHED else None
        if names is None:
            names = _subdirs(path, rel, st, cache, fs)
        if not names:
            continue
        head = rel + "/" if rel else ""
        if ".ssh" in names:
            found.append(prefix + head + ".ssh")
            names = [name for name in names if name != ".ssh"]
        stack += [head + name for name in names]
    return found


def _keys_below(top: str, cache: WalkCache) -> tuple[list[str], list[str]]:
    """The private keys among the regular files at any depth below ``top`` (a .ssh directory), and
    the files there that cannot be read (they may be keys); an entry named as ``cache``'s marker
    there sets its :attr:`WalkCache.marked`."""
    keys: list[str] = []
    unreadable: list[str] = []
    stack = [top]
    while stack:
        try:
            listing = os.scandir(stack.pop())
        except OSError:
            continue
        with listing:
            for entry in listing:
                cache.marked = cache.marked or entry.name == cache.marker
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue  # symlinks (sent as links), sockets, fifos, devices: no content sent
                    read = _read_head(entry.path)
                except OSError:
                    unreadable.append(entry.path)
                    continue
                if read is not None and is_private_key(*read):
                    keys.append(entry.path)
    return keys, unreadable


def find_private_keys(root: str, cache: WalkCache | None = None) -> tuple[list[str], list[str]]:
    """The private keys in every .ssh directory under the transfer root ``root`` and the unreadable
    files there, as paths relative to ``root``, sorted. When ``root`` itself lies in a .ssh
    directory, every file below it counts. ``cache``: the last walk's listings (updated); every
    file in a .ssh directory is read each time all the same. Whether any directory of the walk
    holds an entry named as ``cache``'s marker: its :attr:`WalkCache.marked`."""
    root = root.rstrip("/") or "/"
    inside = ".ssh" in root.split("/")
    cache = cache if cache is not None else WalkCache()
    tops = [root] if inside else _ssh_dirs(root, cache)
    keys: list[str] = []
    unreadable: list[str] = []
    for top in tops:
        found, bad = _keys_below(top, cache)
        keys += found
        unreadable += bad
    prefix = len(root.rstrip("/")) + 1
    return sorted(path[prefix:] for path in keys), sorted(path[prefix:] for path in unreadable)


_WILDCARDS = re.compile(r"[*?\[]")
_ESCAPED = re.compile(r"[*?\[\\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def exclude_rule(relpath: str) -> str:
    """An rsync filter rule that excludes exactly ``relpath`` (relative to the transfer root),
    anchored there. rsync matches a pattern without wildcard characters literally (a backslash
    included); a path with wildcard characters or control characters becomes a wildcard pattern:
    ``* ? [ \\`` escaped with a backslash, each control character (a newline, a tab, ...) matched by
    ``?`` (any one character but ``/``: it may exclude a little more, never less): :func:`pattern`."""
    return "- " + pattern(relpath)


# -- large files: passes of their own after the first -------------------------------------------------
# The first rsync skips the files over ``--sparse-from`` bytes (``--max-size``) and names each one
# (``--info=skip1``: "NAME is over max-size"); they go in passes of their own, those with holes with
# ``--sparse`` (its receiver writes in 1 KiB pieces to find holes: 10-36 % slower), the others
# without it. See docs/jobs/folder_sync.md, "Sparse files".
SEEK_HOLE = getattr(os, "SEEK_HOLE", 4)
_SKIPPED = re.compile(rb"\A(?P<name>.+) is over max-size(?: \(\d+ > \d+\))?\Z", re.DOTALL)
_RSYNC_ESCAPE = re.compile(rb"\\#([0-7]{3})")
NOT_IN_LATER_PASSES = ("--delete", "--delete-delay")  # the first pass alone deletes


def rsync_name(raw: bytes) -> str:
    """A name as rsync prints it (``\\#ooo`` for a control character, a byte that is not printable
    and a backslash that would look like one) back as the path it is."""
    return os.fsdecode(_RSYNC_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), raw))


def _size(path: str) -> int:
    """``path``'s size (not followed when a symlink); 0 when it is gone."""
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def has_hole(path: str) -> bool:
    """``path`` (not followed when a symlink) is a regular file with a hole: fewer blocks than its
    size needs, and SEEK_HOLE finds a hole before its end."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_blocks * 512 >= st.st_size:
            return False
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return False
    try:
        return os.lseek(fd, 0, SEEK_HOLE) < st.st_size
    except OSError:
        return False
    finally:
        os.close(fd)


def pattern(relpath: str, wild: bool = False) -> str:
    """``relpath`` as an rsync pattern anchored at the transfer root. Literal when it has no wildcard
    character and ``wild`` is false; else ``* ? [ \\`` escaped, each control character ``?``. The
    rules of the later passes only narrow the job's rules (they come after them), so a pattern that
    matches a little more only checks a file more."""
    if wild or _WILDCARDS.search(relpath) or _CONTROL.search(relpath):
        relpath = _CONTROL.sub("?", _ESCAPED.sub(lambda m: "\\" + m.group(0), relpath))
    return "/" + relpath


def _parents(paths: list[str]) -> list[str]:
    """Every directory above ``paths`` (relative to the root), parents first."""
    dirs: set[str] = set()
    for path in paths:
        parts = path.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(dirs, key=lambda d: (d.count("/"), d))


Pass = tuple[str, int, list[str]]  # what it sends, how many files, the rsync command


def later_passes(command: list[str], root: str, large: list[str]) -> list[Pass]:
    """The rsyncs after the first for the ``large`` files it skipped (paths relative to ``root``,
    the source folder): the files with holes with ``--sparse``, by a rule each; then the others,
    by a rule per directory (they may be many). Both without the deletion options, their rules
    after all of the job's (which still decide first: no file the job excludes comes in), then
    ``- *``. All links of an inode have the same holes, so each pass has all of them (``-H``)."""
    base = root.rstrip("/") + "/"
    holed = sorted({p for p in large if has_hole(base + p)})
    dense = sorted(set(large) - set(holed))
    rest = [arg for arg in command[1:-2] if arg not in NOT_IN_LATER_PASSES]
    passes: list[Pass] = []
    if holed:
        rules = [f"+ {pattern(d)}/" for d in _parents(holed)] + [f"+ {pattern(p)}" for p in holed]
        passes.append(
            ("with holes", len(holed), [command[0], "--sparse", *rest, *_filters(rules), *command[-2:]])
        )
    if dense:
        dirs = sorted({p.rpartition("/")[0] for p in dense})
        rules = [f"+ {pattern(d)}/" for d in _parents(dense)]
        rules += [f"+ {pattern(d + '/' if d else '', wild=True)}*" for d in dirs]
        passes.append(("without holes", len(dense), [command[0], *rest, *_filters(rules), *command[-2:]]))
    return passes


def _arrows(name: str) -> list[int]:
    """Where `` => `` or `` -> `` (``%L`` of an itemized line) could start in ``name``."""
    return [m.start() for m in re.finditer(r"(?= [=-]> )", name)]


def _filters(rules: list[str]) -> list[str]:
    return ["--filter=" + rule for rule in [*rules, "- *"]]


_RULE_OPTIONS = ("--filter", "--exclude", "--include", "-f")
_CLEARING = {"!", "clear"}


def _command_rules(command: list[str]) -> list[str]:
    """The filter rules given on rsync's command line (``--filter=R``, ``--filter R``, ``-fR``,
    ``-f R``, ``--exclude``/``--include`` alike)."""
    rules: list[str] = []
    args = iter(command[1:])
    for arg in args:
        if arg == "--":
            break
        if arg in _RULE_OPTIONS:
            rules.append(next(args, ""))
        elif arg.startswith(tuple(o + "=" for o in _RULE_OPTIONS[:3])):
            rules.append(arg.split("=", 1)[1])
        elif arg.startswith("-f") and not arg.startswith("--"):
            rules.append(arg[2:])
    return rules


def clearing_rule(command: list[str]) -> str:
    """Where rsync's command line (or a file it merges, at any depth) has a rule that clears the
    filter list (``!``, ``clear``): it would drop the key rules and the fixed never-sync rules before
    it. "" when there is none. A per-directory (dir-merge) file's ``!`` clears only its own rules."""
    todo = [("the command line", rule) for rule in _command_rules(command)]
    seen: set[str] = set()
    while todo:
        where, rule = todo.pop()
        words = rule.strip().split(None, 1)
        if not words:
            continue
        if words[0] in _CLEARING:
            return f"{where}: {rule.strip()!r}"
        keyword = words[0].split(",", 1)[0]
        if (keyword == "merge" or keyword.startswith(".")) and len(words) == 2 and words[1] not in seen:
            seen.add(words[1])
            with contextlib.suppress(OSError, UnicodeDecodeError), open(words[1], encoding="utf-8") as merged:
                todo += [(f"the filter file {words[1]}", line) for line in merged.read().splitlines()]
    return ""


# -- per-directory filter files: read only where there are some ----------------------------------------
# rsync looks for a ``dir-merge`` file in every directory on both machines (system calls for each
# component of the directory's path); where neither machine has one, leaving the rule out changes
# nothing else. See docs/jobs/folder_sync.md, "Filter rules and their precedence".
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._+-]+\Z")  # as the config allows: a literal rsync pattern
# The target's look, a fixed program (``python3 -I -S -c PROGRAM``, the same text every run; the
# folder and the name on stdin, a NUL between them, never on a command line; no json import: 10 ms of
# the target's Python start) that runs find(1) with them as its arguments (no shell): ``find FOLDER
# -name NAME -print -quit``, which walks by the directories' listings (the entries' types come with
# them: no stat of a file, no symlink followed) until an entry of that name. Prints its path (found)
# or nothing ("none"); a folder that does not exist holds none; anything else (find cannot list a
# directory: it exits 1; input of the wrong shape) and the rule stays.
MARKER_PROGRAM = r"""
import os, sys
folder, name = sys.stdin.buffer.read().split(b"\0")
try:
    os.lstat(folder)
except FileNotFoundError:
    sys.exit(0)
os.execvp(b"find", [b"find", folder, b"-name", name, b"-print", b"-quit"])
"""


def marker_check(command: list[str], marker: str, python: str = "python3") -> tuple[list[str], bytes] | None:
    """The ssh command that looks for an entry named ``marker`` in the target folder of ``command``
    (its last argument, ``HOST:/PATH/``), and its input: :data:`MARKER_PROGRAM` run by ``python``
    through the sync's own ssh (``-e``) as the user the sync's rsync runs as (its ``--rsync-path``:
    ``sudo -n`` with become, the run tag). None when ``command`` has no remote destination, its
    remote rsync is not a plain ``... rsync`` or ``marker`` is not a plain file name: then the
    target is not looked at."""
    at = command[-1].find(":/")
    ssh = [command[i + 1] for i, arg in enumerate(command[:-3]) if arg == "-e"]
    remote = [arg.split("=", 1)[1] for arg in command if arg.startswith("--rsync-path=")] or ["rsync"]
    if not _PLAIN_NAME.match(marker) or marker in (".", "..") or at <= 0 or not ssh:
        return None
    if remote[-1] != "rsync" and not remote[-1].endswith(" rsync"):
        return None
    host = command[-1][:at]
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # ssh takes IPv6 bare
    run = remote[-1][: -len("rsync")] + shlex.quote(python) + " -I -S -c " + shlex.quote(MARKER_PROGRAM)
    folder = command[-1][at + 1 :].rstrip("/") or "/"
    return [*shlex.split(ssh[-1]), host, run], os.fsencode(folder) + b"\0" + os.fsencode(marker)


def shown(path: str) -> str:
    """``path`` for a message: control characters and bytes that are not UTF-8 as rsync shows them
    (``\\#012``), so that a name cannot break a log line."""
    raw = os.fsencode(path)
    text = raw.decode("utf-8", errors="surrogateescape")
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\#{code - 0xDC00:03o}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\#{code:03o}")
        else:
            out.append(char)
    return "".join(out)


def ask_version(binary: str) -> subprocess.Popen[bytes] | None:
    """Starts ``binary --version`` (read by :func:`rsync_version`); None when it cannot start."""
    try:
        return _popen([binary, "--version"])
    except OSError:
        return None


def rsync_version(binary: str, asked: subprocess.Popen[bytes] | None = None) -> tuple[int, ...] | None:
    """The version of the rsync ``binary`` (its ``--version``; ``asked``: that command started
    earlier by :func:`ask_version`, so that it ran beside other work), None when it does not say one."""
    asked = asked or ask_version(binary)
    if asked is None:
        return None
    try:
        out = asked.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        asked.kill()
        asked.communicate()
        return None
    match = _RSYNC_VERSION.match(out)
    return tuple(int(part) for part in match.groups()) if match else None


def catches(pid: int, signum: int) -> bool:
    """The process ``pid`` has a handler for ``signum`` (its SigCgt in /proc): sent before rsync set
    its handler, the signal would end it (the default action)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


_LIBC: list[Any] = []  # loaded in the parent: the child only calls prctl (no dlopen after fork)
_PARENT: list[int] = []  # this wrapper's pid, set before each fork


def exit_watch(pid: int) -> int:
    """A pidfd of ``pid`` (readable once it has ended), or -1 where the kernel has none (before 5.3):
    the reader then looks whether rsync has ended once a PROGRESS_INTERVAL (up to 0.25 s a run)."""
    try:
        return os.pidfd_open(pid)
    except OSError:  # ENOSYS before Linux 5.3; ESRCH when it has already been reaped
        return -1


def output_file() -> int:
    """A file in memory (``memfd_create``: no name, gone with its last descriptor) for rsync's
    output. rsync writes a line a file, flushing each (log.c): into a pipe, even one read in
    batches, that slowed a transfer of many small files; into a file it costs nothing measurable
    (bench/folder_sync_results.md, 2026-12-06 04:03). rsync writes at the file's shared offset;
    :meth:`Wrapper.read_stdout` reads at its own (``pread``). Raises OSError."""
    return os.memfd_create("rsync-output", os.MFD_CLOEXEC)


def free_read(fd: int, start: int, end: int) -> int:
    """Frees what has been read of rsync's output file, from ``start`` up to ``end`` rounded down
    to FREE_STEP (the file keeps its size: rsync's offset stays valid): a sync of millions of
    files would otherwise hold its whole list in memory. Returns where the next call starts;
    where the kernel or libc cannot, ``end``, and nothing is freed."""
    upto = end - end % FREE_STEP
    if upto <= start:
        return start
    try:
        libc = _libc()
        libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
        mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
        return upto if libc.fallocate(fd, mode, start, upto - start) == 0 else end
    except (OSError, AttributeError):
        return end


def _libc() -> Any:
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


def _popen(
    argv: list[str], stdin: int | None = None, stdout: int = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    """Starts ``argv`` with its output (unless ``stdout``) and errors piped, ``LC_ALL=C`` (numbers
    without locale separators) and the parent-death signal (SIGTERM when this wrapper dies). Raises
    OSError."""
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    with contextlib.suppress(OSError):
        _libc()
    _PARENT[:] = [os.getpid()]
    return subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=_pdeathsig,  # noqa: PLW1509
    )


def _pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        _LIBC[0].prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if _PARENT and os.getppid() != _PARENT[0]:  # the wrapper died before prctl: never start rsync
        os._exit(143)


class Wrapper:
    def __init__(self, args: argparse.Namespace) -> None:
        self.base: float = args.base
        self.span: float = args.span
        self.label: str = args.label
        self.report: int = args.report
        self.dry_run: bool = args.dry_run
        self.progress = Progress(os.environ.get("PCSWITCHER_PROGRESS", ""))
        self.current = ""
        self.percent = 0.0
        self.bytes_done = 0
        self.rate = ""  # the bytes' rate and the time left, worked out here (rsync's are per pass)
        self.eta = ""
        self._sent: deque[tuple[float, int]] = deque()  # (time, bytes_done) of the last RATE_WINDOW
        self.changes = 0
        self.deleted_seen = 0
        self.sample: list[str] = []
        self.deletions: list[str] = []
        self.stats: dict[str, int] = {}
        self.in_stats = False
        self.keys: list[str] = []
        self.source_marked = True  # the key scan found the per-directory filter files' name (or did not look)
        self.stderr: deque[str] = deque(maxlen=STDERR_KEPT)
        self.stderr_seen = 0
        self._last_progress = 0.0
        self._last_message = time.monotonic()
        self._progress_dirty = False
        self.large: list[str] = []  # the files the first rsync skipped (--sparse-from), by path
        self.large_shown: set[str] = set()  # ... as rsync's itemized lines name them
        self.estimate = 0  # the key scan's total of the files' size (0: none; rsync's own percent)
        self.record: tuple[str, str] | None = None  # (state directory, root) of the record of syncs
        self.synced: list[str] = []  # ... the destinations in it
        self.later = False  # a pass after the first
        self.later_from = (0.0, 0, 0)  # the percent and the bytes when the later passes start, their size
        self.bytes_before = 0  # bytes of the passes before this one
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False  # a signal came: no further rsync
        self.asked: subprocess.Popen[bytes] | None = None  # rsync --version, started early (ask_version)
        self._asked = 0.0
        self._catches = False  # the running rsync has its PROGRESS_SIGNAL handler

    # -- progress ------------------------------------------------------------------------------
    def _overall(self, pct: float) -> float:
        return round(self.base + self.span * max(0.0, min(100.0, pct)) / 100.0, 1)

    def _item(self) -> str:
        # no ETA here: the display estimates it once, from the job's percent (rsync's is per folder)
        figures = f"{_human(self.bytes_done)}, {self.rate or '-'}"
        name = self.current or self.label
        return f"{name} ({figures})"

    def _rate(self, pct: float) -> None:
        """The rate of the last :data:`RATE_WINDOW` seconds (from 1 s of figures on) and, from it and
        rsync's percent of this pass, the time left."""
        now = time.monotonic()
        sent = self._sent
        sent.append((now, self.bytes_done))
        while len(sent) > 2 and now - sent[1][0] >= RATE_WINDOW:
            sent.popleft()
        seconds = now - sent[0][0]
        if seconds < 1.0:
            return
        rate = (self.bytes_done - sent[0][1]) / seconds
        self.rate = f"{_human(rate)}/s"
        done = self.bytes_done - self.bytes_before  # this pass's
        left = done * (100.0 / pct - 1.0) if 0 < pct < 100 else 0.0
        self.eta = _clock(left / rate) if rate > 0 and left > 0 else ""

    def ask_progress(self) -> None:
        """rsync 3.2.0+ prints one progress line (as progress2's: the bytes so far, the percent of the
        pass's whole file list) after the file it is sending when it gets :data:`PROGRESS_SIGNAL`.
        Asked every :data:`PROGRESS_INTERVAL`, only once rsync has its handler and never after it
        ended (this wrapper reaps it: its pid is not reused before)."""
        now = time.monotonic()
        proc = self.proc
        if self.stopped or now - self._asked < PROGRESS_INTERVAL or proc is None or proc.poll() is not None:
            return
        self._asked = now
        self._catches = self._catches or catches(proc.pid, PROGRESS_SIGNAL)
        if self._catches:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, PROGRESS_SIGNAL)

    def flush_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._progress_dirty and (force or now - self._last_progress >= PROGRESS_INTERVAL):
            self.progress.write(percent=self._overall(self.percent), item=self._item())
            self._last_progress = now
            self._progress_dirty = False
        if force or now - self._last_message >= MESSAGE_INTERVAL:
            if self.bytes_done or self.current:
                self.progress.write(
                    level="DEBUG",
                    message=(
                        f"{self.label}: {self.percent:.0f}% of this folder, {_human(self.bytes_done)} "
                        f"at {self.rate or '-'}, ETA {self.eta or '-'}"
                    ),
                )
            self._last_message = now

    def _pass_percent(self, pct: float) -> float:
        """Sets :attr:`percent` from a progress line's bytes and ``pct`` (rsync's percent of the
        file list it has so far); returns the percent of this pass. The first pass: the bytes of
        the key scan's :attr:`estimate` (rsync's incremental recursion lists the files as it goes),
        short of 100 until rsync ends; else ``pct`` (rsync had the whole list first). The later
        passes (the large files): from the percent where the first ended to 100, by their bytes."""
        if self.later:
            start, before, size = self.later_from
            done = min(1.0, (self.bytes_done - before) / size) if size else 0.0
            self.percent = max(self.percent, start + (100.0 - start) * done)
            return 100.0 * done
        if self.estimate:
            pct = min(99.0, 100.0 * self.bytes_done / self.estimate)
        self.percent = max(self.percent, pct)
        return pct

    # -- rsync output ----------------------------------------------------------------------------
    def line(self, raw: str) -> None:
        text = raw.rstrip("\n")
        if not text.strip():
            return
        match = _PROGRESS2.match(text)
        if match and not self.in_stats:
            self.bytes_done = self.bytes_before + _number(match.group("bytes"))
            self._rate(self._pass_percent(float(match.group("pct"))))
            self._progress_dirty = True
            return
        if text.startswith("Number of files:"):
            self.in_stats = True
        if self.in_stats:
            stat = _STAT.match(text)
            if stat:
                self.stats[stat.group("key").strip()] = _number(stat.group("value"))
            return
        if text.startswith("/") and len(text) > 13:
            self.itemized(text[1:])

    def lines(self, parts: list[bytes]) -> None:
        """A batch of output lines. rsync writes a progress2 line after every file; they are
        right-aligned (start with a space), and only the last of a batch is parsed. The itemized
        lines in a row go to :meth:`itemized_run` together."""
        held = b""
        run: list[bytes] = []
        for part in parts:
            if part[:1] == b"/" and not self.in_stats:
                run.append(part)
                continue
            if run:
                self.itemized_run(run)
                run = []
            skipped = None
            if b" is over max-size" in part and not self.in_stats:  # (itemized lines went to run)
                skipped = _SKIPPED.match(part)
            if skipped:  # --sparse-from: a file for a later pass
                self.large.append(rsync_name(skipped.group("name")))
                self.large_shown.add(skipped.group("name").decode("utf-8", errors="replace"))
                continue
            if part[:1] == b" " and not self.in_stats:
                held = part
                continue
            if held and part.startswith(b"Number of files:"):  # the --stats block starts
                self.line(held.decode("utf-8", errors="replace"))
                held = b""
            if part:
                self.line(part.decode("utf-8", errors="replace"))
        if run:
            self.itemized_run(run)
        if held:
            self.line(held.decode("utf-8", errors="replace"))

    def itemized_run(self, run: list[bytes]) -> None:
        """Itemized lines (``/`` first) in a row, as :meth:`line` would take them one by one, but
        on a sync of many small files (a line each) without decoding and parsing every one: once
        the first ``--report`` are kept (and, in a dry run, logged), a change that is not a
        deletion (``/*``) is only counted, and the last one's name is the current file. (A dry run
        logs the first ``--report`` changes; the sample, taken with them, is full after them.)"""
        bulk = not (self.later and self.dry_run)  # else each line's name decides whether it counts
        last = b""  # the last line only counted (longer than 13 bytes when there is one)
        for part in run:
            if bulk and part[1:2] != b"*" and len(part) > 13 and len(self.sample) >= self.report:
                last = part
                self.changes += 1
            else:
                self.line(part.decode("utf-8", errors="replace"))
        if last:  # "/", the 11-character code, " ", then the name (as in :meth:`line`)
            self.current = last[13:].decode("utf-8", errors="replace")
            self._progress_dirty = True

    def itemized(self, text: str) -> None:
        code, name = text[:11].strip(), text[12:]
        if self.later and self.dry_run and not self._is_large(name):
            return  # a dry-run's later pass lists again what the first listed (the target is unchanged)
        self.changes += 1
        if code.startswith("*deleting"):
            self.deleted_seen += 1
            if len(self.deletions) < self.report:
                self.deletions.append(name)
            verb = "would delete" if self.dry_run else "deleted"
            self.progress.write(level="DEBUG", message=f"{self.label}: {verb} {name}")
            return
        self.current = name
        self._progress_dirty = True
        if len(self.sample) < self.report:
            self.sample.append(text)
        if self.dry_run and self.changes <= self.report:
            self.progress.write(level="DEBUG", message=f"{self.label}: would transfer {code} {name}")

    def _is_large(self, name: str) -> bool:
        """``name`` of an itemized line (with ``%L``: `` => LINK`` or `` -> TARGET``) is a large file."""
        if name in self.large_shown:
            return True
        return any(name[:i] in self.large_shown for i in _arrows(name))

    # -- main ------------------------------------------------------------------------------------
    def read_stderr(self, stream: Any) -> None:
        """rsync's stderr (its errors and warnings, and ssh's), line by line as it comes: passed on to
        this wrapper's stderr (the task's result) and to the log (WARNING; ssh's notice that it added
        a host key: DEBUG); the last lines are kept for the failure's reason."""
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(text + "\n")
                sys.stderr.flush()
            if not text.strip():
                continue
            self.stderr.append(text)
            self.stderr_seen += 1
            if self.stderr_seen <= STDERR_LOGGED:
                level = "DEBUG" if text.startswith("Warning: Permanently added") else "WARNING"
                self.progress.write(level=level, message=f"{self.label}: {text}")
            elif self.stderr_seen == STDERR_LOGGED + 1:
                self.progress.write(
                    level="WARNING",
                    message=f"{self.label}: over {STDERR_LOGGED} rsync messages: the rest are not logged",
                )

    def read_stdout(self, fd: int, asking: bool = False, ended: int = -1) -> None:
        """rsync's output file (:func:`output_file`), read from this wrapper's own offset once a
        PROGRESS_INTERVAL and once rsync has ended; ``asking``: then :meth:`ask_progress` too.
        ``ended``: a pidfd of rsync (:func:`exit_watch`), which cuts the wait short when rsync ends;
        without it, whether rsync has ended is looked at after each wait."""
        offset = freed = 0
        pending = b""
        done = False
        while not done:
            if ended >= 0:
                done = bool(select.select([ended], [], [], PROGRESS_INTERVAL)[0])
            else:
                time.sleep(PROGRESS_INTERVAL)
                done = self.proc is None or self.proc.poll() is not None
            # rsync has written all it will before it ended: this read, after, gets the rest
            while True:
                try:
                    chunk = os.pread(fd, 1 << 20, offset)
                except InterruptedError:  # pragma: no cover - PEP 475 retries
                    continue
                if not chunk:
                    break
                offset += len(chunk)
                pending += chunk
                parts = _LINE_END.split(pending)
                pending = parts.pop()
                self.lines(parts)
            freed = free_read(fd, freed, offset)
            self.flush_progress()
            if asking and not done:
                self.ask_progress()
        if pending:
            self.line(pending.decode("utf-8", errors="replace"))

    def run(self, command: list[str], sparse_from: int = 0) -> int:
        """rsync ``command``; with ``sparse_from``, the first rsync skips the files over that many
        bytes and :func:`later_passes` send them, each pass only after one that succeeded and
        without a signal between them. One result for all (their figures summed)."""

        def forward(signum: int, frame: object) -> None:
            self.stopped = True
            if self.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signum)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, forward)
        version = rsync_version(command[0], self.asked)
        by_signal = version is not None and version >= PROGRESS_BY_SIGNAL_FROM
        extra = [] if by_signal else ["--info=progress2"]
        extra += [] if self.incremental(command[-1]) else ["--no-inc-recursive"]
        extra += [f"--max-size={sparse_from}", "--info=skip1"] if sparse_from > 0 else []
        rc, stderr = self.run_one(command[:1] + extra + command[1:], asking=by_signal)
        if rc in (0, 24):
            self.keep_synced(command[-1])
        passes = later_passes(command, command[-2], self.large) if self.large and rc in (0, 24) else []
        if passes:
            size = sum(_size(os.path.join(command[-2], path)) for path in self.large)
            self.later_from = (self.percent, self.bytes_done, size)
            counts = ", ".join(
                f"{count} {what}" + (" (with --sparse)" if what == "with holes" else "")
                for what, count, _ in passes
            )
            self.progress.write(
                level="DEBUG",
                message=f"{self.label}: {len(self.large)} files over {_human(sparse_from)} apart: {counts}",
            )
        totals, started = dict(self.stats), time.monotonic()
        for what, _count, argv in passes:
            if self.stopped:
                rc, stderr = 20, [f"stopped by a signal before the rsync of the large files {what}"]
                break
            self.later, self.bytes_before, self.stats, self.in_stats = True, self.bytes_done, {}, False
            later, stderr = self.run_one(argv[:1] + ["--info=progress2"] + argv[1:])  # few files
            for key, value in self.stats.items():
                totals[key] = totals.get(key, 0) + value
            rc = later if later not in (0, 24) else max(rc, later)
            if rc not in (0, 24):
                break
        if passes:
            took = f"{time.monotonic() - started:.2f} s"
            self.progress.write(level="DEBUG", message=f"{self.label}: the large files' rsyncs took {took}")
        self.stats = totals
        return self.finish(rc, stderr)

    def incremental(self, destination: str) -> bool:
        """Whether rsync lists the files as it sends them (its incremental recursion) rather than
        the whole list first: on the first sync of the folder to ``destination`` (most files to
        send: sending starts at once), and only with a total of its own (:attr:`estimate`). A sync
        after one that succeeded mostly checks files, which rsync does faster with the whole list."""
        if not self.estimate:  # no key scan, or a walk without sizes
            return False
        first = destination not in self.synced
        way = "as it sends (the first sync to this target)" if first else "first (mostly checking)"
        self.progress.write(level="DEBUG", message=f"{self.label}: rsync lists the files {way}")
        return first

    def keep_synced(self, destination: str) -> None:
        """Adds ``destination`` to the record of the folder's syncs after its rsync succeeded
        (never in a dry run); one that cannot be written is a DEBUG message."""
        if self.record is None or self.dry_run or destination in self.synced:
            return
        try:
            save_synced(*self.record, [*self.synced, destination])
        except OSError as exc:
            self.progress.write(level="DEBUG", message=f"{self.label}: record of syncs not saved: {exc}")

    def run_one(self, argv: list[str], asking: bool = False) -> tuple[int, list[str]]:
        """One rsync: its exit code and its last stderr lines. ``asking``: ask it for its progress
        (:meth:`ask_progress`); else it prints it itself (``--info=progress2``)."""
        try:
            output = output_file()
        except OSError as exc:
            return 1, [f"no file in memory for rsync's output: {exc}"]
        try:
            # the stderr reader of an earlier pass only reads a pipe (no lock the child needs)
            self.proc = proc = _popen(argv, stdout=output)
        except OSError as exc:
            os.close(output)
            return 127 if isinstance(exc, FileNotFoundError) else 1, [f"{argv[0]}: {exc}"]
        if self.stopped:  # the signal came while it started
            proc.terminate()
        self._catches = False
        self.stderr.clear()
        self.progress.write(percent=self._overall(self.percent), item=f"{self.label}: starting rsync")
        assert proc.stderr is not None
        errors = threading.Thread(
            target=self.read_stderr, args=(proc.stderr,), name="rsync-stderr", daemon=True
        )
        errors.start()
        ended = exit_watch(proc.pid)
        try:
            self.read_stdout(output, asking, ended)
        finally:
            os.close(output)
            if ended >= 0:
                os.close(ended)
        rc = proc.wait()
        errors.join(2)  # ssh (rsync's child) shares the pipe: never wait long for its end
        return rc, list(self.stderr)

    def finish(self, rc: int, stderr: list[str], error: str = "") -> int:
        """The end: the last progress, the result on stdout, the failure's reason on stderr."""
        if rc in (0, 24):
            self.percent = 100.0
            self.bytes_done = self.stats.get("Total transferred file size", self.bytes_done)
            self._progress_dirty = True
        if rc == 24:
            self.progress.write(
                level="WARNING", message=f"{self.label}: some files vanished on the source during the sync"
            )
        self.flush_progress(force=True)
        self.progress.close()
        result: dict[str, Any] = {
            "rc": rc,
            "files_transferred": self.stats.get("Number of regular files transferred", 0),
            "bytes": self.stats.get("Total transferred file size", 0),
            "deleted": self.stats.get("Number of deleted files", self.deleted_seen),
            "changes": self.changes,
            "sample": self.sample,
            "deletions": self.deletions,
            "dry_run": self.dry_run,
            "keys": self.keys,
        }
        if rc not in (0, 24):
            result["error"] = error or rsync_failure(rc, stderr)
            sys.stderr.write(result["error"] + "\n")  # the last line: the failed task's reason
            sys.stderr.flush()
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        return rc if rc >= 0 else 128 - rc

    def scan_keys(self, root: str, marker: str = "") -> tuple[list[str], list[str]]:
        """:func:`find_private_keys` with the walk cache of ``root`` in pc-switcher's state directory:
        read, and written when it changed (never by a dry-run); a cache that cannot be written is a
        DEBUG message, never a failure. Whether a directory of the walk holds an entry named
        ``marker``: :attr:`source_marked`."""
        state, root = state_dir(), root.rstrip("/") or "/"
        cache = WalkCache(load_cache(state, root, marker), time.time_ns() - RACY_NS, marker)
        keys, unreadable = find_private_keys(root, cache)
        self.source_marked = cache.marked or not marker
        self.estimate = max(0, cache.size) if cache.sized and cache.visited else 0
        self.record, self.synced = (state, root), load_synced(state, root)
        note = f"{cache.listed} of {cache.visited} directories listed"
        note += f", {_human(self.estimate)} in files" if self.estimate else ""
        if cache.dirty and not self.dry_run:
            try:
                save_cache(state, root, cache.new, marker)
            except OSError as exc:
                note += f"; walk cache not saved: {exc}"
        self.progress.write(level="DEBUG", message=f"{self.label}: key scan: {shown(note)}")
        return keys, unreadable

    def exclude_keys(self, root: str, command: list[str], marker: str = "") -> list[str]:
        """``command`` with a rule excluding each private key in the .ssh directories under ``root``
        before every other option (so before every other filter rule: rsync uses the first rule
        that matches). Each key is named in the log; the result lists them (the dry-run's list)."""
        keys, unreadable = self.scan_keys(root, marker)
        base = root.rstrip("/") + "/"
        self.keys = [shown(base + key) for key in keys + unreadable]
        for key in keys:
            self.progress.write(
                level="DEBUG", message=f"{self.label}: private key never synced: {shown(base + key)}"
            )
        for path in unreadable:
            self.progress.write(
                level="DEBUG",
                message=f"{self.label}: never synced: {shown(base + path)} "
                "(in .ssh and unreadable: it may be a private key)",
            )
        if self.keys:
            self.progress.write(
                level="INFO",
                message=f"{self.label}: {len(self.keys)} private keys in .ssh directories never synced "
                "(not sent, left as they are on the target)",
            )
        rules = ["--filter=" + exclude_rule(path) for path in keys + unreadable]
        return command[:1] + rules + command[1:]

    def look_for_markers(
        self, command: list[str], marker: str, python: str
    ) -> subprocess.Popen[bytes] | None:
        """Starts :func:`marker_check` on the target when ``command`` has the rule ``dir-merge
        MARKER`` (it looks there while the key scan walks the source); None when there is none to run."""
        check = marker_check(command, marker, python) if f"--filter=dir-merge {marker}" in command else None
        if check is None:
            return None
        try:
            proc = _popen(check[0], stdin=subprocess.PIPE)
            assert proc.stdin is not None
            with contextlib.suppress(OSError):  # a few bytes: the pipe holds them
                proc.stdin.write(check[1])
            with contextlib.suppress(OSError):
                proc.stdin.close()
            proc.stdin = None  # given: communicate() only reads
            return proc
        except OSError:
            return None

    def per_dir_filter(self, command: list[str], marker: str, look: subprocess.Popen[bytes]) -> list[str]:
        """``command`` without its rule ``dir-merge MARKER`` when no directory of the source (the key
        scan's walk) or of the target (``look``) holds an entry named ``marker``: rsync would read
        none. Else ``command`` as it is, also when the target could not be looked at. Says which."""
        if self.source_marked:
            look.terminate()  # not needed: the rule stays
            try:
                look.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                look.kill()
                look.communicate()
            found = "read: there are some on the source"
        else:
            out, err = look.communicate()
            if look.returncode == 0 and not out:
                found = "left out: there are none on either machine"
                command = [arg for arg in command if arg != f"--filter=dir-merge {marker}"]
            elif look.returncode == 0:
                found = "read: there are some on the target"
            else:
                why = (err.decode("utf-8", "replace").strip().splitlines() or [f"exit {look.returncode}"])[-1]
                found = f"read: the target could not be looked at ({shown(why)})"
        self.progress.write(
            level="DEBUG", message=f"{self.label}: per-directory filter files ({marker}) {found}"
        )
        return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="folder_sync_rsync", description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=float, default=0.0, help="overall percent when this rsync starts")
    parser.add_argument("--span", type=float, default=100.0, help="share of the overall percent")
    parser.add_argument("--label", default="rsync", help="name of the folder in messages")
    parser.add_argument("--report", type=int, default=200, help="changes kept in the result / logged")
    parser.add_argument("--dry-run", action="store_true", help="the rsync is a dry run (wording only)")
    parser.add_argument(
        "--scan-keys",
        metavar="ROOT",
        default="",
        help="exclude every private key in the .ssh directories under ROOT (rsync's source folder)",
    )
    parser.add_argument(
        "--sparse-from",
        type=int,
        default=0,
        metavar="BYTES",
        help="send the files over BYTES in passes of their own, those with holes with --sparse",
    )
    parser.add_argument(
        "--per-dir-filter",
        metavar="NAME",
        default="",
        help="leave out rsync's rule 'dir-merge NAME' when neither machine has a file NAME in the folder",
    )
    parser.add_argument(
        "--target-python",
        default="python3",
        metavar="PATH",
        help="the target's Python, which looks for the files of --per-dir-filter there",
    )
    parser.add_argument("rsync", nargs=argparse.REMAINDER, help="-- rsync ARGS...")
    args = parser.parse_args(argv)
    command = args.rsync[1:] if args.rsync[:1] == ["--"] else args.rsync
    if not command:
        parser.error("give the rsync command after --")
    wrapper = Wrapper(args)
    if args.scan_keys:
        where = clearing_rule(command)
        if where:  # a last guard: the rule would drop every never-sync rule
            return wrapper.finish(
                2,
                [],
                f"folder_sync: a filter rule that clears the rule list ({where}) would sync private keys "
                "and pc-switcher's state: remove it",
            )
        wrapper.asked = ask_version(command[0])  # answers while the key scan runs
        marker = args.per_dir_filter
        look = wrapper.look_for_markers(command, marker, args.target_python) if marker else None
        command = wrapper.exclude_keys(args.scan_keys, command, marker if look else "")
        if look is not None:
            command = wrapper.per_dir_filter(command, marker, look)
    return wrapper.run(command, args.sparse_from)


if __name__ == "__main__":
    sys.exit(main())
