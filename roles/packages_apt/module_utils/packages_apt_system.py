"""The packages_apt job's work on a machine: reading its facts, checking apt's view in a private apt
root, waiting for the dpkg lock, writing apt's files with a way back, and running apt-get.

Every command is an argv list (no shell); every package name, version and path reaching one has
passed the checks of ``packages_apt_plan``. The modules of the role (library/) import it as
``ansible.module_utils.packages_apt_system``. Python 3.8+, standard library only.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

try:  # as an Ansible module_utils file, and imported directly by the unit tests
    from ansible.module_utils import packages_apt_plan as plan_lib  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - the unit tests load the file beside this one
    import packages_apt_plan as plan_lib  # type: ignore[no-redef]

STATUS = "/var/lib/dpkg/status"
ARCH_FILE = "/var/lib/dpkg/arch"
EXTENDED_STATES = "/var/lib/apt/extended_states"
LISTS = "/var/lib/apt/lists"
MAX_RELEASE_BYTES = 16 << 20  # Debian's InRelease is ~150 KB; a bigger one is compared as missing
LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock", "/var/cache/apt/archives/lock")
# apt's and dpkg's environment: never a prompt, never a pager, messages apt's tests can read.
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "APT_LISTCHANGES_FRONTEND": "none", "LC_ALL": "C.UTF-8"}
# No cache files written by a read-only apt run (validate): the package cache is built in memory.
NO_CACHE = ["-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="]
DPKG_OPTIONS = ["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"]

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def run(argv: List[str], **kwargs: Any) -> "subprocess.CompletedProcess[str]":
    env = dict(os.environ, **APT_ENV)
    return subprocess.run(argv, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False, **kwargs)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------- facts


def _scan_file(path: str, problems: List[str], required: bool) -> Optional[bytes]:
    """The bytes of the apt file ``path``: None when it is absent (and not ``required``); a symlink,
    a non-regular file or an oversized one is a problem naming it."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if required:
            problems.append("{} is named by a source file but does not exist: add the key or fix Signed-By".format(path))
        return None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
        what = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        problems.append("{} is {}: the job copies regular files only; make it a regular file or remove it".format(path, what))
        return None
    if info.st_size > plan_lib.MAX_FILE_BYTES:
        problems.append("{} is larger than 1 MiB: not an apt source, pin or key file; remove it".format(path))
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except PermissionError:
        problems.append("{} cannot be read by this user: make it readable (apt needs that too) or sync as root".format(path))
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _apt_files(problems: List[str]) -> Dict[str, bytes]:
    """apt's sources, pins and keys on this machine: the single files, every file apt reads in the
    known directories, and the keys the sources name under /usr/share/keyrings."""
    found: Dict[str, bytes] = {}
    for path in plan_lib.SINGLE_FILES:
        data = _scan_file(path, problems, False)
        if data is not None:
            found[path] = data
    for dirname in sorted(plan_lib.DIR_NAMES):
        try:
            names = sorted(os.listdir(dirname))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if plan_lib.apt_reads(dirname, name):
                data = _scan_file(posixpath.join(dirname, name), problems, False)
                if data is not None:
                    found[posixpath.join(dirname, name)] = data
    for path in [p for p in found if plan_lib.kind(p) == "sources"]:
        for repo in plan_lib.repositories(path, found[path].decode("utf-8", "replace")):
            for key in repo["keys"]:
                problem = plan_lib.key_reference_problem(path, key)
                if problem:
                    problems.append(problem)
                elif key not in found:
                    data = _scan_file(key, problems, True)
                    if data is not None:
                        found[key] = data
    return found


def _owners(paths: List[str]) -> Dict[str, str]:
    """The package owning each path that dpkg knows (``dpkg-query -S``; diversions skipped)."""
    if not paths:
        return {}
    out = run(["dpkg-query", "-S"] + paths).stdout
    owners = {}
    for line in out.splitlines():
        if line.startswith(("diversion by", "local diversion")) or ": " not in line:
            continue
        packages, _, path = line.partition(": ")
        if path in paths:
            owners[path] = packages
    return owners


