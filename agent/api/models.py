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


# --- which card is this (card.identify): field names as the dataclasses' ------------------


class _Report(_Answer):
    model_config = ConfigDict(frozen=True, from_attributes=True)


class DriverAnswer(_Report):
    driver: Literal["eport-apdu", "skf"]
    why: str = Field(description="The registry entry that chose it, or the fallback")
    entry: str | None = Field(description="The driver registry entry's name")
    source: str | None = Field(description="The registry file the entry came from")
    library: str | None = Field(description="SKF: the vendor library")
    device: str | None
    application: str | None
    container: str | None


class AtrAnswer(_Report):
    hex: str
    convention: str | None
    protocols: list[int]
    historical_bytes: str = Field(description="hex")
    historical_text: str = Field(description="printable ASCII, '.' for the rest")
    tck: Literal["ok", "wrong", "absent", "unknown"]
    known_as: str | None
    error: str | None = Field(description="Why the ATR does not parse, if it does not")


class RegistryAnswer(_Report):
    entry: str | None = Field(description="The first matching entry; null: none matches")
    driver: Literal["eport-apdu", "skf"] | None
    source: str | None
    description: str
    reasons: list[str] = Field(description="Why each entry tried before did not match")


class AidAnswer(_Report):
    name: str
    aid: str = Field(description="hex")
    sw: str = Field(description="The status word of SELECT (empty: no valid answer)")
    selected: bool
    fci: str | None = Field(description="The first bytes of the FCI, hex")


class SkfContainerAnswer(_Report):
    name: str
    type: str


class SkfApplicationAnswer(_Report):
    name: str
    containers: list[SkfContainerAnswer]
    error: str | None


class SkfDeviceAnswer(_Report):
    name: str
    registry: RegistryAnswer
    manufacturer: str | None
    issuer: str | None
    label: str | None
    serial_number: str | None = Field(description="Masked: the last four characters")
    version: str | None
    hardware_version: str | None
    firmware_version: str | None
    applications: list[SkfApplicationAnswer]
    error: str | None


class SkfAnswer(_Report):
    library: str
    device_events: bool = Field(description="Exports SKF_WaitForDevEvent")
    devices: list[SkfDeviceAnswer]
    error: str | None


class IdentifyAnswer(_Report):
    backend: str
    reader: str | None
    atr: AtrAnswer | None = Field(description="null: the backend sees none (SKF)")
    registry: RegistryAnswer | None
    applications: list[AidAnswer] = Field(description="SELECT of well-known AIDs")
    skf: SkfAnswer | None = Field(description="What the SKF library enumerates")
    notes: list[str]


class ErrorBody(_Answer):
    code: ErrorCode
    message: str
    details: dict[str, Any] | None = None


class ErrorAnswer(_Answer):
    error: ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries: these statuses answer an `ErrorAnswer`."""
    return {status: {"model": ErrorAnswer} for status in statuses}
