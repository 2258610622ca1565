"""Constants of the card profile this project speaks (docs/card-profile.md).

The real E-Port card's APDUs are not public. This profile is built on ISO 7816-4/-8;
the AID, file identifiers, tags and algorithm references are this project's own
choices and are documented as such.
"""

from __future__ import annotations

from enum import IntEnum

from card.eport.kinds import CardType

# Application identifier: RID D1 56 00 00 01 ('D' = national registration,
# 156 = China), PIX "EPORT". Our own choice.
EPORT_AID = bytes.fromhex("D15600000145504F5254")

# Elementary files inside the application (free read).
FID_CARD_INFO = 0xC001
FID_SIGN_CERT = 0xC002
FID_ENC_CERT = 0xC003

# The user PIN: reference data qualifier (ISO 7816-4 P2, "specific" reference 1).
PIN_REF = 0x81
# The issuer's unblock code (RESET RETRY COUNTER).
PUK_REF = 0x82
PIN_BLOCK_LEN = 16  # a PIN is ASCII, right-padded with 0xFF to 16 bytes
PIN_MIN_LEN = 6
PIN_MAX_LEN = 16

# Security environment
KEY_REF_SIGN = 0x01


class AlgorithmRef(IntEnum):
    """MSE:SET algorithm reference (tag 80)."""

    SM2_SM3 = 0x01  # input e = SM3(Z || M), 32 bytes; output r || s, 64 bytes
    RSA_PKCS1 = 0x02  # input DigestInfo; card pads (PKCS#1 v1.5, type 1)


# The card-type byte (TAG_CARD_TYPE) for each kind of card.
CARD_TYPE_CODES: dict[CardType, int] = {
    CardType.LEGAL_PERSON: 0x01,  # 法人卡
    CardType.OPERATOR: 0x02,  # 操作员卡
}
CARD_TYPE_BY_CODE: dict[int, CardType] = {code: kind for kind, code in CARD_TYPE_CODES.items()}


# Instructions
INS_SELECT = 0xA4
INS_READ_BINARY = 0xB0
INS_VERIFY = 0x20
INS_CHANGE_REFERENCE_DATA = 0x24
INS_RESET_RETRY_COUNTER = 0x2C
INS_MSE = 0x22
INS_PSO = 0x2A
INS_GET_RESPONSE = 0xC0
INS_GET_CHALLENGE = 0x84

# SELECT P1/P2
SELECT_BY_AID = 0x04
SELECT_BY_FID = 0x02  # EF under the current DF
SELECT_RETURN_FCI = 0x00
SELECT_NO_RESPONSE = 0x0C

# MSE:SET for digital signature template
MSE_SET_DST_P1 = 0x41
MSE_SET_DST_P2 = 0xB6
# PSO: COMPUTE DIGITAL SIGNATURE
PSO_CDS_P1 = 0x9E
PSO_CDS_P2 = 0x9A

# VERIFY P1=FF with no data: reset the verification status (ISO 7816-4:2013).
VERIFY_RESET_P1 = 0xFF

# FCI tags (SELECT by AID)
TAG_FCI = 0x6F
TAG_DF_NAME = 0x84
TAG_PROPRIETARY = 0xA5
TAG_PROFILE_VERSION = 0x80
TAG_ALGORITHM = 0x81
TAG_MAX_COMMAND_DATA = 0x82
TAG_MAX_RESPONSE_DATA = 0x83
TAG_FLAGS = 0x84
FLAG_EXTENDED_LENGTH = 0x01
FLAG_CHAINING = 0x02

# EF.CARDINFO: template E1 holding primitive tags
TAG_CARD_INFO = 0xE1
TAG_CARD_NUMBER = 0xC1
TAG_HOLDER_NAME = 0xC2
TAG_COMPANY_NAME = 0xC3
TAG_USCC = 0xC4
TAG_CARD_TYPE = 0xC5
TAG_ENTERPRISE_CODE = 0xC6

PROFILE_VERSION = 1
