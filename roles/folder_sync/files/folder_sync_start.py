#!/usr/bin/env python3
"""Starts folder_sync's rsync wrapper (``folder_sync_rsync.py`` beside this file) as an imported
module::

    folder_sync_start.py FILES_DIR [the wrapper's arguments]

FILES_DIR: the role's ``files`` directory, which holds the wrapper. A script run as ``__main__`` is
compiled at every start (the wrapper's: 17 ms, which every folder's rsync waits for); an imported
module is loaded from the compiled code Python keeps beside it (``__pycache__``, written at the first
import by a user who may write there, else compiled as before). The task copies this file alone
(``ansible.builtin.script``). Python 3.9+, standard library only."""

import sys

if len(sys.argv) < 2:
    sys.exit("usage: folder_sync_start.py FILES_DIR [the wrapper's arguments]")
# appended: the standard library comes first, so no file of that directory stands in for a module of it
sys.path.append(sys.argv.pop(1))
from folder_sync_rsync import main  # noqa: E402

sys.exit(main())
