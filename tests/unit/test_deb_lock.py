"""packaging/deb/lock.py: from pip's install report to hash-pinned requirement lines."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

LOCK = Path(__file__).resolve().parents[2] / "packaging" / "deb" / "lock.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deb_lock", LOCK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def item(name: str, version: str, url: str, sha: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {"url": url}
    if sha is not None:
        info["archive_info"] = {"hashes": {"sha256": sha}}
    return {"metadata": {"name": name, "version": version}, "download_info": info}


def test_pins_each_file_by_hash_sorted_without_the_project_itself() -> None:
    lines = load().lock_lines(
        [
            item("card-agent", "0.1.0", "file:///src", None),
            item("pyscard", "2.3.1", "https://files/pyscard-2.3.1.tar.gz", "bb"),
            item("click", "8.1.7", "https://files/click-8.1.7-py3-none-any.whl", "aa"),
        ]
    )
    assert lines == [
        "click==8.1.7 --hash=sha256:aa  # click-8.1.7-py3-none-any.whl",
        "pyscard==2.3.1 --hash=sha256:bb  # pyscard-2.3.1.tar.gz",
    ]


def test_refuses_a_distribution_without_a_hash() -> None:
    with pytest.raises(SystemExit, match="without a sha256"):
        load().lock_lines([item("local", "1.0", "file:///somewhere", None)])
