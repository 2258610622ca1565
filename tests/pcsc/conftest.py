"""The PC/SC tier. Its fixtures (a private pcscd with vpcd readers) live in
tests/pcscd_support.py, registered for the whole suite by tests/conftest.py, so that
other tiers can run against the PC/SC backend too."""

from __future__ import annotations

import pytest

from tests.pcscd_support import _in_ci, _pyscard_missing

# The test modules import pyscard at the top, so without it they cannot even be
# collected: leave them out and say why in the summary. In CI let them fail loudly.
if _pyscard_missing() and not _in_ci():
    collect_ignore_glob = ["test_*.py"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if "collect_ignore_glob" in globals():
        terminalreporter.write_line(
            "PC/SC tier skipped: pyscard not installed (pip install -e '.[pcsc]')", yellow=True
        )
