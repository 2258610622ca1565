"""Fixtures shared by every tier."""

import os
from collections.abc import Iterator

import pytest

from tests.pcscd_support import apdus, make_card, pcscd, plug, watch

__all__ = ["apdus", "make_card", "pcscd", "plug", "watch"]


@pytest.fixture(autouse=True)
def _restore_umask() -> Iterator[None]:
    """An in-process agent sets the process umask to 0o077 for its state files (as the
    daemon should); the tests after it must not inherit that."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)
