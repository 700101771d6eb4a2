"""The packages_apt job's pure logic: parsing apt/dpkg files, checking names, and the plan.

No I/O here: everything takes text or the facts dicts that ``packages_apt_system.read_facts`` builds,
so the unit tests (tests/unit/test_packages_apt_plan.py) run it on fixture data. The modules of the
role (library/) import it as ``ansible.module_utils.packages_apt_plan``. Python 3.8+, standard
library only.

Facts (one machine)::

    {"native_arch": "amd64", "foreign_archs": ["i386"],
     "packages": {"pcs-a": {"version": "1.0", "arch": "all", "manual": True, "hold": False,
                            "essential": False, "priority": "optional", "state": "installed"}, ...},
     "files": {"/etc/apt/sources.list.d/x.sources": {"sha256": "...", "owner": None, "b64": "..."}},
     "lists": {"deb.debian.org_debian_dists_bookworm_InRelease": {"sha256": "...", "date": 1733300000},
               "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages": {}, ...},
     "problems": ["..."], "audit": "", "tools": {"dpkg": True, "apt-get": True}}

A package's key is its name, or ``name:arch`` when its architecture is neither the machine's native
one nor ``all`` (what ``apt-mark showmanual`` prints).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import fnmatch
import posixpath
import re
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

# --------------------------------------------------------------------------- names (Debian policy)

# Policy 5.6.1: lower case letters, digits, '+', '-', '.'; at least two characters; starts alphanumeric.
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+\Z")
# dpkg-architecture names: lower case letters, digits and '-'.
ARCH_NAME = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
# Policy 5.6.12: [epoch:]upstream[-revision]; upstream starts with a digit.
VERSION = re.compile(r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]*\Z")


def package_key_problem(key: str) -> Optional[str]:
    """Why ``key`` (``name`` or ``name:arch``) is not a Debian package name, or None."""
    name, _, arch = key.partition(":")
    if not PACKAGE_NAME.match(name) or (arch and not ARCH_NAME.match(arch)):
        return "{!r} is not a Debian package name (lower case letters, digits, '+', '-', '.', optional ':arch')".format(
            key
        )
    return None


def version_problem(version: str) -> Optional[str]:
    if not VERSION.match(version or ""):
        return "{!r} is not a Debian version ([epoch:]upstream[-revision], starting with a digit)".format(version)
    return None


# --------------------------------------------------------------------------- apt's files

SOURCES_LIST = "/etc/apt/sources.list"
SOURCES_DIR = "/etc/apt/sources.list.d"
PREFERENCES = "/etc/apt/preferences"
PREFERENCES_DIR = "/etc/apt/preferences.d"
TRUSTED = "/etc/apt/trusted.gpg"
TRUSTED_DIR = "/etc/apt/trusted.gpg.d"
KEYRINGS_DIR = "/etc/apt/keyrings"
SHARE_KEYRINGS_DIR = "/usr/share/keyrings"
KEY_DIRS = (KEYRINGS_DIR, SHARE_KEYRINGS_DIR, TRUSTED_DIR)
# Directories the job reads whole, and the names apt itself reads in each (apt ignores the rest:
# so does the job). Name characters are apt's own: letters, digits, '_', '-', '.'.
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
DIR_NAMES = {
    SOURCES_DIR: re.compile(_NAME + r"\.(list|sources)\Z"),
    PREFERENCES_DIR: re.compile(r"(?:[A-Za-z0-9_-]+|" + _NAME + r"\.pref)\Z"),
    TRUSTED_DIR: re.compile(_NAME + r"\.(gpg|asc)\Z"),
    KEYRINGS_DIR: re.compile(_NAME + r"\.(gpg|asc|pgp)\Z"),
}
# Keys named by Signed-By: a key file directly in one of KEY_DIRS, with a plain name.
KEY_NAME = re.compile(_NAME + r"\.(gpg|asc|pgp)\Z")
SINGLE_FILES = (SOURCES_LIST, PREFERENCES, TRUSTED)
MAX_FILE_BYTES = 1 << 20  # an apt source, pin or key file is a few KiB


def apt_reads(dirname: str, name: str) -> bool:
    """Whether apt reads the file ``name`` in the job's directory ``dirname`` (else the job ignores it)."""
    pattern = DIR_NAMES.get(dirname)
    return bool(pattern and pattern.match(name))


