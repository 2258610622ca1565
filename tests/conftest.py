"""Fixtures shared by every tier."""

from tests.pcscd_support import apdus, make_card, pcscd, plug, watch

__all__ = ["apdus", "make_card", "pcscd", "plug", "watch"]
