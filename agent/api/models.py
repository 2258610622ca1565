"""What the native API reads and answers, as pydantic models: validated on the way in,
described in the OpenAPI document on the way out (`/v1/openapi.json`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agent.vocabulary import ErrorCode, Purpose
from card.eport.driver import CardType, SignAlgorithm

# --- requests ----------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PairRequestBody(_Body):
    client_name: str = Field(min_length=1, max_length=64)


class PairClaimBody(_Body):
    request_id: str = Field(min_length=1, max_length=128)


class PinVerifyBody(_Body):
    pin: SecretStr = Field(min_length=1, max_length=64)
    confirm_final_try: bool = False


class PinChangeBody(_Body):
    old_pin: SecretStr = Field(min_length=1, max_length=64)
    new_pin: SecretStr = Field(min_length=1, max_length=64)
    confirm_final_try: bool = False


class SignBody(_Body):
    purpose: Purpose
    title: str = Field(min_length=1, max_length=200)
    data: str | None = Field(None, description="The document, base64")
    digest: str | None = Field(
        None,
        description="Precomputed digest, base64: SM2 e = SM3(Z||M) (32 bytes); "
        "RSA the SHA-1 (20) or SHA-256 (32) hash of the document",
    )
    signature_format: Literal["raw", "der"] = "raw"


# --- answers -----------------------------------------------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


class StatusAnswer(_Answer):
    version: str
    api: Literal["v1"] = "v1"
    backend: str
    reader_present: bool
    card_present: bool


class PairAnswer(_Answer):
    request_id: str
    code: str = Field(description="Show it to the kiosk operator, who approves it")
    expires_at: float


class PairPendingAnswer(_Answer):
    status: Literal["pending"] = "pending"


class PairApprovedAnswer(_Answer):
    status: Literal["approved"] = "approved"
    token: str


class CardAnswer(_Answer):
    card_number: str
    holder_name: str
    company_name: str
    uscc: str
    card_type: CardType
    enterprise_code: str | None


class CertificateSubject(_Answer):
    cn: str | None
    ou: str | None
    o: str | None


class CertificateAnswer(_Answer):
    certificate_number: str
    subject: CertificateSubject
    issuer_cn: str | None
    not_before: str
    not_after: str
    days_left: float
    key_algorithm: str
    key_bits: int
    pem: str


class CertificatesAnswer(_Answer):
    sign: CertificateAnswer
    encrypt: CertificateAnswer


class PinStatusAnswer(_Answer):
    tries_left: int | None = Field(description="None while the card is verified")
    blocked: bool
    verified: bool


class SessionInfo(_Answer):
    expires_in_s: float


class VerifiedCard(_Answer):
    card_number: str = Field(description="Masked: the last four characters")
    holder_name: str
    company_name: str


class VerifyAnswer(_Answer):
    session: SessionInfo
    card: VerifiedCard


class ChangedAnswer(_Answer):
    changed: bool


class SignAnswer(_Answer):
    signature: str = Field(description="base64")
    signature_format: Literal["raw", "der", "pkcs1"]
    algorithm: SignAlgorithm
    digest: str = Field(description="What the card signed, base64")
    certificate_number: str
    audit_id: str = Field(description="The audit record of this request")


class SessionEndAnswer(_Answer):
    ended: bool


class ErrorBody(_Answer):
    code: ErrorCode
    message: str
    details: dict[str, Any] | None = None


class ErrorAnswer(_Answer):
    error: ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries: these statuses answer an `ErrorAnswer`."""
    return {status: {"model": ErrorAnswer} for status in statuses}
