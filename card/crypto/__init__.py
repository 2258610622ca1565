"""Crypto helpers: DER, SM2/SM3, RSA PKCS#1 v1.5 and X.509 certificates (see each module)."""
