"""``python -m tests.sandbox {up,down,status}`` (see :mod:`tests.sandbox.cli`)."""

import sys

from tests.sandbox.cli import main

sys.exit(main())