def _lists() -> Dict[str, Dict[str, Any]]:
    """apt's package lists by file name: a repository's Release file with its hash and ``Date``, the
    other files as ``{}`` (packages_apt_plan.lists_behind compares them)."""
    try:
        entries = [e for e in os.scandir(LISTS) if e.name != "lock" and e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return {}
    found: Dict[str, Dict[str, Any]] = {}
    for entry in entries:
        found[entry.name] = {}
        if entry.name.endswith(plan_lib.RELEASE_SUFFIXES) and entry.stat().st_size <= MAX_RELEASE_BYTES:
            with open(entry.path, "rb") as fh:
                data = fh.read()
            date = plan_lib.release_date(data.decode("utf-8", "replace"))
            found[entry.name] = {"sha256": hashlib.sha256(data).hexdigest(), "date": date}
    return found


def read_facts(side: str, contents: bool, audit: bool) -> Dict[str, Any]:
    """This machine's facts (see packages_apt_plan), ``problems`` prefixed with ``side``."""
    missing = [tool for tool in ("dpkg", "dpkg-query", "apt-get") if shutil.which(tool) is None]
    if missing:
        return {
            "problems": [
                "the {} has no {}: packages_apt syncs Debian-like systems only (apt and dpkg); turn the job off "
                "for this pair (jobs: packages_apt: false)".format(side, " or ".join(missing))
            ],
            "tools": False,
        }
    problems: List[str] = []
    native = run(["dpkg", "--print-architecture"]).stdout.strip()
    foreign = [a for a in _read(ARCH_FILE).split() if a != native]
    files = _apt_files(problems)
    owners = _owners(sorted(files))
    facts: Dict[str, Any] = {
        "tools": True,
        "native_arch": native,
        "foreign_archs": sorted(set(foreign)),
        "packages": plan_lib.packages_from_status(_read(STATUS), _read(EXTENDED_STATES), native),
        "files": {
            path: dict(
                {"sha256": hashlib.sha256(data).hexdigest(), "owner": owners.get(path)},
                **({"b64": base64.b64encode(data).decode()} if contents and path not in owners else {})
            )
            for path, data in files.items()
        },
        "lists": _lists(),
        "problems": ["on the {}: {}".format(side, p) for p in problems],
        "audit": run(["dpkg", "--audit"]).stdout.strip() if audit else "",
    }
    return facts


# --------------------------------------------------------------------------- the private apt root


def final_files(plan: Dict[str, Any], source: Dict[str, Any], target: Dict[str, Any]) -> Dict[str, bytes]:
    """apt's files as the target will have them after the sync: its own, minus the removed ones,
    plus the source's added and replaced ones."""
    changed = set(plan["files"]["add"] + plan["files"]["replace"])
    gone = set(plan["files"]["remove"])
    final = {}
    for path in target["files"]:
        if path not in changed and path not in gone:
            data = _scan_file(path, [], False)
            if data is not None:
                final[path] = data
    for path in changed:
        final[path] = base64.b64decode(source["files"][path]["b64"])
    return final


def _rewrite_keys(text: bytes, root: str, keys: List[str]) -> bytes:
    for key in sorted(keys, key=len, reverse=True):
        pattern = re.escape(key.encode()) + rb"(?![A-Za-z0-9_.+-])"
        text = re.sub(pattern, (root + key).encode().replace(b"\\", b"\\\\"), text)
    return text


def apt_root_options(root: str) -> List[str]:
    options = {
        "Dir::Etc::SourceList": root + plan_lib.SOURCES_LIST,
        "Dir::Etc::SourceParts": root + plan_lib.SOURCES_DIR,
        "Dir::Etc::Preferences": root + plan_lib.PREFERENCES,
        "Dir::Etc::PreferencesParts": root + plan_lib.PREFERENCES_DIR,
        "Dir::Etc::Trusted": root + plan_lib.TRUSTED,
        "Dir::Etc::TrustedParts": root + plan_lib.TRUSTED_DIR,
        "Dir::State::Lists": root + "/lists",
        "Dir::Cache": root + "/cache",
        "Dir::Cache::pkgcache": "",
        "Dir::Cache::srcpkgcache": "",
        "Debug::NoLocking": "1",
        "APT::Sandbox::User": "root",
    }
    return [arg for key, value in options.items() for arg in ("-o", "{}={}".format(key, value))]


def build_apt_root(root: str, final: Dict[str, bytes], archs: List[str]) -> List[str]:
    """A private apt root in ``root`` (the target's final sources, pins and keys; a copy of its
    package lists; its dpkg status read in place): the apt options that use it."""
    for sub in (plan_lib.SOURCES_DIR, plan_lib.PREFERENCES_DIR, plan_lib.TRUSTED_DIR) + plan_lib.KEY_DIRS:
        os.makedirs(root + sub, exist_ok=True)
    os.makedirs(root + "/lists/partial")
    os.makedirs(root + "/cache/archives/partial")
    keys = [p for p in final if plan_lib.kind(p) == "key"]
    for path, data in final.items():
        with open(root + path, "wb") as fh:
            fh.write(_rewrite_keys(data, root, keys) if plan_lib.kind(path) == "sources" else data)
    for name in os.listdir(LISTS) if os.path.isdir(LISTS) else []:
        source = posixpath.join(LISTS, name)
        if name != "lock" and os.path.isfile(source) and not os.path.islink(source):
            shutil.copy2(source, posixpath.join(root, "lists", name))
    return apt_root_options(root) + ["-o", "APT::Architectures=" + ",".join(archs)]


def _simulate_install(options: List[str], plan: Dict[str, Any], source: Dict[str, Any], settings: Dict[str, Any]) -> Dict[str, Any]:
    """apt's own answer to the plan's packages, in the apt world ``options`` set up."""
    result: Dict[str, Any] = {"problems": [], "install": [], "remove": []}
    result["upgrade"] = upgrades_now(plan["upgrade"], options)
    items = plan["install"] + result["upgrade"] + [key + "-" for key in plan["remove"]]
    if not items:
        return result
    done = run(["apt-get", "-s", "-q"] + options + install_flags() + ["install"] + items)
    if done.returncode != 0:
        result["problems"] = plan_lib.install_problems(plan_lib.apt_errors(done.stdout)) or [
            "apt-get cannot install the packages on the target: " + done.stdout.strip().splitlines()[-1]
        ]
        return result
    actions = plan_lib.simulation(done.stdout)
    result.update(actions)
    result["problems"] = extra_removal_problems(actions["remove"], plan, source, settings)
    removed = [key for key, _ in actions["remove"]]
    result["problems"] += plan_lib.removal_count_problems(removed, settings) if len(removed) > len(plan["remove"]) else []
    return result


def upgrades_now(upgrade: Dict[str, str], options: List[str]) -> List[str]:
    """The packages of ``upgrade`` (``{key: source version}``) whose candidate version on the target
    (``apt-cache policy``, in the apt world ``options`` set up) is the source's version."""
    if not upgrade:
        return []
    found = plan_lib.candidates(run(["apt-cache"] + options + ["policy"] + sorted(upgrade)).stdout)
    return sorted(key for key, version in upgrade.items() if found.get(key) == version)


def extra_removal_problems(removed: List[List[str]], plan: Dict[str, Any], source: Dict[str, Any], settings: Dict[str, Any]) -> List[str]:
    """apt removes more than the plan names (reverse dependencies, conflicts): refuse when one of
    those is on the source or protected."""
    problems = []
    target_packages = settings.get("_target_packages", {})
    for key, _ in removed:
        if key in plan["remove"]:
            continue
        if key in source["packages"]:
            problems.append(
                "apt would also remove {}, which the source has (the job removes {}): add what it needs to "
                "packages_apt.protected".format(key, ", ".join(plan["remove"]) or "nothing, it installs")
            )
            continue
        reason = plan_lib.protected_reason(key, target_packages.get(key, {}), settings.get("protected") or [])
        if reason:
            problems.append(
                "apt would also remove {} ({}; the job removes {}): add what it needs to packages_apt.protected".format(
                    key, reason, ", ".join(plan["remove"]) or "nothing, it installs"
                )
            )
    return problems


def install_flags() -> List[str]:
    return ["--allow-downgrades", "--allow-change-held-packages"] + DPKG_OPTIONS


def simulate(plan: Dict[str, Any], source: Dict[str, Any], target: Dict[str, Any], settings: Dict[str, Any]) -> Dict[str, Any]:
    """The check of validate: when the sync will run ``apt-get update`` (the plan's ``update_reason``: apt
    files or architectures change, or the target's lists are older than the source's), the source's
    repositories in a private apt root with ``apt-get update``, then ``apt-get -s install`` of the
    plan's packages; else that simulation on the target's own lists.
    Changes nothing outside a temp dir."""
    settings = dict(settings, _target_packages=target["packages"])
    archs_change = plan["archs"]["add"] or plan["archs"]["remove"]
    if not plan_lib.file_changes(plan) and not archs_change and not plan["update_reason"]:
        return _simulate_install(NO_CACHE + ["-o", "Debug::NoLocking=1"], plan, source, settings)
    root = tempfile.mkdtemp(prefix="packages-apt-")
    try:
        final = final_files(plan, source, target)
        archs = [target["native_arch"]] + list(source["foreign_archs"])
        options = build_apt_root(root, final, archs)
        done = run(["apt-get", "-q"] + options + ["update"])
        errors = plan_lib.apt_errors(done.stdout)
        if done.returncode != 0 or errors:
            return {"problems": update_problems(errors or [done.stdout.strip()], final), "install": [], "remove": [], "upgrade": []}
        return _simulate_install(options, plan, source, settings)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def update_problems(errors: List[str], final: Dict[str, bytes]) -> List[str]:
    """One line per failing repository, naming its file, from apt-get update's error lines (apt's
    ``E:`` line when it has one for the repository, else its ``Err:`` line); apt's lines when none
    names a repository."""
    repos = {
        path: plan_lib.repositories(path, data.decode("utf-8", "replace"))
        for path, data in final.items()
        if plan_lib.kind(path) == "sources"
    }
    by_repo: Dict[str, str] = {}
    for line in errors:
        where = plan_lib.repository_of(line, repos)
        if where and (where not in by_repo or line.startswith("E: ")):
            by_repo[where] = line
    if not by_repo:
        return ["apt-get update fails: " + line for line in errors[:3]]
    return ["apt-get update fails for {}: {}".format(where, line) for where, line in by_repo.items()]


# --------------------------------------------------------------------------- the dpkg lock


def lock_holder(path: str) -> Optional[int]:
    """The pid holding a write lock on ``path`` (0 when unknown), None when it is free or absent."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        query = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        kind, _, _, _, pid = struct.unpack("hhqqi", answer)
        return None if kind == fcntl.F_UNLCK else max(pid, 0)
    finally:
        os.close(fd)


def describe(pid: int) -> str:
    if pid <= 0:
        return "a process that cannot be named (an open file description lock)"
    command = _read("/proc/{}/cmdline".format(pid)).replace("\0", " ").strip()
    return "pid {} ({})".format(pid, command or "gone")


def wait_for_lock(timeout: int, say: Callable[[str], None]) -> Optional[str]:
    """Wait until no process holds dpkg's or apt's locks, at most ``timeout`` seconds; the reason
    (who holds which lock) when they are still held, else None."""
    deadline = time.monotonic() + timeout
    told = False
    while True:
        held = [(path, pid) for path, pid in ((p, lock_holder(p)) for p in LOCKS) if pid is not None]
        if not held:
            return None
        path, pid = held[0]
        if time.monotonic() >= deadline:
            return "{} is held by {} for more than packages_apt.lock_timeout ({} s): wait for it to finish, or raise packages_apt.lock_timeout".format(
                path, describe(pid), timeout
            )
        if not told:
            say("waiting for {} held by {}".format(path, describe(pid)))
            told = True
        time.sleep(1)


# --------------------------------------------------------------------------- writing apt's files


def _check_parents(path: str) -> None:
    """Every directory above ``path`` is a real directory (not a symlink); the last one is made
    (0755) when missing."""
    dirname = posixpath.dirname(path)
    parts = dirname.strip("/").split("/")
    for depth in range(1, len(parts) + 1):
        here = "/" + "/".join(parts[:depth])
        try:
            info = os.lstat(here)
        except FileNotFoundError:
            if depth != len(parts):
                raise
            os.mkdir(here, 0o755)
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise OSError(errno.ENOTDIR, "{} is not a directory (a symlink?): the job writes through real directories only".format(here))


def write_file(path: str, data: Optional[bytes]) -> None:
    """Put ``data`` at ``path`` atomically (mode 0644, root's), or remove ``path`` when ``data`` is
    None. ``path`` must pass packages_apt_plan.path_problem; a symlink there is replaced, never followed."""
    problem = plan_lib.path_problem(path)
    if problem:
        raise ValueError(problem)
    if data is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    _check_parents(path)
    fd, tmp = tempfile.mkstemp(prefix=".pcswitcher-", suffix=".tmp", dir=posixpath.dirname(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def apply_files(changes: Dict[str, Optional[bytes]], update: bool, lock_timeout: int) -> Tuple[bool, Optional[str]]:
    """Write the apt files (``None``: remove), then one ``apt-get update``; when it fails, every file
    is put back as it was. (changed, the failure naming the repository or None)."""
    backup: Dict[str, Optional[bytes]] = {}
    for path in sorted(changes):
        backup[path] = _scan_file(path, [], False) if os.path.lexists(path) else None
    try:
        for path in sorted(changes):
            write_file(path, changes[path])
    except BaseException:
        restore(backup)
        raise
    if not update:
        return bool(changes), None
    done = run(["apt-get", "-q", "-o", "DPkg::Lock::Timeout={}".format(lock_timeout), "update"])
    errors = plan_lib.apt_errors(done.stdout)
    if done.returncode == 0 and not errors:
        return bool(changes), None
    restore(backup)
    final = {p: d for p, d in ((p, _scan_file(p, [], False)) for p in _current_sources()) if d is not None}
    final.update({p: d for p, d in changes.items() if d is not None and plan_lib.kind(p) == "sources"})
    reasons = update_problems(errors or [done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "exit {}".format(done.returncode)], final)
    return False, "; ".join(reasons) + " (every apt file the job changed is back as it was)"


def _current_sources() -> List[str]:
    paths = [plan_lib.SOURCES_LIST] if os.path.isfile(plan_lib.SOURCES_LIST) else []
    try:
        names = os.listdir(plan_lib.SOURCES_DIR)
    except FileNotFoundError:
        names = []
    return paths + [posixpath.join(plan_lib.SOURCES_DIR, n) for n in sorted(names) if plan_lib.apt_reads(plan_lib.SOURCES_DIR, n)]


def restore(backup: Dict[str, Optional[bytes]]) -> None:
    for path, data in backup.items():
        write_file(path, data)


# --------------------------------------------------------------------------- dpkg repair and apt-get runs


def half_installed() -> List[str]:
    """The packages an interrupted unpack left half-installed (dpkg's state ``half-installed`` or its
    ``reinstreq`` flag): ``dpkg --configure -a`` does not finish them, installing them again does."""
    native = run(["dpkg", "--print-architecture"]).stdout.strip()
    found = []
    for fields in plan_lib.stanzas(_read(STATUS)):
        _want, flag, state = (fields.get("status", "").split() + ["", "", ""])[:3]
        if "package" in fields and (state == "half-installed" or (flag == "reinstreq" and state != "not-installed")):
            found.append(plan_lib.package_key(fields["package"], fields.get("architecture", ""), native))
    return sorted(found)


def _configure_all() -> "subprocess.CompletedProcess[str]":
    return run(["dpkg", "--force-confdef", "--force-confold", "--configure", "-a"])


def _configure_failed(done: "subprocess.CompletedProcess[str]") -> RuntimeError:
    return RuntimeError("dpkg --configure -a failed: " + (done.stdout.strip().splitlines() or ["exit {}".format(done.returncode)])[-1])


def repair(lock_timeout: int) -> Tuple[bool, str]:
    """What an interrupted dpkg run left, when ``dpkg --audit`` finds it: ``dpkg --configure -a``
    (unpacked, half-configured packages), then ``apt-get install --reinstall`` of the half-installed
    ones (their candidate version: the sync's install sets the source's after). dpkg refuses to
    configure a package with the ``reinstreq`` flag ("in a very bad inconsistent state"): when
    ``--configure -a`` failed and there are such packages, it runs once more after they are
    installed again. (repaired, what)."""
    audit = run(["dpkg", "--audit"]).stdout.strip()
    if not audit:
        return False, ""
    done = _configure_all()
    again = half_installed()
    if done.returncode != 0 and not again:
        raise _configure_failed(done)
    what = "repaired an interrupted dpkg run (dpkg --configure -a"
    if again:
        argv = ["apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout={}".format(lock_timeout), "install", "--reinstall"]
        installed = run(argv + install_flags() + again)
        if installed.returncode != 0:
            reason = "; ".join(plan_lib.apt_errors(installed.stdout)) or installed.stdout.strip()[-400:]
            raise RuntimeError("{} half-installed by an interrupted dpkg run, and installing it again failed: {}".format(", ".join(again), reason))
        what += "; apt-get install --reinstall " + " ".join(again)
        if done.returncode != 0:
            done = _configure_all()
            if done.returncode != 0:
                raise _configure_failed(done)
            what += "; dpkg --configure -a"
    return True, what + "); dpkg --audit said: " + " ".join(audit.split())[:400]


def add_architectures(archs: List[str]) -> bool:
    """``dpkg --add-architecture`` for each of ``archs`` the machine lacks: whether one was added."""
    have = set(_read(ARCH_FILE).split()) | {run(["dpkg", "--print-architecture"]).stdout.strip()}
    added = False
    for arch in archs:
        if arch not in have:
            done = run(["dpkg", "--add-architecture", arch])
            if done.returncode != 0:
                raise RuntimeError("dpkg --add-architecture {} failed: {}".format(arch, done.stdout.strip()))
            added = True
    return added


def log_line(messages: List[str]) -> Callable[[str], None]:
    """A function that logs a line now (a progress record with a message, shown by pc-switcher
    within a second) and keeps it in ``messages``: for what happens while a step waits."""
    write = _progress_writer()

    def say(text: str) -> None:
        messages.append(text)
        write({"level": "WARNING", "message": text})

    return say


def _progress_writer() -> Callable[[Dict[str, Any]], None]:
    path = os.environ.get("PCSWITCHER_PROGRESS", "")

    def write(record: Dict[str, Any]) -> None:
        if path:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    return write


def apt_get(action: str, items: List[str], lock_timeout: int, total: int = 0) -> Dict[str, Any]:
    """One ``apt-get install`` or ``apt-get remove`` (never purge, never autoremove) of ``items``,
    "N of M PACKAGE" progress lines from apt's Status-Fd to $PCSWITCHER_PROGRESS. M is ``total``
    (the count of validate's simulation), else apt's simulation is asked first. Returns what apt did
    (its "Setting up"/"Removing" lines) and its output."""
    base = ["apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout={}".format(lock_timeout)] + install_flags()
    if total <= 0:
        sim = run(base + ["-s", action] + items)
        if sim.returncode != 0:
            problems = plan_lib.install_problems(plan_lib.apt_errors(sim.stdout))
            return {"failed": True, "msg": "; ".join(problems) or sim.stdout.strip()}
        actions = plan_lib.simulation(sim.stdout)
        total = len(actions["install"]) + len(actions["remove"])
    code, output = _run_with_progress(base + [action] + items, total)
    if code != 0:
        errors = plan_lib.apt_errors(output)
        reason = "; ".join(errors) or output.strip()[-400:]
        return {"failed": True, "msg": "apt-get {} failed: {}".format(action, reason), "output": output[-4000:]}
    return {"failed": False, "actions": plan_lib.performed(output), "output": output[-4000:]}


def _run_with_progress(argv: List[str], total: int) -> Tuple[int, str]:
    """Run apt-get with ``APT::Status-Fd`` on a pipe, turning its lines into progress records."""
    write = _progress_writer()
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.Popen(
            argv[:1] + ["-o", "APT::Status-Fd={}".format(write_fd)] + argv[1:],
            env=dict(os.environ, **APT_ENV), stdout=out, stderr=subprocess.STDOUT, pass_fds=(write_fd,), text=True,
        )
        os.close(write_fd)
        seen: List[str] = []
        with os.fdopen(read_fd, "r", errors="replace") as status:
            for line in status:
                record = plan_lib.progress_item(line, seen, total)
                if record:
                    write(record)
        code = proc.wait()
        out.seek(0)
        return code, out.read()
