"""The option checks of the folder_sync job: ``option_problems(settings)`` lists what is wrong.

The job's option-check hook (docs/job-contract.md, "Option checks"): the driver loads this file for
``pc-switcher config check`` and ``pc-switcher sync`` (before it connects anywhere), and the role's
plan uses the same function as the Ansible filter ``folder_sync_option_problems``, so a hand run of
the playbook refuses the same things. Every check is an allowlist:

* ``rsync_args``: each argument is parsed the way rsync 3.x (popt) parses it — bundled short
  options (``-vn``), ``--opt=value`` and ``--opt value``, ``-ovalue`` and ``-o value``, aliases
  (``--remove-sent-files``); rsync accepts no abbreviation of a long option, so neither does this —
  and only the options of :data:`ALLOWED` pass, each value checked (a number, a rate, never a path).
  A bare argument (a path would be one more source) and ``--`` are refused.
* paths (folder sources and targets, filter files) are absolute, without ``.``/``..`` components and
  without control characters; filter rules have no control characters; ``per_dir_filter`` is a plain
  file name.
* targets lie where a mirror with ``--delete`` may write (:func:`target_problem`), and no two enabled
  folders have equal or nested targets.

``settings`` are the job's options by short name (``folders``, ``rsync_args``, ...) with the
argspec's defaults applied. Each problem is a dict ``{"path": [...], "problem": str, "fix": str}``:
``path`` leads to the offending value inside the job's config section (e.g. ``["rsync_args", 0]``).
Python 3.8+, standard library only.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any, Dict, List, Optional, Tuple

# Options of rsync known to be safe with the job's guarantees (an exact mirror of content, owners,
# permissions, ACLs, xattrs, hard links and sparse files; deletions only inside the target folder,
# after the transfer; an interrupted sync leaves no half-written file in place; no run that reports
# success without syncing). Long name -> (aliases, short letter, kind of value or None, why it is safe).
ALLOWED: Dict[str, Tuple[Tuple[str, ...], str, Optional[str], str]] = {
    "one-file-system": ((), "x", None, "the source is read on one filesystem only; nothing else changes"),
    "bwlimit": ((), "", "rate", "limits the transfer rate only"),
    "compress": ((), "z", None, "compresses the data on the wire only"),
    "compress-level": (("zl",), "", "level", "the compression level of the data on the wire only"),
    "checksum": ((), "c", None, "finds changed files by their content: transfers more, never less"),
    "ignore-times": ((), "I", None, "transfers every file again: more, never less"),
    "whole-file": ((), "W", None, "sends whole files instead of deltas, still into a temporary file"),
    "no-whole-file": (("no-W",), "", None, "sends deltas (rsync's default over ssh)"),
    "fsync": ((), "", None, "flushes every written file to the target's disk: slower, never less safe"),
    "open-noatime": ((), "", None, "reads the source's files without changing their access times"),
    "max-delete": ((), "", "count", "stops deleting after NUM deletions and fails the sync (rsync exit 25)"),
}

# How the values of ALLOWED are checked: (pattern, what to write).
VALUES: Dict[str, Tuple["re.Pattern[str]", str]] = {
    "rate": (re.compile(r"(0|[1-9][0-9]{0,8})(\.[0-9]{1,3})?[KMGkmg]?\Z"), "a rate such as 500, 50m or 1.5M"),
    "level": (re.compile(r"[0-9]\Z"), "a compression level from 0 to 9"),
    "count": (re.compile(r"(0|[1-9][0-9]{0,8})\Z"), "a whole number, 0 or more"),
}

# rsync's short options that take a value (the rest of the bundle, or the next argument).
SHORT_WITH_VALUE = frozenset("BefMT@")
# rsync's long options that take a value (``--opt=value`` or ``--opt value``), aliases included.
LONG_WITH_VALUE = frozenset(
    """info debug stderr backup-dir suffix chmod checksum-choice cc block-size rsh rsync-path max-delete
    max-size min-size max-alloc partial-dir usermap groupmap chown timeout contimeout modify-window
    temp-dir compare-dest copy-dest link-dest compress-choice zc compress-level zl compress-threads zt
    skip-compress filter exclude exclude-from include include-from files-from copy-as address port
    sockopts outbuf remote-option out-format log-format log-file log-file-format password-file early-input
    bwlimit stop-after stop-at write-batch only-write-batch read-batch protocol iconv checksum-seed
    confine-root""".split()
)
# rsync's names of short options, for the messages.
SHORT_NAMES = {
    "v": "verbose", "q": "quiet", "c": "checksum", "a": "archive", "r": "recursive", "R": "relative",
    "b": "backup", "u": "update", "d": "dirs", "l": "links", "L": "copy-links", "k": "copy-dirlinks",
    "K": "keep-dirlinks", "H": "hard-links", "p": "perms", "E": "executability", "A": "acls",
    "X": "xattrs", "o": "owner", "g": "group", "D": "devices --specials", "t": "times", "U": "atimes",
    "N": "crtimes", "O": "omit-dir-times", "J": "omit-link-times", "S": "sparse", "n": "dry-run",
    "W": "whole-file", "x": "one-file-system", "B": "block-size", "e": "rsh", "y": "fuzzy",
    "z": "compress", "C": "cvs-exclude", "f": "filter", "F": "filter=dir-merge /.rsync-filter",
    "0": "from0", "s": "secluded-args", "8": "8-bit-output", "h": "human-readable",
    "P": "partial --progress", "i": "itemize-changes", "M": "remote-option", "T": "temp-dir",
    "@": "modify-window", "4": "ipv4", "6": "ipv6", "V": "version", "m": "prune-empty-dirs",
    "I": "ignore-times",
}  # fmt: skip
# Aliases rsync knows for options this file names a reason for.
ALIASES = {
    "remove-sent-files": "remove-source-files",
    "del": "delete-during",
    "protect-args": "secluded-args",
    "no-protect-args": "no-secluded-args",
    "log-format": "out-format",
    "ignore-non-existing": "existing",
    "i-r": "inc-recursive",
    "no-i-r": "no-inc-recursive",
    "old-d": "old-dirs",
}
_SAME_AS = "the job sets it itself"
_PATH = "it names a path, which would read or write outside the folders"
# Why an option is refused, when there is more to say than "not on the allowlist".
REFUSED = {
    "dry-run": "a dry run would report success and sync nothing: use `pc-switcher sync --dry-run`",
    "list-only": "lists files and syncs nothing, yet the run would report success",
    "only-write-batch": "syncs nothing, yet the run would report success",
    "remove-source-files": "it deletes the transferred files on the source",
    "delete-excluded": "it deletes on the target what the filters (and the never-sync rules) protect",
    "delete-missing-args": "it deletes on the target outside the job's rules",
    "ignore-errors": "it deletes on the target even after an I/O error",
    "delete-before": "the job deletes after the transfer (--delete-delay), so an interrupted sync deletes nothing",
    "delete-during": "the job deletes after the transfer (--delete-delay), so an interrupted sync deletes nothing",
    "delete-after": "the job sets the deletion mode (--delete-delay); set folder_sync.delete instead",
    "delete": "set folder_sync.delete instead",
    "inplace": "it writes into the real file: an interrupted sync would leave it half-written",
    "append": "it writes into the real file and trusts its start: not an exact mirror",
    "append-verify": "it writes into the real file: an interrupted sync would leave it half-written",
    "write-devices": "it writes into device files on the target",
    "rsh": "the job builds the ssh command from the inventory",
    "rsync-path": "the job sets the remote rsync (run tag, sudo)",
    "remote-option": "it passes options past these checks to the target's rsync",
    "backup": "it writes backup copies on the target, next to or outside the folder",
    "backup-dir": _PATH,
    "suffix": "backups are not supported",
    "temp-dir": _PATH,
    "partial-dir": _SAME_AS,
    "compare-dest": _PATH,
    "copy-dest": _PATH,
    "link-dest": _PATH,
    "files-from": _PATH,
    "exclude-from": _PATH + "; use folder_sync filters or filter_file",
    "include-from": _PATH + "; use folder_sync filters or filter_file",
    "log-file": _PATH,
    "write-batch": _PATH,
    "read-batch": _PATH,
    "password-file": _PATH,
    "early-input": _PATH,
    "filter": "use folder_sync filters (rules in rsync_args would come after the job's)",
    "exclude": "use folder_sync filters",
    "include": "use folder_sync filters",
    "cvs-exclude": "use folder_sync filters",
    "keep-dirlinks": "it follows symlinks to directories on the target, writing outside the folder",
    "copy-links": "it replaces symlinks by what they point to: not an exact mirror",
    "copy-dirlinks": "it replaces symlinks by what they point to: not an exact mirror",
    "copy-unsafe-links": "it replaces symlinks by what they point to: not an exact mirror",
    "safe-links": "it leaves symlinks out: not an exact mirror",
    "munge-links": "it changes symlinks: not an exact mirror",
    "relative": "it changes where the files land on the target",
    "mkpath": "it creates directories above the target folder",
    "secluded-args": _SAME_AS,
    "no-secluded-args": "the job sends paths to the target without a shell (--protect-args)",
    "old-args": "the job sends paths to the target without a shell (--protect-args)",
    "timeout": "set folder_sync.timeout instead",
    "verbose": "it changes the output the job reads its progress and results from",
    "human-readable": "it changes the output the job reads its progress and results from",
    "update": "it skips files that are newer on the target: not an exact mirror",
    "existing": "it skips new files: not an exact mirror",
    "ignore-existing": "it skips files that exist on the target: not an exact mirror",
    "size-only": "it skips changed files of the same size: not an exact mirror",
    "modify-window": "the job sets it itself (-1: mtimes equal only to the nanosecond); a wider window skips changed files",
    "max-size": "it skips files: not an exact mirror",
    "min-size": "it skips files: not an exact mirror",
    "prune-empty-dirs": "it leaves directories out: not an exact mirror",
    "chmod": "it changes permissions: not an exact mirror",
    "chown": "it changes owners: not an exact mirror",
    "usermap": "it changes owners: not an exact mirror",
    "groupmap": "it changes owners: not an exact mirror",
    "iconv": "it changes file names: not an exact mirror",
    "super": _SAME_AS,
    "fake-super": "it stores owners in xattrs instead of setting them: not an exact mirror",
    "stop-after": "it stops the transfer early",
    "stop-at": "it stops the transfer early",
}
_NOT_LISTED = "it is not on folder_sync's list of options known to be safe with its guarantees"
_FIX_ARGS = "remove it from folder_sync.rsync_args (allowed: {})"

# Where a mirror with --delete may write on the target: /home and /root (and below); directories
# below /srv, /opt and /var (not those three themselves). Everything else is refused: /, /etc
# (the system-config job's), /usr, /boot, /bin, /sbin, /lib*, /proc, /sys, /dev, /run, /tmp, ...
TARGET_TOPS = ("home", "root")
TARGET_PARENTS = ("srv", "opt", "var")
# Below /var, these stay refused (themselves, and for the second set everything inside too): the
# package managers' databases and the system's own state, which a mirror would make wrong.
VAR_REFUSED = ("/var/lib", "/var/cache", "/var/log", "/var/spool", "/var/backups")
VAR_REFUSED_TREES = (
    "/var/lib/dpkg",
    "/var/lib/apt",
    "/var/lib/rpm",
    "/var/lib/dnf",
    "/var/lib/pacman",
    "/var/lib/systemd",
    "/var/run",
    "/var/lock",
)
# Never-synced locations (the fixed never-sync rules cannot see these names from inside them).
NEVER_SYNCED = ((".ssh",), (".gnupg",), (".config", "pc-switcher"), (".local", "state", "pc-switcher"))
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PER_DIR_FILTER = re.compile(r"[A-Za-z0-9._+-]{1,255}\Z")


def _problem(path: List[Any], problem: str, fix: str) -> Dict[str, Any]:
    return {"path": path, "problem": problem, "fix": fix}


def _allowed_list() -> str:
    names = []
    for name, (aliases, short, kind, _why) in ALLOWED.items():
        names.append(("-" + short + "/" if short else "") + "--" + name + ("=" + kind.upper() if kind else ""))
    return ", ".join(names)


def _why(name: str) -> str:
    """Why the long option ``name`` (without dashes) is refused."""
    canonical = ALIASES.get(name, name)
    alias = " (rsync's alias of --{})".format(canonical) if canonical != name else ""
    if canonical in REFUSED:
        return alias + ": " + REFUSED[canonical]
    if canonical.startswith("no-"):
        return alias + ": it turns off part of the job's own options (-aHAX --numeric-ids --delete ...)"
    return alias + ": " + _NOT_LISTED


def _long(args: List[str], i: int) -> Tuple[List[str], int]:
    """Check the long option ``args[i]``; returns (problems, index of the next argument)."""
    arg = args[i]
    name, eq, value = arg[2:].partition("=")
    by_alias = {alias: long for long, spec in ALLOWED.items() for alias in spec[0]}
    canonical = name if name in ALLOWED else by_alias.get(name, "")
    takes_value = name in LONG_WITH_VALUE or (canonical and ALLOWED[canonical][2] is not None)
    nxt = i + 1
    if takes_value and not eq:
        if i + 1 >= len(args):
            return ["{!r} needs a value".format(arg)], nxt
        value, nxt = args[i + 1], i + 2
    shown = repr(arg) if nxt == i + 1 else repr(arg + " " + value)
    if not canonical:
        return ["{} is not allowed{}".format(shown, _why(name))], nxt
    kind = ALLOWED[canonical][2]
    if kind is None:
        if eq:
            return ["{} is not allowed: --{} takes no value".format(shown, name)], nxt
        return [], nxt
    pattern, want = VALUES[kind]
    if not pattern.match(value):
        return ["{} is not allowed: the value of --{} must be {}".format(shown, name, want)], nxt
    return [], nxt


def _short(args: List[str], i: int) -> Tuple[List[str], int]:
    """Check the bundle of short options ``args[i]`` (``-vn``, ``-essh``)."""
    arg = args[i]
    allowed = {spec[1]: long for long, spec in ALLOWED.items() if spec[1] and spec[2] is None}
    refused = []
    nxt = i + 1
    for pos, letter in enumerate(arg[1:], start=1):
        if letter not in allowed:
            long = SHORT_NAMES.get(letter)
            if long is None:
                refused.append("-{}: not an rsync option".format(letter))
            else:
                refused.append("-{} (--{}){}".format(letter, long, _why(long.split()[0].split("=")[0])))
        if letter in SHORT_WITH_VALUE:  # the rest of the bundle, or the next argument, is its value
            if pos == len(arg) - 1:
                nxt = i + 2
            break
    if not refused:
        return [], nxt
    return ["{!r} is not allowed: {}".format(arg, "; ".join(refused))], nxt


def rsync_args_problems(args: List[Any]) -> List[Dict[str, Any]]:
    """The problems of ``rsync_args``, parsed as rsync parses its command line."""
    problems = []
    fix = _FIX_ARGS.format(_allowed_list())
    i = 0
    while i < len(args):
        arg = args[i]
        if not isinstance(arg, str):
            found, nxt = ["{!r} is not a string".format(arg)], i + 1
        elif arg == "--":
            found, nxt = ["'--' ends rsync's options: what follows would be a path"], i + 1
        elif arg.startswith("--"):
            found, nxt = _long(args, i)
        elif arg.startswith("-") and len(arg) > 1:
            found, nxt = _short(args, i)
        else:
            what = "a bare argument {!r} is not allowed: rsync would take it as one more source folder".format(arg)
            found, nxt = [what], i + 1
        problems.extend(_problem(["rsync_args", i], text, fix) for text in found)
        i = nxt
    return problems


def _components(path: str) -> List[str]:
    return [part for part in path.split("/") if part]


def path_problem(path: Any, what: str) -> Optional[str]:
    """Why ``path`` is not an absolute, plain path (None when it is)."""
    if not isinstance(path, str) or not path:
        return "{} must be an absolute path, not {!r}".format(what, path)
    if _CONTROL.search(path):
        return "{} {!r} contains a control character (newline, tab, ...)".format(what, path)
    if not path.startswith("/"):
        return "{} {!r} must be an absolute path (start with /)".format(what, path)
    if any(part in (".", "..") for part in _components(path)):
        return "{} {!r} must not contain '.' or '..' components".format(what, path)
    return None


def _never_synced(parts: List[str]) -> bool:
    for location in NEVER_SYNCED:
        for start in range(len(parts) - len(location) + 1):
            if tuple(parts[start : start + len(location)]) == location:
                return True
    return False


def target_problem(target: str) -> Optional[str]:
    """Why a mirror with --delete may not write into ``target`` (a checked absolute path), or None."""
    parts = _components(target)
    norm = "/" + "/".join(parts)
    inside = lambda top: norm == top or norm.startswith(top + "/")  # noqa: E731
    if parts and parts[0] in TARGET_TOPS:
        return None
    if parts and parts[0] in TARGET_PARENTS and len(parts) >= 2:
        if norm in VAR_REFUSED or any(inside(tree) for tree in VAR_REFUSED_TREES):
            return "{} is system state a mirror with delete would make wrong".format(norm)
        return None
    if len(parts) == 1 and parts[0] in TARGET_PARENTS:
        return "{} itself holds other software's files a mirror with delete would remove".format(norm)
    return "{} is outside the places a mirror with delete may write (/home, /root, and below /srv, /opt, /var)".format(
        norm
    )


def _folder_problems(index: int, folder: Dict[str, Any]) -> Tuple[List[Dict[str, Any]], Optional[List[str]]]:
    """The problems of one folder, and its target's components when it is enabled and sound."""
    problems = []
    where = ["folders", index]
    source = folder.get("source")
    target = folder.get("target") or source
    fix_path = "write an absolute path without control characters or '.'/'..' components"
    checked = [("source", source)] + ([("target", target)] if folder.get("target") else [])
    for key, value in checked:  # without a target of its own, the source is the target
        problem = path_problem(value, "the {} folder".format(key))
        if problem is None and _never_synced(_components(value)):
            problem = "the {} folder {} is inside a never-synced location (.ssh, .gnupg, pc-switcher's)".format(
                key, value
            )
            problems.append(_problem(where + [key], problem, "sync a folder above it instead"))
        elif problem is not None:
            problems.append(_problem(where + [key], problem, fix_path))
    if not problems:
        problem = target_problem(target)
        if problem is not None:
            at = where + ["target" if folder.get("target") else "source"]
            fix = "set folder_sync.folders[{}].target to a folder under /home, /root, /srv, /opt or /var".format(index)
            problems.append(_problem(at, "target folder " + problem, fix + " (docs/jobs/folder_sync.md, Targets)"))
    filter_file = folder.get("filter_file")
    if filter_file:
        problem = path_problem(filter_file, "the filter file")
        if problem is not None:
            problems.append(_problem(where + ["filter_file"], problem, fix_path))
    problems.extend(_rules_problems(folder.get("filters") or [], where + ["filters"]))
    enabled = folder.get("enabled", True) is not False
    return problems, (_components(target) if enabled and not problems else None)


