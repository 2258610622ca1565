"""card-agent: the kiosk's card agent.

The version has one source, `[project].version` in pyproject.toml. An installed
distribution (a wheel, or `pip install -e .`) carries it in its metadata. A source tree
used without installing (PYTHONPATH=. from a checkout) has no metadata: the version is
then read from the checkout's pyproject.toml, and "0+unknown" if there is none either.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "card-agent"


def _source_tree_version() -> str:
    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    except (OSError, ValueError, KeyError):
        return "0+unknown"
    if project.get("name") != DISTRIBUTION:
        return "0+unknown"
    return str(project.get("version", "0+unknown"))


try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:
    __version__ = _source_tree_version()
