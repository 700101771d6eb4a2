"""Ansible callback plugin of pc-switcher: a playbook's process ends without collecting its heap.

When a playbook has ended (its stats are out), ansible-playbook has nothing left to do but return
its exit code; yet Python's shutdown then runs full garbage collections over the whole heap of
Ansible's objects, 40-60 ms of CPU per playbook here, paid by every job and the critical path of
every sync. ``gc.freeze()`` at the stats moves every object to the permanent generation, which
those collections skip (the operating system frees the memory at exit): the shutdown takes about
10 ms. Nothing else changes: exit handlers, flushes and Ansible's own cleanup run as before, and
objects made after the stats are collected as usual. The driver enables it for each playbook it
runs; a playbook run by hand does without it.
"""

from __future__ import annotations

import gc
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: pcswitcher_exit
type: aggregate
short_description: let ansible-playbook's Python shut down without collecting its heap
description:
  - Enabled by the pc-switcher driver for the playbooks it runs (see the module docstring).
"""


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "pcswitcher_exit"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_stats(self, stats: Any) -> None:
        gc.freeze()