def path_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a place the job may write (None when it is): one of the single files,
    or a name apt reads directly in one of the known directories, or a key file in a key dir."""
    if not isinstance(path, str) or posixpath.normpath(path) != path:
        return "{!r} is not a normal absolute path".format(path)
    if path in SINGLE_FILES:
        return None
    dirname, name = posixpath.split(path)
    if apt_reads(dirname, name) or (dirname in KEY_DIRS and KEY_NAME.match(name)):
        return None
    return "{} is not an apt source, pin or key file the job writes (a plain name directly in {})".format(
        path, ", ".join((SOURCES_DIR, PREFERENCES_DIR) + KEY_DIRS)
    )


def kind(path: str) -> str:
    """``sources``, ``pin`` or ``key`` for a checked path."""
    if path == SOURCES_LIST or path.startswith(SOURCES_DIR + "/"):
        return "sources"
    if path == PREFERENCES or path.startswith(PREFERENCES_DIR + "/"):
        return "pin"
    return "key"


# --------------------------------------------------------------------------- deb822 and sources


def stanzas(text: str) -> Iterable[Dict[str, str]]:
    """The paragraphs of a deb822 text (dpkg's status, apt's extended_states, .sources files):
    field names lower-cased, continuation lines joined with newlines, '#' comment lines dropped."""
    fields: Dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, None
        elif line.startswith("#"):
            continue
        elif line[0] in " \t" and last is not None:
            fields[last] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            last = key.strip().lower()
            fields[last] = value.strip()
    if fields:
        yield fields


def repositories(path: str, text: str) -> List[Dict[str, Any]]:
    """The repositories a sources file declares: ``{"uris": [...], "suites": [...], "keys": [paths]}``
    (deb and deb-src, enabled or not: each is carried as written). ``keys`` are the Signed-By values
    that are file paths; fingerprints and inline keys name no file."""
    found = []
    if path.endswith(".sources"):
        for fields in stanzas(text):
            signed = fields.get("signed-by", "")
            keys = [] if "BEGIN PGP" in signed else [k for k in re.split(r"[\s,]+", signed) if k.startswith("/")]
            found.append({"uris": fields.get("uris", "").split(), "suites": fields.get("suites", "").split(), "keys": keys})
        return found
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        match = re.match(r"(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)", line)
        if not match:
            continue
        keys: List[str] = []
        for option in (match.group(2) or "").split():
            name, _, value = option.partition("=")
            if name.lower() in ("signed-by", "signed-by+"):
                keys += [k for k in value.split(",") if k.startswith("/")]
        found.append({"uris": [match.group(3)], "suites": [match.group(4)], "keys": keys})
    return found


def key_reference_problem(source_file: str, key: str) -> Optional[str]:
    dirname, name = posixpath.split(key)
    if posixpath.normpath(key) != key or dirname not in KEY_DIRS or not KEY_NAME.match(name):
        return "{} names the key {!r} (Signed-By), which is not a key file directly in {}: move the key there".format(
            source_file, key, " or ".join(KEY_DIRS)
        )
    return None


# --------------------------------------------------------------------------- dpkg's status

PRESENT_STATES = frozenset(
    ("installed", "half-installed", "unpacked", "half-configured", "triggers-awaited", "triggers-pending")
)


def package_key(name: str, arch: str, native: str) -> str:
    return name if arch in ("", "all", native) else "{}:{}".format(name, arch)


def packages_from_status(status: str, extended: str, native: str) -> Dict[str, Dict[str, Any]]:
    """Packages present in dpkg's status file (``/var/lib/dpkg/status``), with apt's auto marks
    (``/var/lib/apt/extended_states``): what ``apt-mark showmanual/showauto/showhold`` read."""
    auto: Set[str] = set()
    for fields in stanzas(extended):
        if fields.get("auto-installed") == "1" and "package" in fields:
            auto.add(package_key(fields["package"], fields.get("architecture", ""), native))
    packages = {}
    for fields in stanzas(status):
        want, _, state = (fields.get("status", "").split() + ["", "", ""])[:3]
        if state not in PRESENT_STATES or "package" not in fields:
            continue
        key = package_key(fields["package"], fields.get("architecture", ""), native)
        packages[key] = {
            "version": fields.get("version", ""),
            "arch": fields.get("architecture", ""),
            "manual": key not in auto,
            "hold": want == "hold",
            "essential": fields.get("essential", "").lower() == "yes",
            "priority": fields.get("priority", "").lower(),
            "state": state,
        }
    return packages


# --------------------------------------------------------------------------- the plan

DEFAULT_PROTECTED = (
    "linux-image-*", "linux-headers-*", "linux-modules-*", "linux-firmware*", "linux-generic*",
    "linux-signed-*", "linux-libc-dev", "firmware-*", "*-firmware", "*-microcode", "grub*", "shim*",
    "systemd-boot*", "efibootmgr", "initramfs-tools*", "nvidia-*", "libnvidia-*", "*-nvidia-*",
    "xserver-xorg-video-*", "openssh-server", "python3", "rsync", "sudo", "btrfs-progs",
)  # fmt: skip


def protected_reason(key: str, package: Dict[str, Any], patterns: Iterable[str]) -> Optional[str]:
    """Why the target's package ``key`` is never removed (None when it may be)."""
    name = key.partition(":")[0]
    if package.get("essential"):
        return "Essential: yes"
    if package.get("priority") == "required":
        return "Priority: required"
    for pattern in patterns:
        if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(key, pattern):
            return "protected by {!r}".format(pattern)
    return None


