"""A small TOML writer for `config show`: one level of tables, the value types the
configuration has (bool, int, float, str, lists of them); unset values as comments."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    # A JSON string is a valid TOML basic string (same escapes for what json.dumps emits).
    return json.dumps(str(value), ensure_ascii=False)


def to_toml(data: Mapping[str, Any]) -> str:
    lines: list[str] = []
    for section, values in data.items():
        if not isinstance(values, Mapping):
            lines.append(f"{section} = {toml_value(values)}")
            continue
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} (unset)")
            else:
                lines.append(f"{key} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
