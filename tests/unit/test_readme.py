"""The README's config example is exactly what ``pc-switcher init`` writes (computed now, by the code)."""

from __future__ import annotations

import re

import pytest

from tests import readme_config


def test_readme_config_example_is_what_init_writes() -> None:
    readme = readme_config.README.read_text(encoding="utf-8")
    expected = readme_config.render(readme, readme_config.init_config_text())
    assert readme == expected, "README.md's config example differs from `pc-switcher init`: run `make readme`"


def test_the_example_is_a_yaml_block_between_the_markers() -> None:
    readme = readme_config.README.read_text(encoding="utf-8")
    block = readme.split(readme_config.BEGIN, 1)[1].split(readme_config.END, 1)[0]
    assert re.fullmatch(r"\n(`{3,4})yaml\n.+\n\1\n", block, re.DOTALL)
    assert "# pc-switcher configuration (written by `pc-switcher init`)." in block


def test_render_refuses_missing_or_repeated_markers() -> None:
    with pytest.raises(ValueError, match="must hold the markers"):
        readme_config.render("no markers", "x: 1\n")
    twice = f"{readme_config.BEGIN}\n{readme_config.END}\n{readme_config.BEGIN}\n{readme_config.END}\n"
    with pytest.raises(ValueError, match="must hold the markers"):
        readme_config.render(twice, "x: 1\n")
    swapped = f"{readme_config.END}\n{readme_config.BEGIN}\n"
    with pytest.raises(ValueError, match="must hold the markers"):
        readme_config.render(swapped, "x: 1\n")
    one = f"a\n{readme_config.BEGIN}\nold\n{readme_config.END}\nb\n"
    assert (
        readme_config.render(one, "x: 1\n")
        == f"a\n{readme_config.BEGIN}\n```yaml\nx: 1\n```\n{readme_config.END}\nb\n"
    )