def _files_plan(source: Dict[str, Any], target: Dict[str, Any], protected_sources: List[str]) -> Dict[str, Any]:
    """Which apt files the target gets (add, replace), loses (remove), and keeps because dpkg owns
    them (on either side) or ``protected_sources`` names them."""
    src, tgt = source["files"], target["files"]
    plan: Dict[str, List[str]] = {"add": [], "replace": [], "remove": [], "owned": [], "protected": []}
    for path in sorted(src):
        if src[path].get("owner"):
            continue  # dpkg's: the package brings it
        if path not in tgt:
            plan["add"].append(path)
        elif tgt[path].get("owner"):
            plan["owned"].append(path)
        elif tgt[path]["sha256"] != src[path]["sha256"]:
            plan["replace"].append(path)
    for path in sorted(tgt):
        if path in src or tgt[path].get("owner") or path.startswith(SHARE_KEYRINGS_DIR + "/"):
            continue
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in protected_sources):
            plan["protected"].append(path)
        else:
            plan["remove"].append(path)
    return plan


def _install_plan(source: Dict[str, Any], target: Dict[str, Any]) -> Tuple[List[str], Dict[str, str]]:
    """The source's manual packages missing on the target (held ones as ``name=version``, also when
    the target has another version), and the manual ones present in another version
    (``{key: source version}``: installed when that version is the target's candidate)."""
    install, upgrade = [], {}
    tgt = target["packages"]
    for key, package in sorted(source["packages"].items()):
        have = tgt.get(key)
        if package["hold"] and (have is None or have["version"] != package["version"]):
            install.append("{}={}".format(key, package["version"]))
        elif package["manual"] and have is None:
            install.append(key)
        elif package["manual"] and have["version"] != package["version"]:
            upgrade[key] = package["version"]
    return install, upgrade


def _removal_plan(source: Dict[str, Any], target: Dict[str, Any], protected: List[str]) -> Tuple[List[str], Dict[str, str]]:
    """Manual packages of the target that the source does not have: to remove, or kept (why)."""
    remove, kept = [], {}
    for key, package in sorted(target["packages"].items()):
        if not package["manual"] or key in source["packages"]:
            continue
        reason = protected_reason(key, package, protected)
        if reason:
            kept[key] = reason
        else:
            remove.append(key)
    return remove, kept


