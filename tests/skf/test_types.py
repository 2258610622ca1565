"""The binding's structures and conversions: layouts against the standard's arithmetic
and against the C compiler (softskf's own packed definitions), ABI-width safety, blobs,
name lists."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from card.errors import ProtocolError
from card.skf import types as t

# GM/T 0016 layouts (GmSSL skf.h, #pragma pack(1), 32-bit ULONG): field -> offset
EXPECTED = {
    t.DevInfo: (
        294,
        {
            "Version": 0,
            "Manufacturer": 2,
            "Issuer": 66,
            "Label": 130,
            "SerialNumber": 162,
            "HWVersion": 194,
            "FirmwareVersion": 196,
            "AlgSymCap": 198,
            "AlgAsymCap": 202,
            "AlgHashCap": 206,
            "DevAuthAlgId": 210,
            "TotalSpace": 214,
            "FreeSpace": 218,
            "MaxECCBufferSize": 222,
            "MaxBufferSize": 226,
            "Reserved": 230,
        },
    ),
    t.EccPublicKeyBlob: (132, {"BitLen": 0, "XCoordinate": 4, "YCoordinate": 68}),
    t.EccSignatureBlob: (128, {"r": 0, "s": 64}),
    t.RsaPublicKeyBlob: (268, {"AlgID": 0, "BitLen": 4, "Modulus": 8, "PublicExponent": 264}),
}
C_NAMES = {
    t.DevInfo: "DEVINFO",
    t.EccPublicKeyBlob: "ECCPUBLICKEYBLOB",
    t.EccSignatureBlob: "ECCSIGNATUREBLOB",
    t.RsaPublicKeyBlob: "RSAPUBLICKEYBLOB",
}


@pytest.mark.parametrize("struct", list(EXPECTED), ids=lambda s: s.__name__)
def test_structure_layout_matches_the_standard(struct: type[ctypes.Structure]) -> None:
    size, offsets = EXPECTED[struct]
    assert ctypes.sizeof(struct) == size
    assert {name: getattr(struct, name).offset for name in offsets} == offsets


def _c_layout(library: Path) -> dict[str, int]:
    lib = ctypes.CDLL(str(library))
    buffer = ctypes.create_string_buffer(4096)
    assert lib.SOFTSKF_Layout(buffer, len(buffer)) == 0
    pairs = (item.split("=") for item in buffer.value.decode().split())
    return {key: int(value) for key, value in pairs}


@pytest.mark.parametrize("struct", list(EXPECTED), ids=lambda s: s.__name__)
def test_structure_layout_matches_the_c_compiler(
    struct: type[ctypes.Structure], softskf_path: Path
) -> None:
    layout = _c_layout(softskf_path)
    c_name = C_NAMES[struct]
    assert layout[c_name] == ctypes.sizeof(struct)
    for name in EXPECTED[struct][1]:
        assert layout[f"{c_name}.{name}"] == getattr(struct, name).offset, name


def test_cell_survives_a_library_that_writes_64_bits() -> None:
    cell = t.Cell(7)
    # A library with a 64-bit ULONG/BOOL writes 8 bytes: no overflow into a neighbour,
    # and the low 32 bits are the value.
    ctypes.memmove(ctypes.byref(cell), (5).to_bytes(8, "little"), 8)
    assert cell.value == 5
    # A 32-bit library writes only the low half (the high half stays zero).
    cell = t.Cell()
    ctypes.memmove(ctypes.byref(cell), (0xFFFFFFFE).to_bytes(4, "little"), 4)
    assert cell.value == 0xFFFFFFFE
    with pytest.raises(ValueError):
        t.Cell().value = 1 << 32


def test_ecc_blob_round_trip_is_right_aligned() -> None:
    point = b"\x04" + bytes(range(1, 33)) + bytes(range(33, 65))
    blob = t.point_to_ecc_blob(point)
    raw = bytes(blob)
    assert raw[:4] == (256).to_bytes(4, "little")
    assert raw[4:36] == bytes(32)
    assert raw[36:68] == point[1:33]
    assert raw[68:100] == bytes(32)
    assert raw[100:] == point[33:]
    assert t.ecc_blob_to_point(raw) == point


def test_ecc_blob_refuses_what_is_not_an_sm2_key() -> None:
    point = b"\x04" + b"\x01" * 64
    raw = bytearray(bytes(t.point_to_ecc_blob(point)))
    with pytest.raises(ProtocolError, match="132"):
        t.ecc_blob_to_point(bytes(raw[:-1]))
    raw[4] = 1  # a byte left of the 32-byte coordinate: left-aligned or a bigger curve
    with pytest.raises(ProtocolError, match="right-aligned"):
        t.ecc_blob_to_point(bytes(raw))
    raw = bytearray(bytes(t.point_to_ecc_blob(point)))
    raw[0:4] = (0).to_bytes(4, "little")  # BitLen 0
    with pytest.raises(ProtocolError, match="bits"):
        t.ecc_blob_to_point(bytes(raw))
    with pytest.raises(ValueError):
        t.point_to_ecc_blob(b"\x02" + b"\x01" * 32)


def test_signature_blob_to_raw() -> None:
    blob = t.EccSignatureBlob()
    ctypes.memmove(ctypes.addressof(blob.r) + 32, b"\x11" * 32, 32)
    ctypes.memmove(ctypes.addressof(blob.s) + 32, b"\x22" * 32, 32)
    assert t.signature_blob_to_raw(blob) == b"\x11" * 32 + b"\x22" * 32
    blob.s[0] = 1
    with pytest.raises(ProtocolError, match="signature s"):
        t.signature_blob_to_raw(blob)


def test_rsa_blob_to_key() -> None:
    modulus = (1 << 1023) | 0x1234567
    blob = t.RsaPublicKeyBlob()
    blob.AlgID = t.SGD_RSA
    blob.BitLen = 1024
    ctypes.memmove(ctypes.addressof(blob.Modulus) + 128, modulus.to_bytes(128, "big"), 128)
    ctypes.memmove(ctypes.addressof(blob.PublicExponent), (65537).to_bytes(4, "big"), 4)
    key = t.rsa_blob_to_key(bytes(blob))
    assert (key.modulus, key.exponent, key.bits) == (modulus, 65537, 1024)
    blob.BitLen = 1001
    with pytest.raises(ProtocolError, match="1001 bits"):
        t.rsa_blob_to_key(bytes(blob))
    blob.BitLen = 2048  # the modulus is only 1024 bits long
    with pytest.raises(ProtocolError, match="implausible"):
        t.rsa_blob_to_key(bytes(blob))
    with pytest.raises(ProtocolError, match="268"):
        t.rsa_blob_to_key(b"\0" * 10)


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (b"a\0bc\0\0", [b"a", b"bc"]),
        (b"a\0bc\0", [b"a", b"bc"]),  # single final NUL
        (b"a\0bc", [b"a", b"bc"]),  # no final NUL at all
        (b"a\0\0garbage\0\0", [b"a"]),  # bytes after the terminator
        (b"\0", []),
        (b"\0\0", []),
        (b"", []),
    ],
)
def test_parse_name_list(raw: bytes, names: list[bytes]) -> None:
    assert t.parse_name_list(raw) == names


def test_decode_text_utf8_gb18030_and_padding() -> None:
    assert t.decode_text("中国电子口岸".encode() + b"\0junk") == "中国电子口岸"
    assert t.decode_text("飞天诚信".encode("gbk")) == "飞天诚信"
    assert t.decode_text(b"SERIAL  " + b"\0" * 8) == "SERIAL"
    assert t.decode_text(b"ABCD" * 8) == "ABCD" * 8  # a full field has no NUL


def test_device_info_from_struct() -> None:
    info = t.DevInfo()
    info.Version.major, info.Version.minor = 1, 0
    ctypes.memmove(ctypes.addressof(info.SerialNumber), b"8900000012345", 13)
    ctypes.memmove(ctypes.addressof(info.Manufacturer), "厂商".encode(), 6)
    info.AlgAsymCap = t.SGD_SM2_1 | t.SGD_RSA
    info.MaxBufferSize = 2048
    parsed = t.DeviceInfo.from_struct(info)
    assert parsed.serial_number == "8900000012345"
    assert parsed.manufacturer == "厂商"
    assert parsed.asym_caps == t.SGD_SM2_1 | t.SGD_RSA
    assert parsed.max_buffer_size == 2048
    assert parsed.version == (1, 0)
