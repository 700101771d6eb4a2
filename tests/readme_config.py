"""The README's config example is the text ``pc-switcher init`` writes, computed by the code.

``make readme`` (``python -m tests.readme_config``) rewrites the block between :data:`BEGIN` and
:data:`END` in README.md; tests/unit/test_readme.py fails when the README differs from what this
would write (run ``make readme`` after changing a setting, a job or the init text).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BEGIN = "<!-- config-example: written by `make readme` from what `pc-switcher init` writes; do not edit -->"
END = "<!-- /config-example -->"


def init_config_text() -> str:
    """What ``pc-switcher init`` writes into config.yml for this checkout's jobs."""
    from pcswitcher.config.init_text import default_config_text
    from pcswitcher.jobs.discovery import discover_jobs

    return default_config_text(discover_jobs(REPO))


def render(readme: str, config_text: str) -> str:
    """``readme`` with the block between the markers replaced by ``config_text`` in a yaml fence."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise ValueError(f"README.md must hold the markers {BEGIN!r} and {END!r} once each, in this order")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    fence = "````" if "```" in config_text else "```"
    return f"{head}{BEGIN}\n{fence}yaml\n{config_text.rstrip(chr(10))}\n{fence}\n{END}{tail}"


def main() -> int:
    text = README.read_text(encoding="utf-8")
    new = render(text, init_config_text())
    if new == text:
        print("README.md: the config example is up to date")
        return 0
    README.write_text(new, encoding="utf-8")
    print("README.md: the config example rewritten from `pc-switcher init`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