def _clears(rule: str) -> bool:
    """rsync's ``!`` / ``clear`` rule (modifiers after a comma included): it empties the rule list
    before it, the fixed never-sync rules (private keys, pc-switcher's state) with it."""
    words = rule.split()
    return bool(words) and words[0].split(",", 1)[0] in ("!", "clear")


def _rules_problems(rules: List[Any], where: List[Any]) -> List[Dict[str, Any]]:
    problems = []
    for index, rule in enumerate(rules):
        if not isinstance(rule, str) or _CONTROL.search(rule):
            problem = "the filter rule {!r} contains a control character (newline, tab, ...)".format(rule)
            problems.append(_problem(where + [index], problem, "write one rule per list item, on one line"))
        elif _clears(rule):
            problem = "the filter rule {!r} clears the rules before it, the never-sync rules too".format(rule)
            fix = "remove it; to sync something a rule excludes, put a '+ PATTERN' rule before that rule"
            problems.append(_problem(where + [index], problem, fix))
    return problems


def _overlap_problems(targets: List[Tuple[int, List[str]]]) -> List[Dict[str, Any]]:
    problems = []
    for pos, (index, parts) in enumerate(targets):
        for other, other_parts in targets[:pos]:
            shorter = min(len(parts), len(other_parts))
            if parts[:shorter] == other_parts[:shorter]:
                how = "the same as" if len(parts) == len(other_parts) else "nested with"
                problem = "the target folder /{} is {} the target /{} of folders[{}]: the second --delete would remove the first's files".format(
                    "/".join(parts), how, "/".join(other_parts), other
                )
                fix = "give every enabled folder its own target, none inside another"
                problems.append(_problem(["folders", index], problem, fix))
                break
    return problems


