#!/usr/bin/python
"""Ansible module of the role carry: what pc-switcher install each machine has. Read-only.

The install layout (README, `make install`)::

    PREFIX/app/           the runtime tree (pcswitcher/, roles/, playbooks/, ansible.cfg, ...)
    PREFIX/venv/          a venv of the system python3, pc-switcher installed from PREFIX/app
    PREFIX/install.json   {"version": ..., "python": "3.11", "id": <sha256 of the app tree>}, written last
    BINDIR/pc-switcher -> PREFIX/venv/bin/pc-switcher

Actions:

source   run on the source with ``app_dir`` (the dir holding pcswitcher/ of the running
         pc-switcher): ``installed`` when PREFIX/install.json (PREFIX = parent of app_dir) is a
         complete install; then its ``prefix``, ``version``, ``id``, ``python``, and ``python_home``
         (pyvenv.cfg ``home``: where the venv's python3 must be on the target), ``files``/``bytes``
         (what a carry copies). ``version`` is also read from app_dir/pcswitcher/__init__.py
         when not installed. ``file_sha256``: the sha256 of each of ``files`` ("" unless a
         regular file).
target   run on the target with ``prefix``, ``link``, ``python_home``: ``prefix_state`` (absent,
         install, incomplete, symlink, foreign) with the install's ``install`` record, ``link_state``
         (absent, install: a symlink into a pc-switcher install, foreign) with ``link_install``,
         ``python`` (major.minor of PYTHON_HOME/python3, "" when there is none), ``config_dir``
         (the login user's $XDG_CONFIG_HOME/pc-switcher or ~/.config/pc-switcher) and
         ``config_files`` (the sha256 of config.yml and inventory.yml there, "" when absent).

write    run on the target with ``config_dir``, ``config_content`` and ``inventory_content`` (no_log;
         None: not written): writes each file whose content differs to CONFIG_DIR/NAME (0600,
         atomically; the dir made 0700 when missing), the previous one kept as NAME.bak.
         Returns ``written`` and ``backups`` (names).
         Check mode writes nothing and returns what it would write.

Standard library + ansible only (Python 3.8+: it runs with the target's python3).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule

INSTALL_JSON = "install.json"
VERSION_RE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)
CONFIG_NAMES = ("config.yml", "inventory.yml")
#: what PREFIX of an install may hold (the same list as `make uninstall`'s)
OURS = frozenset({"app", "venv", INSTALL_JSON, ".old", ".new"})


def read_install(prefix):
    """The install record of PREFIX, or None when it is not a complete install."""
    path = os.path.join(prefix, INSTALL_JSON)
    if os.path.islink(path) or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    record = {key: data.get(key) for key in ("version", "python", "id")}
    if not all(isinstance(value, str) and value for value in record.values()):
        return None
    return record


def venv_home(prefix):
    """pyvenv.cfg's ``home`` of PREFIX/venv (the directory of the python3 it was made with)."""
    try:
        with open(os.path.join(prefix, "venv", "pyvenv.cfg"), encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition("=")
                if key.strip() == "home":
                    return value.strip()
    except OSError:
        pass
    return ""


def tree_size(root):
    files = size = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            try:
                size += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
            files += 1
    return files, size


def source_info(app_dir):
    app_dir = os.path.realpath(app_dir)
    prefix = os.path.dirname(app_dir)
    version = ""
    try:
        with open(os.path.join(app_dir, "pcswitcher", "__init__.py"), encoding="utf-8") as handle:
            found = VERSION_RE.search(handle.read())
            version = found.group(1) if found else ""
    except OSError:
        pass
    result = {"app_dir": app_dir, "prefix": prefix, "version": version, "installed": False}
    record = read_install(prefix)
    if record is None or os.path.basename(app_dir) != "app":
        return result
    files, size = tree_size(prefix)
    result.update(record)
    result.update(installed=True, python_home=venv_home(prefix), files=files, bytes=size)
    return result


def python_minor(home):
    """major.minor of HOME/python3, "" when there is none that runs."""
    if not home or not os.path.isabs(home):
        return ""
    exe = os.path.join(home, "python3")
    if not os.access(exe, os.X_OK):
        return ""
    try:
        out = subprocess.run(
            [exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.decode("ascii", "replace").strip()


def prefix_state(prefix):
    if os.path.islink(prefix):
        return "symlink", None
    if not os.path.lexists(prefix):
        return "absent", None
    if not os.path.isdir(prefix):
        return "foreign", None
    record = read_install(prefix)
    if record is not None:
        return "install", record
    # a carry or `make install` that was interrupted: our layout without its last file (.old, .new
    # and .install.* are make install's own, while it works)
    names = {n for n in os.listdir(prefix) if not n.startswith(".install.")}
    if names and names <= OURS and os.path.isdir(os.path.join(prefix, "app", "pcswitcher")):
        return "incomplete", None
    return ("absent", None) if not os.listdir(prefix) else ("foreign", None)


def link_state(link):
    """What BINDIR/pc-switcher is: absent, a symlink into a pc-switcher install, or something else."""
    if not os.path.lexists(link):
        return "absent", None, ""
    if not os.path.islink(link):
        return "foreign", None, ""
    dest = os.path.realpath(link)
    # PREFIX/venv/bin/pc-switcher (the venv's script, not followed further)
    raw = os.readlink(link)
    raw = raw if os.path.isabs(raw) else os.path.join(os.path.dirname(link), raw)
    raw = os.path.normpath(raw)
    parts = raw.split(os.sep)
    if parts[-3:] == ["venv", "bin", "pc-switcher"]:
        prefix = os.sep.join(parts[:-3]) or os.sep
        record = read_install(prefix)
        if record is not None:
            return "install", record, prefix
    return "foreign", None, dest


def config_dir():
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "pc-switcher")


def sha256(path):
    if not os.path.isfile(path):
        return ""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 16), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def target_info(prefix, link, home):
    state, record = prefix_state(prefix) if prefix else ("absent", None)
    lstate, lrecord, lprefix = link_state(link)
    cdir = config_dir()
    return {
        "prefix": prefix,
        "prefix_state": state,
        "install": record or {},
        "link": link,
        "link_state": lstate,
        "link_install": lrecord or {},
        "link_prefix": lprefix,
        "python": python_minor(home),
        "config_dir": cdir,
        "config_dir_exists": os.path.isdir(cdir),
        "config_files": {name: sha256(os.path.join(cdir, name)) for name in CONFIG_NAMES},
    }


def _write_file(path, data):
    """Write ``data`` to ``path`` atomically with mode 0600 (a temp file beside it, then rename)."""
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".pcswitcher-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_files(folder, files, check):
    """The config and inventory into FOLDER (see the module doc). Raises ValueError naming a problem."""
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise ValueError(f"{folder} is not a directory: move it away so that the config can be written")
    written, backups = [], []
    for item in files:
        name, data = item["name"], item["content"].encode("utf-8")
        if name not in CONFIG_NAMES:
            raise ValueError(
                "{!r} is not a file pc-switcher writes ({})".format(name, ", ".join(CONFIG_NAMES))
            )
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            raise ValueError(f"{path} is a directory: move it away so that the {name} can be written")
        if os.path.isfile(path) and sha256(path) == hashlib.sha256(data).hexdigest():
            continue
        written.append(name)
        had = os.path.isfile(path)
        if had:
            backups.append(name)
        if check:
            continue
        if not os.path.isdir(folder):
            os.makedirs(folder, mode=0o700)
        if had:
            with open(path, "rb") as handle:
                _write_file(path + ".bak", handle.read())
        _write_file(path, data)
    return written, backups


def main():
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "required": True, "choices": ["source", "target", "write"]},
            "config_dir": {"type": "str", "default": ""},
            # the texts, not their names: Ansible masks a no_log value wherever it appears
            "config_content": {"type": "str", "no_log": True},
            "inventory_content": {"type": "str", "no_log": True},
            "app_dir": {"type": "str", "default": ""},
            "prefix": {"type": "str", "default": ""},
            "link": {"type": "str", "default": "/usr/local/bin/pc-switcher"},
            "python_home": {"type": "str", "default": ""},
            "files": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    params = module.params
    if params["action"] == "source":
        if not params["app_dir"]:
            module.fail_json(msg="app_dir is required for action source")
        result = source_info(params["app_dir"])
        result["file_sha256"] = {path: sha256(path) for path in params["files"]}
        module.exit_json(changed=False, **result)
    if params["action"] == "write":
        if not os.path.isabs(params["config_dir"]):
            module.fail_json(msg="config_dir must be an absolute path, not {!r}".format(params["config_dir"]))
        try:
            contents = [
                {"name": name, "content": params[key]}
                for name, key in (("config.yml", "config_content"), ("inventory.yml", "inventory_content"))
                if params[key] is not None
            ]
            written, backups = write_files(params["config_dir"], contents, module.check_mode)
        except (OSError, ValueError) as exc:
            module.fail_json(msg="writing the config to {} failed: {}".format(params["config_dir"], exc))
        module.exit_json(changed=bool(written), written=written, backups=backups)
    for key in ("prefix", "link"):
        if params[key] and not os.path.isabs(params[key]):
            module.fail_json(msg=f"{key} must be an absolute path, not {params[key]!r}")
    module.exit_json(changed=False, **target_info(params["prefix"], params["link"], params["python_home"]))


if __name__ == "__main__":
    main()
