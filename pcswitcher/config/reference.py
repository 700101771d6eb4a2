"""The configuration reference, rendered from the schema itself (``pc-switcher config reference``).

docs/configuration.md is this text; a test keeps the two equal, so the reference cannot drift from
what the validator accepts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pcswitcher.config.schema import config_schema
from pcswitcher.jobs.discovery import JobSpec

HEADER = """# Configuration reference

`~/.config/pc-switcher/config.yml` (or `$XDG_CONFIG_HOME/pc-switcher/config.yml`, or `--config PATH`).
`pc-switcher init` writes a commented one; `pc-switcher config check` validates one without syncing.
Every setting has a default; a missing section means all its defaults. An unknown key, job or
option, a wrong type or a malformed value is an error naming the file, line and column.

This page is generated from the schema (`pc-switcher config reference`); a test keeps it current.
"""


def _type(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    fmt = schema.get("format", "")
    if "threshold" in fmt:
        return 'threshold (`"20%"` or `"50GiB"`)'
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(str(k) for k in kind)
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if "absolute-path" in fmt:
        return "absolute path"
    return str(kind)


def _default(schema: Mapping[str, Any]) -> str:
    if "default" not in schema or schema.get("type") == "object":
        return "required" if schema.get("_required") else ""
    return f"`{json.dumps(schema['default'])}`"


def _rows(schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    rows = []
    required = set(schema.get("required", []))
    for key, sub in schema.get("properties", {}).items():
        name = f"{prefix}{key}"
        text = " ".join(str(sub.get("description", "")).split())
        if sub.get("type") == "object" and "properties" in sub:
            rows.append(f"| `{name}` | section | | {text} |")
            rows.extend(_rows(sub, f"{name}."))
        else:
            default = "required" if key in required else _default(sub)
            rows.append(f"| `{name}` | {_type(sub)} | {default} | {text} |")
    return rows


def render(jobs: Mapping[str, JobSpec]) -> str:
    schema = config_schema(jobs)
    props = schema["properties"]
    out = [
        HEADER,
        "## Global settings",
        "",
        "| setting | type | default | description |",
        "|---|---|---|---|",
    ]
    jobs_text = " ".join(str(props.get("jobs", {}).get("description", "")).split())
    out.append(f"| `jobs` | mapping job → bool | `{{}}` | {jobs_text} |")
    for key, sub in props.items():
        if key == "jobs" or key in jobs:
            continue
        out.extend(_rows({"properties": {key: sub}}))
    out += ["", "## Jobs", ""]
    for name, spec in sorted(jobs.items()):
        enabled = "enabled" if spec.default_enabled else "disabled"
        out += [
            f"### `{name}`",
            "",
            f"{spec.description} ({enabled} in a new config; [docs](jobs/{name}.md))",
            "",
        ]
        rows = _rows(spec.schema(), f"{name}.")
        if rows:
            out += ["| setting | type | default | description |", "|---|---|---|---|", *rows, ""]
        else:
            out += ["No settings.", ""]
    return "\n".join(out).rstrip() + "\n"
