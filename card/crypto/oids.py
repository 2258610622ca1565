"""Object identifiers the crypto helpers use, in one place."""

from __future__ import annotations

# GM/T 0006 (Chinese commercial cryptography)
SM2_CURVE = "1.2.156.10197.1.301"
SM2_WITH_SM3 = "1.2.156.10197.1.501"
SM3 = "1.2.156.10197.1.401"

# RFC 5480 / RFC 8017
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
SHA1_WITH_RSA = "1.2.840.113549.1.1.5"
SHA256_WITH_RSA = "1.2.840.113549.1.1.11"
SHA1 = "1.3.14.3.2.26"
SHA256 = "2.16.840.1.101.3.4.2.1"

# RFC 5280 names and extensions
COUNTRY = "2.5.4.6"
ORGANIZATION = "2.5.4.10"
ORG_UNIT = "2.5.4.11"
COMMON_NAME = "2.5.4.3"
SUBJECT_KEY_ID = "2.5.29.14"
KEY_USAGE = "2.5.29.15"
BASIC_CONSTRAINTS = "2.5.29.19"
AUTHORITY_KEY_ID = "2.5.29.35"

# China E-Port private extensions (company name, organisation code, ...)
EPORT_ARC = "1.3.6.1.4.1.5315.100"
EPORT_COMPANY_NAME = EPORT_ARC + ".1"
EPORT_ORG_CODE = EPORT_ARC + ".2"