def _marks_and_holds(source: Dict[str, Any], target: Dict[str, Any], gone: Set[str], coming: Set[str]) -> Dict[str, List[str]]:
    src, tgt = source["packages"], target["packages"]
    both = sorted(key for key in src if key in tgt and key not in gone)
    return {
        "manual": [k for k in both if src[k]["manual"] and not tgt[k]["manual"] and k not in coming],
        # installed by name now (a held one at its version) makes a package manual: auto again
        "auto": sorted(k for k in src if not src[k]["manual"] and (k in coming or (k in both and tgt[k]["manual"]))),
        # apt-get install of a held package releases its hold: one installed now is held again
        "hold": sorted(k for k in src if src[k]["hold"] and (k in coming or (k in tgt and not tgt[k]["hold"]))),
        "unhold": sorted(k for k in tgt if tgt[k]["hold"] and k not in gone and not (k in src and src[k]["hold"])),
    }


def _arch_plan(source: Dict[str, Any], target: Dict[str, Any], gone: Set[str]) -> Dict[str, List[str]]:
    """Foreign architectures to add, and to remove once the target has no package of them left
    (dpkg refuses before); those still in use are ``kept``."""
    src, tgt = set(source["foreign_archs"]), set(target["foreign_archs"])
    plan: Dict[str, List[str]] = {"add": sorted(src - tgt), "remove": [], "kept": []}
    for arch in sorted(tgt - src):
        used = any(p["arch"] == arch and k not in gone for k, p in target["packages"].items())
        plan["kept" if used else "remove"].append(arch)
    return plan


def _names_problems(source: Dict[str, Any]) -> List[str]:
    problems = []
    for key, package in sorted(source["packages"].items()):
        problem = package_key_problem(key) or version_problem(package["version"])
        if problem:
            problems.append("the source's package {}".format(problem))
    for arch in source["foreign_archs"]:
        if not ARCH_NAME.match(arch):
            problems.append("the source's foreign architecture {!r} is not an architecture name".format(arch))
    return problems


def source_file_problems(source: Dict[str, Any]) -> List[str]:
    """The source's apt files checked again where they are used (the target's module trusts no
    input): each path on the allowlist, each key a sources file names inside the key dirs."""
    problems = []
    for path, info in sorted(source.get("files", {}).items()):
        problem = path_problem(path)
        if problem:
            problems.append("the source's " + problem)
            continue
        if info.get("owner") or kind(path) != "sources":
            continue
        try:
            text = base64.b64decode(info.get("b64") or "", validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            problems.append("the source's {} came without its content".format(path))
            continue
        for repo in repositories(path, text):
            problems += [p for p in (key_reference_problem(path, key) for key in repo["keys"]) if p]
    return problems


def make_plan(source: Dict[str, Any], target: Dict[str, Any], settings: Dict[str, Any]) -> Dict[str, Any]:
    """What the sync changes on the target, from both machines' facts and the job's settings
    (``remove``, ``max_removals``, ``protected``, ``protected_sources``). ``problems`` lists what
    stops the job (validation fails on any); the rest is the work in the order the sync does it."""
    problems = list(source.get("problems", [])) + list(target.get("problems", []))
    if source.get("native_arch") and target.get("native_arch") and source["native_arch"] != target["native_arch"]:
        problems.append(
            "the source's architecture is {} and the target's {}: packages_apt syncs machines of one architecture".format(
                source["native_arch"], target["native_arch"]
            )
        )
    problems += _names_problems(source) + [p for p in source_file_problems(source) if p not in problems]
    install, upgrade = _install_plan(source, target)
    remove, kept = _removal_plan(source, target, list(settings.get("protected") or []))
    report_only = [] if settings.get("remove", True) else remove
    remove = remove if settings.get("remove", True) else []
    gone = set(remove)
    coming = {item.partition("=")[0] for item in install}
    plan = {
        "problems": problems,
        "files": _files_plan(source, target, list(settings.get("protected_sources") or [])),
        "archs": _arch_plan(source, target, gone),
        "install": install,
        "upgrade": upgrade,
        "remove": remove,
        "not_removed": report_only,
        "protected_kept": kept,
        "audit": target.get("audit", ""),
    }
    plan.update(_marks_and_holds(source, target, gone, coming))
    changed = plan["files"]["add"] + plan["files"]["replace"]
    plan["writes"] = dict(
        [(path, source["files"][path].get("b64")) for path in changed] + [(path, None) for path in plan["files"]["remove"]]
    )
    plan["problems"] += removal_count_problems(remove, settings)
    plan["work"] = has_work(plan)
    plan["update_reason"] = update_reason(plan, source, target)
    plan["steps"] = steps(plan)
    return plan


def update_reason(plan: Dict[str, Any], source: Dict[str, Any], target: Dict[str, Any]) -> str:
    """Why the sync runs ``apt-get update`` before it installs; ``""``: the target's package lists
    are as new as the source's (``lists_behind``), so it knows every version the source has seen."""
    if file_changes(plan):
        return "the apt files change"
    if plan["archs"]["add"]:
        return "architectures are added"
    if not (plan["install"] or plan["upgrade"]):
        return ""  # nothing to install: the lists are not read
    source_lists = source.get("lists") or {}
    if not source_lists:
        return "the source has no package lists to compare with"
    behind = lists_behind(source_lists, target.get("lists") or {})
    if behind:
        return "the target's package lists are older than the source's ({} of {} files)".format(
            len(behind), len(source_lists)
        )
    return ""


def lists_behind(source: Dict[str, Dict[str, Any]], target: Dict[str, Dict[str, Any]]) -> List[str]:
    """The source's list files the target lacks or has older. A repository's ``InRelease`` or
    ``Release`` (``{"sha256", "date"}``) is as new when its content is the same or its ``Date`` is
    not earlier; its other files (indexes, translations) need only be there, as their hashes are in
    the Release file. A file no Release file of the source covers counts as behind."""
    releases = [name for name in source if name.endswith(RELEASE_SUFFIXES)]
    prefixes = tuple(name[: name.rindex("_") + 1] for name in releases)
    behind = []
    for name, info in sorted(source.items()):
        mine = target.get(name)
        if mine is None:
            behind.append(name)
        elif name in releases:
            same = info.get("sha256") is not None and mine.get("sha256") == info.get("sha256")
            if not same and (mine.get("date") is None or info.get("date") is None or mine["date"] < info["date"]):
                behind.append(name)
        elif not name.startswith(prefixes):
            behind.append(name)
    return behind


RELEASE_SUFFIXES = ("_InRelease", "_Release")
_DATE = re.compile(r"^Date:[ \t]*(.+?)[ \t]*$", re.MULTILINE)


def release_date(text: str) -> Optional[int]:
    """The ``Date`` of a Release or InRelease file, in seconds since the epoch (None: none or bad)."""
    found = _DATE.search(text)
    if not found:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(found.group(1)).timestamp())
    except (TypeError, ValueError, IndexError):
        return None


