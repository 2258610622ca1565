"""Kinds of E-Port cards (shared by the driver interface and the APDU profile)."""

from __future__ import annotations

from enum import StrEnum


class CardType(StrEnum):
    LEGAL_PERSON = "legal_person"  # 法人卡
    OPERATOR = "operator"  # 操作员卡