# The validate phase's check script (tasks/validate.yml) gets the rules of every enabled folder on
# one command line, which Ansible runs as one `sh -c` string (Linux caps one string at 128 KiB): each
# folder's own rules twice (the checks' input and the space check's rsync arguments), the global and
# never-sync rules once more per folder. What they may take of it, encoded as Ansible passes them
# (JSON, then shell quoting), leaving the rest for the fixed rules, the ssh command and the paths:
RULES_BUDGET = 64 * 1024


def _encoded(rules: List[Any]) -> int:
    return len(shlex.quote(json.dumps([str(rule) for rule in rules])))


def _size_problems(settings: Dict[str, Any]) -> List[Dict[str, Any]]:
    folders = [f for f in settings.get("folders") or [] if isinstance(f, dict) and f.get("enabled", True) is not False]
    shared = _encoded(list(settings.get("filters") or []) + list(settings.get("never_sync") or []))
    size = sum(2 * _encoded(list(f.get("filters") or [])) for f in folders) + (len(folders) + 1) * shared
    if size <= RULES_BUDGET:
        return []
    problem = "the filter rules take {} KiB of the check's command line, at most {} KiB".format(
        -(-size // 1024), RULES_BUDGET // 1024
    )
    return [_problem(["filters"], problem, "put long lists of rules in a folder's filter_file")]


def option_problems(settings: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every problem of the job's settings (short names, defaults applied); [] when they are good."""
    problems = []
    timeout = settings.get("timeout", 0)
    if isinstance(timeout, str) and timeout.strip().lstrip("-").isdigit():  # -e NAME=5 in a hand run
        timeout = int(timeout)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
        problems.append(_problem(["timeout"], "must be 0 (no timeout) or more, not {}".format(timeout), "set 0 or more seconds"))
    per_dir = settings.get("per_dir_filter", "")
    if per_dir and (not isinstance(per_dir, str) or not _PER_DIR_FILTER.match(per_dir) or per_dir in (".", "..")):
        problem = "{!r} must be a plain file name (letters, digits, '.', '_', '+', '-'; not '.' or '..')".format(per_dir)
        problems.append(_problem(["per_dir_filter"], problem, "write a file name such as .pcswitcher-filter, or \"\" for none"))
    problems.extend(_rules_problems(settings.get("filters") or [], ["filters"]))
    problems.extend(_rules_problems(settings.get("never_sync") or [], ["never_sync"]))
    problems.extend(rsync_args_problems(list(settings.get("rsync_args") or [])))
    targets = []
    for index, folder in enumerate(settings.get("folders") or []):
        found, parts = _folder_problems(index, folder if isinstance(folder, dict) else {})
        problems.extend(found)
        if parts is not None:
            targets.append((index, parts))
    problems.extend(_overlap_problems(targets))
    problems.extend(_size_problems(settings))
    return problems


def _filter(variables: Dict[str, Any]) -> List[str]:
    """The Ansible filter: the job's variables by short name -> one line per problem."""
    lines = []
    for item in option_problems(variables):
        where = "folder_sync_" + "".join(
            "[{}]".format(p) if isinstance(p, int) else (("." if n else "") + str(p)) for n, p in enumerate(item["path"])
        )
        lines.append("{}: {}: {}".format(where, item["problem"], item["fix"]))
    return lines


class FilterModule:
    """``{{ {...options by short name...} | folder_sync_option_problems }}``: one line per problem."""

    def filters(self) -> Dict[str, Any]:
        return {"folder_sync_option_problems": _filter}