def steps(plan: Dict[str, Any]) -> Dict[str, bool]:
    """Which tasks of the sync run (the role's ``when:`` conditions): ``apply``, the one module run
    that changes the target (with any change, or to repair an interrupted dpkg run); ``lists``,
    whether this sync needs the package lists (it installs, or apt files or architectures change)."""
    lists = bool(file_changes(plan) or plan["archs"]["add"] or plan["install"] or plan["upgrade"])
    return {"apply": bool(plan["work"] or plan["audit"]), "lists": lists}


def removal_count_problems(remove: List[str], settings: Dict[str, Any]) -> List[str]:
    limit = settings.get("max_removals", 20)
    if len(remove) <= limit:
        return []
    return [
        "{} packages would be removed, more than packages_apt.max_removals ({}): {}; raise packages_apt.max_removals, "
        "add patterns to packages_apt.protected or set packages_apt.remove to false".format(
            len(remove), limit, ", ".join(remove)
        )
    ]


def file_changes(plan: Dict[str, Any]) -> List[str]:
    files = plan["files"]
    return files["add"] + files["replace"] + files["remove"]


def has_work(plan: Dict[str, Any]) -> bool:
    """Whether the sync changes anything (else every task of it is skipped: a no-op)."""
    keys = ("install", "upgrade", "remove", "manual", "auto", "hold", "unhold")
    return bool(file_changes(plan) or plan["archs"]["add"] or plan["archs"]["remove"] or any(plan[k] for k in keys))


# --------------------------------------------------------------------------- apt's own output


