"""The lookup ``packages_apt_source``: the source's packages and apt files (with their bytes).

The controller of the play is the source machine (pc-switcher runs ansible-playbook there), so the
source is read here, in the playbook's own process: no module payload and no extra Python start
(a module with ``delegate_to: localhost`` costs about 0.3 s more). It runs the same code as the
target's module (module_utils/packages_apt_system.py, imported from the role's directory) and
changes nothing.
"""

from __future__ import annotations

import os
import sys
from typing import Any, List

from ansible.plugins.lookup import LookupBase

DOCUMENTATION = r"""
name: packages_apt_source
short_description: the source machine's packages and apt files (the packages_apt job's facts)
description: See docs/jobs/packages_apt.md.
"""

_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils")


class LookupModule(LookupBase):
    """``query('packages_apt_source') | first``: the facts of this machine, the source."""

    def run(self, terms: List[Any], variables: Any = None, **kwargs: Any) -> List[Any]:
        if _UTILS not in sys.path:
            sys.path.insert(0, _UTILS)
        import packages_apt_system  # noqa: PLC0415 - the role's module_utils, found through _UTILS

        return [packages_apt_system.read_facts("source", contents=True, audit=False)]
