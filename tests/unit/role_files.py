"""Role files (Ansible modules, filter plugins, scripts the roles run) imported for unit tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROLES = Path(__file__).resolve().parents[2] / "roles"


def load_role_file(relpath: str, name: str | None = None) -> ModuleType:
    """The module of ``roles/<relpath>``, imported as ``name`` (default: the file's stem) and
    registered in ``sys.modules`` (dataclasses and pickling look their module up there). The
    role's ``module_utils`` files are importable as Ansible gives them to its modules
    (``ansible.module_utils.<stem>``)."""
    path = ROLES / relpath
    utils = ROLES / relpath.split("/", maxsplit=1)[0] / "module_utils"
    for util in sorted(utils.glob("*.py")) if path.parent != utils else ():
        if f"ansible.module_utils.{util.stem}" not in sys.modules:
            load_role_file(str(util.relative_to(ROLES)), f"ansible.module_utils.{util.stem}")
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