def simulation(output: str) -> Dict[str, List[List[str]]]:
    """``apt-get -s install``'s actions: ``{"install": [[key, version], ...], "remove": [[key, old]]}``."""
    found: Dict[str, List[List[str]]] = {"install": [], "remove": []}
    for line in output.splitlines():
        inst = re.match(r"Inst (\S+) (?:\[[^\]]*\] )?\((\S+)", line)
        remv = re.match(r"Remv (\S+)(?: \[([^\]]*)\])?", line)
        if inst:
            found["install"].append([inst.group(1), inst.group(2)])
        elif remv:
            found["remove"].append([remv.group(1), remv.group(2) or ""])
    return found


def performed(output: str) -> Dict[str, List[List[str]]]:
    """What a real ``apt-get install/remove`` did, from dpkg's lines in its output: ``Setting up
    NAME (VERSION) ...`` and ``Removing NAME (VERSION) ...`` (``LC_ALL=C.UTF-8``)."""
    found: Dict[str, List[List[str]]] = {"install": [], "remove": []}
    for line in output.splitlines():
        match = re.match(r"(Setting up|Removing) (\S+) \((\S+)\)", line)
        if match:
            found["install" if match.group(1) == "Setting up" else "remove"].append([match.group(2), match.group(3)])
    return found


def candidates(policy: str) -> Dict[str, str]:
    """``apt-cache policy NAME...``: each package's candidate version ("" for none)."""
    found, current = {}, None
    for line in policy.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            current = line.rstrip()[:-1]
        elif current and line.strip().startswith("Candidate:"):
            value = line.split(":", 1)[1].strip()
            found[current] = "" if value == "(none)" else value
    return found


def apt_errors(output: str) -> List[str]:
    """apt's error lines (``E:``, ``Err:`` and the unmet dependencies' lines), in order."""
    lines = []
    for line in output.splitlines():
        if line.startswith(("E: ", "Err:")) or re.match(r"\s+\S+ : (Depends|PreDepends|Conflicts|Breaks)", line):
            lines.append(line.strip())
        elif lines and lines[-1].startswith("Err:") and line.startswith(" "):
            lines[-1] += " " + line.strip()
    return lines


def _uri_key(uri: str) -> str:
    return uri.split(":", 1)[-1].lstrip("/").rstrip("/")


def repository_of(error: str, repos: Dict[str, List[Dict[str, Any]]]) -> Optional[str]:
    """The sources file (and repository) an apt error line is about, when it names one."""
    text = re.sub(r"\b[a-z+]+:/+", "", error)
    for path, entries in sorted(repos.items()):
        for entry in entries:
            for uri in entry["uris"]:
                for suite in entry["suites"]:
                    if "{} {}".format(_uri_key(uri), suite) in text:
                        return "{} ({} {})".format(path, uri, suite)
    return None


def install_problems(errors: List[str]) -> List[str]:
    """One line per package apt cannot install on the target, naming it."""
    problems = []
    for line in errors:
        missing = re.match(r"E: (?:Unable to locate package |Package '?)(\S+?)'?(?: has no installation candidate)?\Z", line)
        version = re.match(r"E: Version '([^']+)' for '([^']+)' was not found", line)
        if version:
            problems.append("{} {} is not in the target's repositories: it cannot be installed there".format(version.group(2), version.group(1)))
        elif missing:
            problems.append("package {} is not in the target's repositories: it cannot be installed there".format(missing.group(1)))
        elif not line.startswith("E: Unable to correct problems"):
            problems.append("apt on the target: " + line)
    return problems


def progress_item(line: str, seen: List[str], total: int) -> Optional[Dict[str, Any]]:
    """A progress record for one ``APT::Status-Fd`` line (``pmstatus:PKG:PERCENT:TEXT``): the
    package apt works on now, as "N of M PKG"; ``seen`` collects the packages in order."""
    parts = line.rstrip("\n").split(":", 3)
    if len(parts) != 4 or parts[0] != "pmstatus" or parts[1] == "dpkg-exec":
        return None
    package = parts[1]
    if package not in seen:
        seen.append(package)
    try:
        percent = max(0, min(100, int(float(parts[2]))))
    except ValueError:
        return None
    number = seen.index(package) + 1
    return {"percent": percent, "item": "{} of {} {}".format(min(number, max(total, number)), max(total, number), package)}
