"""Filter of the role carry: what to carry to the target, and what refuses the sync.

``{{ carry_source | carry_plan(carry_target, become=B, host=H) }}`` takes the results of the module
pcs_carry (actions source and target) and returns::

    {"problems": [...], "warning": "", "install": bool, "reason": "...", "files": [...]}

``problems`` refuse the sync in validate (nothing has changed): a pc-switcher on the target newer
than this one (PEP 440 order: packaging.version, which ansible-core depends on), a PREFIX or link on
the target that is not a pc-switcher install, no root on the target to install with. ``install``:
copy PREFIX to the target; ``reason`` says why not otherwise (checkout, same install, python);
``warning`` is the one line for a target whose python3 differs from the install's; ``files``: the
config and inventory (:func:`config_files`). Runs on the controller (Python 3.8+ like every file
Ansible loads).
"""

from __future__ import annotations

from typing import Any

from packaging.version import InvalidVersion, Version


def _version(text: str) -> Version | None:
    try:
        return Version(str(text))
    except InvalidVersion:
        return None


def newer_problem(host: str, theirs: dict[str, Any], where: str, ours: str) -> str | None:
    """The problem when the install ``theirs`` on ``host`` (at ``where``) is newer than ``ours``."""
    their_text = str(theirs.get("version") or "")
    if not their_text:
        return None
    mine, their = _version(ours), _version(their_text)
    fix = (
        f"update pc-switcher on this machine to {their_text} or newer (`make install` from its checkout), "
        f"or run `make uninstall` on {host}"
    )
    if mine is None or their is None:
        bad = ours if mine is None else their_text
        return (
            f"cannot compare pc-switcher versions {ours!r} (this machine) and {their_text!r} "
            f"({host} {where}): {bad!r} is not a PEP 440 version; fix: run `make uninstall` on {host}"
        )
    if their > mine:
        return (
            f"{host} has pc-switcher {their_text} ({where}), newer than {ours} on this machine: "
            f"a sync would replace it with an older one; fix: {fix}"
        )
    return None


def _install_problems(source: dict[str, Any], target: dict[str, Any], become: bool, host: str) -> list[str]:
    problems = []
    prefix = source["prefix"]
    if target.get("prefix_state") in ("symlink", "foreign"):
        problems.append(
            "{h}:{p} is not a pc-switcher install (no {p}/install.json{s}): pc-switcher cannot be carried "
            "there; fix: move it away on {h}".format(
                h=host, p=prefix, s=", it is a symlink" if target["prefix_state"] == "symlink" else ""
            )
        )
    if target.get("link_state") == "foreign":
        problems.append(
            "{h}:{l} exists and is not a link into a pc-switcher install: pc-switcher cannot be carried "
            "there; fix: remove it on {h}".format(h=host, l=target.get("link"))
        )
    if not become:
        problems.append(
            f"carrying pc-switcher to {host}:{prefix} needs root there: the inventory logs in as "
            f"another user without ansible_become; fix: set ansible_become: true for {host} "
            "(sudo without password)"
        )
    return problems


def config_files(
    source: dict[str, Any], target: dict[str, Any], files: dict[str, str]
) -> list[dict[str, Any]]:
    """The config and inventory to write: name on the target, src on the source, its sha256 ("" when
    it is no regular file: not carried), whether the target has one (``had``) and the same (``same``)."""
    found = source.get("file_sha256") or {}
    theirs = target.get("config_files") or {}
    result = []
    for name, src in files.items():
        sha = str(found.get(src) or "") if src else ""
        have = str(theirs.get(name) or "")
        result.append(
            {"name": name, "src": src, "sha": sha, "had": bool(have), "same": bool(sha) and have == sha}
        )
    return result


def carry_plan(
    source: dict[str, Any],
    target: dict[str, Any],
    become: bool = False,
    host: str = "target",
    files: dict[str, str] | None = None,
) -> dict[str, Any]:
    ours = str(source.get("version") or "")
    problems = []
    checked = []
    if target.get("prefix_state") == "install":
        checked.append((target.get("install") or {}, target.get("prefix")))
    if target.get("link_state") == "install" and target.get("link_prefix") != target.get("prefix"):
        checked.append((target.get("link_install") or {}, target.get("link_prefix")))
    for theirs, where in checked:
        problem = newer_problem(host, theirs, str(where), ours)
        if problem:
            problems.append(problem)
    plan = {
        "problems": problems,
        "warning": "",
        "install": False,
        "reason": "",
        "files": config_files(source, target, files or {}),
    }
    if not source.get("installed"):
        plan["reason"] = "checkout"
        return plan
    problems.extend(_install_problems(source, target, bool(become), host))
    want, have = str(source.get("python") or ""), str(target.get("python") or "")
    if want != have:
        python = "{}/python3".format(source.get("python_home") or "?")
        plan["reason"] = "python"
        plan["warning"] = (
            "pc-switcher {v} is not carried to {h}: its install here runs on python {w}, {h}'s {p} is {g}; "
            "fix: run `make install` on {h} to install pc-switcher there".format(
                v=ours, h=host, w=want, p=python, g=have or "missing"
            )
        )
        return plan
    same_link = target.get("link_state") == "install" and target.get("link_prefix") == source.get("prefix")
    if (target.get("install") or {}).get("id") == source.get("id") and same_link:
        plan["reason"] = "same"
        return plan
    plan["install"] = True
    return plan


def carry_contents(files: list[dict[str, Any]]) -> dict[str, str]:
    """``{{ carry_decision.files | carry_contents }}``: the text of each file to write (those of the
    source that differ on the target) by its name on the target, read on the controller (the
    source). Only for the module's no_log parameters: an inventory may hold secrets."""
    result = {}
    for item in files:
        if item.get("sha") and not item.get("same"):
            with open(str(item["src"]), encoding="utf-8") as handle:
                result[str(item["name"])] = handle.read()
    return result


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"carry_plan": carry_plan, "carry_contents": carry_contents}
