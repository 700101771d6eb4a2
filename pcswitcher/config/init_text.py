"""The text `pc-switcher init` writes: the commented default config (every job and every setting with
its default and description, from the schema) and the example inventory."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Mapping
from typing import Any

import yaml

from pcswitcher import paths
from pcswitcher.config.schema import JOBS_DESCRIPTION, global_schema
from pcswitcher.jobs.discovery import JobSpec

__all__ = ["default_config_text", "example_inventory_text"]


def _inline(value: Any) -> str:
    """``value`` as one line of YAML: a plain word, else JSON if it reads back the same, else flow style."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][\w.-]*", value) and yaml.safe_load(value) == value:
        return value
    text = json.dumps(value, ensure_ascii=False)
    try:
        if yaml.safe_load(text) == value:
            return text
    except yaml.YAMLError:
        pass
    return yaml.safe_dump([value], default_flow_style=True, width=1_000_000).strip()[1:-1]


def _comment(text: str, indent: str, width: int = 96) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text, width=width - len(indent))]


def _global_lines(schema: Mapping[str, Any], indent: str) -> list[str]:
    lines: list[str] = []
    for key, sub in schema.items():
        lines += _comment(sub["description"], indent)
        if sub.get("type") == "object" and "properties" in sub:
            lines.append(f"{indent}{key}:")
            lines += _global_lines(sub["properties"], indent + "  ")
        else:
            lines.append(f"{indent}{key}: {_inline(sub['default'])}")
    return lines


def _option_lines(schema: Mapping[str, Any], indent: str) -> list[str]:
    """A job's options as commented-out lines: description, then ``# name: default``."""
    lines: list[str] = []
    required = set(schema.get("required", []))
    for key, sub in schema.get("properties", {}).items():
        lines += _comment(sub.get("description", ""), indent)
        if "enum" in sub:
            lines += _comment(f"one of: {', '.join(map(_inline, sub['enum']))}", indent)
        elif "enum" in sub.get("items", {}):
            lines += _comment(f"items one of: {', '.join(map(_inline, sub['items']['enum']))}", indent)
        if key in required:
            lines.append(f"{indent}# {key}:   # required, no default")
        elif "default" in sub:
            lines.append(f"{indent}# {key}: {_inline(sub['default'])}")
        else:
            lines.append(f"{indent}# {key}:")
    return lines


def default_config_text(jobs: Mapping[str, JobSpec]) -> str:
    """The commented config `pc-switcher init` writes: every job, every setting with its default."""
    lines = [
        "# pc-switcher configuration (written by `pc-switcher init`).",
        "# Every setting below shows its default. Syntax: YAML.",
        "",
    ]
    lines += _comment(JOBS_DESCRIPTION, "")
    if jobs:
        lines.append("jobs:")
        for name, spec in jobs.items():
            lines += _comment(spec.description, "  ")
            enabled = spec.default_enabled and not spec.required()
            if spec.default_enabled and spec.required():
                lines += _comment(f"set the required option(s) in the section {name}: before enabling", "  ")
            lines.append(f"  {name}: {_inline(enabled)}")
    else:
        lines.append("jobs: {}  # no job was found")
    lines.append("")
    for key, sub in global_schema().items():
        lines += _global_lines({key: sub}, "")
        lines.append("")
    for name, spec in jobs.items():
        schema = spec.schema()
        if not schema.get("properties"):
            continue
        lines += _comment(f"Settings of the job {name}: {spec.description}", "")
        if spec.required():
            # The section header stays commented: an empty section would lack the required options.
            lines += _comment("This job has required options: uncomment the section and set them.", "")
            lines.append(f"# {name}:")
        else:
            lines += _comment("Uncomment an option to change it.", "")
            lines.append(f"{name}:")
        lines += _option_lines(schema, "  ")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def example_inventory_text() -> str:
    """The example Ansible inventory (``inventory/example.yml`` of the project)."""
    return (paths.project_root() / "inventory" / "example.yml").read_text(encoding="utf-8")
