"""What counts as text in requests: strings that can be written as UTF-8.

JSON lets a string carry a lone UTF-16 surrogate (`"\\ud800"`), and Python's json module
decodes it into a `str` that cannot be encoded: it fails later, wherever the string is
written (an audit record, a reply frame, a token hash). Such strings are refused where
requests are parsed, before anything acts on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            name = str(key) if isinstance(key, str) and is_text(key) else "?"
            yield from _strings(key, f"{path}.{name}" if path else name)
            yield from _strings(item, f"{path}.{name}" if path else name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def first_invalid_text(value: Any, path: str = "") -> str | None:
    """The path of the first string (key or value) in a decoded JSON value that is not
    text, or None when every string is."""
    for where, string in _strings(value, path):
        if not is_text(string):
            return where or "(value)"
    return None
