"""GM/T 0016 types and structures for ctypes, and their conversion to what card/ uses.

Layouts follow GmSSL's `skf.h` / `sgd.h` (the standard's header): structures are packed
(`#pragma pack(1)`), `ULONG` is a 32-bit unsigned integer, handles are `void *`.

Two ABI hazards are handled here rather than trusted:

* `BOOL` is 32-bit in most vendor headers but `long` (64-bit on LP64) in GmSSL's, and a
  few vendor headers make `ULONG` an `unsigned long` too. Passed *by value* the width does
  not matter (x86-64 and AArch64 pass them in a full register, which libffi
  zero-extends). Passed *by pointer* it does: a library writing 8 bytes into a 4-byte
  cell corrupts memory. So every `ULONG *` / `BOOL *` argument is an 8-byte zeroed
  `Cell`, read back as its low 32 bits (little-endian): right for both widths.
* Structures cannot be made width-agnostic: they assume the standard's 32-bit `ULONG`.
  Their sizes and offsets are tested against the C compiler's (tests/skf).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from card.errors import ProtocolError

ULONG = ctypes.c_uint32
BYTE = ctypes.c_ubyte
HANDLE = ctypes.c_void_p

TRUE = 1
FALSE = 0
ADMIN_TYPE = 0
USER_TYPE = 1

# SKF_WaitForDevEvent's event codes
DEV_EVENT_INSERTED = 1
DEV_EVENT_REMOVED = 2

# SKF_GetContainerType
CONTAINER_EMPTY = 0
CONTAINER_RSA = 1
CONTAINER_ECC = 2

# GM/T 0006 algorithm identifiers the driver uses
SGD_SM3 = 0x00000001
SGD_SHA1 = 0x00000002
SGD_SHA256 = 0x00000004
SGD_RSA = 0x00010000
SGD_SM2_1 = 0x00020100  # SM2 signatures

MAX_RSA_MODULUS_LEN = 256
MAX_RSA_EXPONENT_LEN = 4
ECC_MAX_COORDINATE_LEN = 64  # ECC_MAX_XCOORDINATE_BITS_LEN / 8
_SM2_COORDINATE_LEN = 32
_CELL_LOW_32 = 0xFFFFFFFF


class Cell(ctypes.Structure):
    """An out-parameter for `ULONG *` or `BOOL *`, safe for 32- and 64-bit libraries."""

    _fields_ = (("raw", ctypes.c_uint64),)

    def __init__(self, value: int = 0) -> None:
        super().__init__(value)

    @property
    def value(self) -> int:
        return int(self.raw) & _CELL_LOW_32

    @value.setter
    def value(self, value: int) -> None:
        if not 0 <= value <= _CELL_LOW_32:
            raise ValueError(f"ULONG out of range: {value}")
        self.raw = value


class Version(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("major", BYTE), ("minor", BYTE))


class DevInfo(ctypes.Structure):
    """DEVINFO (GM/T 0016 6.4.2)."""

    _pack_ = 1
    _fields_ = (
        ("Version", Version),
        ("Manufacturer", BYTE * 64),
        ("Issuer", BYTE * 64),
        ("Label", BYTE * 32),
        ("SerialNumber", BYTE * 32),
        ("HWVersion", Version),
        ("FirmwareVersion", Version),
        ("AlgSymCap", ULONG),
        ("AlgAsymCap", ULONG),
        ("AlgHashCap", ULONG),
        ("DevAuthAlgId", ULONG),
        ("TotalSpace", ULONG),
        ("FreeSpace", ULONG),
        ("MaxECCBufferSize", ULONG),
        ("MaxBufferSize", ULONG),
        ("Reserved", BYTE * 64),
    )


class EccPublicKeyBlob(ctypes.Structure):
    """ECCPUBLICKEYBLOB: coordinates right-aligned in 64-byte fields."""

    _pack_ = 1
    _fields_ = (
        ("BitLen", ULONG),
        ("XCoordinate", BYTE * ECC_MAX_COORDINATE_LEN),
        ("YCoordinate", BYTE * ECC_MAX_COORDINATE_LEN),
    )


class EccSignatureBlob(ctypes.Structure):
    """ECCSIGNATUREBLOB: r and s right-aligned in 64-byte fields."""

    _pack_ = 1
    _fields_ = (("r", BYTE * ECC_MAX_COORDINATE_LEN), ("s", BYTE * ECC_MAX_COORDINATE_LEN))


class RsaPublicKeyBlob(ctypes.Structure):
    """RSAPUBLICKEYBLOB: big-endian modulus and exponent, right-aligned."""

    _pack_ = 1
    _fields_ = (
        ("AlgID", ULONG),
        ("BitLen", ULONG),
        ("Modulus", BYTE * MAX_RSA_MODULUS_LEN),
        ("PublicExponent", BYTE * MAX_RSA_EXPONENT_LEN),
    )


# --- conversions ----------------------------------------------------------------------


def decode_text(raw: bytes) -> str:
    """A fixed-size CHAR field or a name: up to the first NUL, UTF-8 or else GB 18030
    (what Chinese vendor libraries use when not UTF-8), padding spaces stripped."""
    text = raw.split(b"\0", 1)[0]
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        decoded = text.decode("gb18030", errors="replace")
    return decoded.strip()


def _right_aligned(field: bytes, size: int, what: str) -> bytes:
    if any(field[: len(field) - size]):
        raise ProtocolError(f"{what} does not fit in {size} bytes (not right-aligned?)")
    return field[len(field) - size :]


def ecc_blob_to_point(blob: bytes) -> bytes:
    """ECCPUBLICKEYBLOB bytes -> the 65-byte uncompressed SM2 point 04||x||y."""
    if len(blob) != ctypes.sizeof(EccPublicKeyBlob):
        raise ProtocolError(
            f"ECCPUBLICKEYBLOB of {len(blob)} bytes, expected {ctypes.sizeof(EccPublicKeyBlob)}"
        )
    parsed = EccPublicKeyBlob.from_buffer_copy(blob)
    if parsed.BitLen != _SM2_COORDINATE_LEN * 8:
        raise ProtocolError(f"ECC public key of {parsed.BitLen} bits, SM2 has 256")
    x = _right_aligned(bytes(parsed.XCoordinate), _SM2_COORDINATE_LEN, "ECC X coordinate")
    y = _right_aligned(bytes(parsed.YCoordinate), _SM2_COORDINATE_LEN, "ECC Y coordinate")
    return b"\x04" + x + y


def point_to_ecc_blob(point: bytes) -> EccPublicKeyBlob:
    """04||x||y (SM2, 65 bytes) -> ECCPUBLICKEYBLOB."""
    if len(point) != 1 + 2 * _SM2_COORDINATE_LEN or point[0] != 0x04:
        raise ValueError("an SM2 point is 65 bytes 04||x||y")
    blob = EccPublicKeyBlob()
    blob.BitLen = _SM2_COORDINATE_LEN * 8
    pad = ECC_MAX_COORDINATE_LEN - _SM2_COORDINATE_LEN
    ctypes.memmove(ctypes.addressof(blob.XCoordinate) + pad, point[1:33], _SM2_COORDINATE_LEN)
    ctypes.memmove(ctypes.addressof(blob.YCoordinate) + pad, point[33:], _SM2_COORDINATE_LEN)
    return blob


def signature_blob_to_raw(blob: EccSignatureBlob) -> bytes:
    """ECCSIGNATUREBLOB -> raw r||s (64 bytes), the format of `Signature.value`."""
    r = _right_aligned(bytes(blob.r), _SM2_COORDINATE_LEN, "SM2 signature r")
    s = _right_aligned(bytes(blob.s), _SM2_COORDINATE_LEN, "SM2 signature s")
    return r + s


@dataclass(frozen=True)
class RsaPublicKey:
    modulus: int
    exponent: int
    bits: int


def rsa_blob_to_key(blob: bytes) -> RsaPublicKey:
    """RSAPUBLICKEYBLOB bytes -> modulus and exponent."""
    if len(blob) != ctypes.sizeof(RsaPublicKeyBlob):
        raise ProtocolError(
            f"RSAPUBLICKEYBLOB of {len(blob)} bytes, expected {ctypes.sizeof(RsaPublicKeyBlob)}"
        )
    parsed = RsaPublicKeyBlob.from_buffer_copy(blob)
    bits = int(parsed.BitLen)
    if bits % 8 or not 512 <= bits <= MAX_RSA_MODULUS_LEN * 8:
        raise ProtocolError(f"RSA public key of {bits} bits")
    modulus = int.from_bytes(_right_aligned(bytes(parsed.Modulus), bits // 8, "RSA modulus"), "big")
    exponent = int.from_bytes(bytes(parsed.PublicExponent), "big")
    if modulus.bit_length() != bits or exponent < 3:
        raise ProtocolError(f"RSAPUBLICKEYBLOB with an implausible {bits}-bit key")
    return RsaPublicKey(modulus, exponent, bits)


@dataclass(frozen=True)
class DeviceInfo:
    """DEVINFO as text and numbers."""

    version: tuple[int, int]
    manufacturer: str
    issuer: str
    label: str
    serial_number: str
    hardware_version: tuple[int, int]
    firmware_version: tuple[int, int]
    sym_caps: int
    asym_caps: int
    hash_caps: int
    total_space: int
    free_space: int
    max_ecc_buffer_size: int
    max_buffer_size: int

    @classmethod
    def from_struct(cls, info: DevInfo) -> DeviceInfo:
        return cls(
            version=(info.Version.major, info.Version.minor),
            manufacturer=decode_text(bytes(info.Manufacturer)),
            issuer=decode_text(bytes(info.Issuer)),
            label=decode_text(bytes(info.Label)),
            serial_number=decode_text(bytes(info.SerialNumber)),
            hardware_version=(info.HWVersion.major, info.HWVersion.minor),
            firmware_version=(info.FirmwareVersion.major, info.FirmwareVersion.minor),
            sym_caps=int(info.AlgSymCap),
            asym_caps=int(info.AlgAsymCap),
            hash_caps=int(info.AlgHashCap),
            total_space=int(info.TotalSpace),
            free_space=int(info.FreeSpace),
            max_ecc_buffer_size=int(info.MaxECCBufferSize),
            max_buffer_size=int(info.MaxBufferSize),
        )


def parse_name_list(raw: bytes) -> list[bytes]:
    """A multi-string `"a\\0b\\0\\0"` -> [b"a", b"b"].

    Ends at the first empty name (the standard's double NUL) or at the end of the data
    (some libraries omit the final NUL, or count bytes after the terminator).
    """
    names: list[bytes] = []
    for part in raw.split(b"\0"):
        if not part:
            break
        names.append(part)
    return names
