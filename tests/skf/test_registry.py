"""card.registry: the driver registry format, ATR masks, matching, precedence, errors, and
an SKF entry opening a driver."""

from __future__ import annotations

from pathlib import Path

import pytest

from card.eport.driver import CardType
from card.registry import (
    EportApduDriver,
    Observation,
    RegistryError,
    SkfLibraryDriver,
    load_registry,
    parse_atr_pattern,
    parse_registry,
)
from card.skf.driver import open_skf_driver
from simulator.card_os import build_atr
from tests.skf.conftest import SoftSkf

SIMULATOR = "card-agent-simulator"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the shipped file ---------------------------------------------------------------------


def test_the_shipped_registry_matches_the_simulated_card() -> None:
    registry = load_registry()
    entry = registry.entry(SIMULATOR)
    assert isinstance(entry.driver, EportApduDriver)
    for serial in (b"EPORT-SIM001", b"EPORT-SIM042", b"EPORT-SIMXYZ"):
        match = registry.match(Observation(atr=build_atr(serial)))
        assert match.entry is entry
        assert match.reasons == ()


def test_nothing_matches_a_foreign_card_and_the_reasons_say_why() -> None:
    registry = load_registry()
    foreign = bytes.fromhex("3B 02 14 50")
    match = registry.match(Observation(atr=foreign, reader="Generic Reader 00"))
    assert match.entry is None
    assert match.reasons == (
        f"{SIMULATOR} (card/data/drivers.toml): ATR 3B 02 14 50 matches none of its ATR patterns",
    )
    assert "no ATR was seen" in registry.match(Observation(reader="x")).reasons[0]
    other_name = build_atr(b"EPORT-SIN001")  # one letter off in the fixed part
    assert registry.match(Observation(atr=other_name)).entry is None


# --- ATR patterns -------------------------------------------------------------------------


def test_wildcard_and_mask_patterns() -> None:
    wildcard = parse_atr_pattern("3B 8C:80 01 .. 4?")
    assert wildcard.value == bytes.fromhex("3B8C80010040")
    assert wildcard.mask == bytes.fromhex("FFFFFFFF00F0")
    assert wildcard.matches(bytes.fromhex("3B8C8001AA4F"))
    assert not wildcard.matches(bytes.fromhex("3B8C8001AA5F"))
    assert not wildcard.matches(bytes.fromhex("3B8C8001AA4F00"))  # length is part of it
    masked = parse_atr_pattern("3B8C/FFF0")  # bit-level: 3B 80..8F
    assert [masked.matches(bytes((0x3B, b))) for b in (0x7C, 0x80, 0x8F, 0x9C)] == [
        False,
        True,
        True,
        False,
    ]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "non-empty"),
        ("3B 8", "odd number"),
        ("3B 8G", "only hex digits"),
        ("3B8C/FF", "value has 2 bytes, mask 1"),
        ("3B8C/FFZZ", "must be hex"),
        ("3B", "an ATR has 2 to 33"),
        ("3B" * 34, "an ATR has 2 to 33"),
    ],
)
def test_malformed_patterns(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_atr_pattern(pattern)


# --- matching -----------------------------------------------------------------------------

OVERRIDE = """
version = 1

[[driver]]
name = "kiosk-skf-token"
driver = "skf"
library = "/opt/vendor/lib/libskf.so"
devices = ["ePass3000GM*", "ES3000GM *"]
application = "EPORT_APP"
card_type = "legal_person"

[[driver]]
name = "kiosk-reader-card"
description = "a card in the kiosk's own reader, by ATR and reader name"
driver = "skf"
library = "/opt/vendor/lib/libskf.so"
atr = ["3B 9F .. .. .. .."]
readers = ["Kiosk Reader*"]
"""


def test_skf_entries_match_device_names_and_reader_plus_atr(tmp_path: Path) -> None:
    registry = load_registry(_write(tmp_path, "override.toml", OVERRIDE))
    token = registry.match(Observation(skf_device="epass3000gm 0")).entry  # case-insensitive
    assert token is not None
    assert token.name == "kiosk-skf-token"
    assert token.driver == SkfLibraryDriver(
        Path("/opt/vendor/lib/libskf.so"), "EPORT_APP", None, CardType.LEGAL_PERSON
    )
    atr = bytes.fromhex("3B 9F 01 02 03 04")
    both = registry.match(Observation(atr=atr, reader="Kiosk Reader 00"))
    assert both.entry is not None
    assert both.entry.name == "kiosk-reader-card"
    assert both.reasons == (
        f"kiosk-skf-token ({tmp_path / 'override.toml'}): no SKF device name was seen",
    )
    wrong_reader = registry.match(Observation(atr=atr, reader="Other Reader 00"))
    assert wrong_reader.entry is None  # every criterion must match
    assert "reader 'Other Reader 00' matches none of ['Kiosk Reader*']" in wrong_reader.reasons[1]
    assert wrong_reader.reasons[2].startswith(SIMULATOR)


def test_override_entries_come_first_and_replace_by_name(tmp_path: Path) -> None:
    first = _write(
        tmp_path,
        "first.toml",
        f"""
version = 1
[[driver]]
name = "{SIMULATOR}"
driver = "skf"
library = "/opt/a/libskf.so"
atr = ["3B 8C 80 01 45 50 4F 52 54 2D 53 49 4D .. .. .. .."]
""",
    )
    second = _write(
        tmp_path,
        "second.toml",
        f"""
version = 1
[[driver]]
name = "{SIMULATOR}"
driver = "eport-apdu"
enabled = false
atr = ["3B .."]
[[driver]]
name = "catch-all"
driver = "eport-apdu"
atr = ["3B 8C 80 01 45 50 4F 52 54 2D 53 49 4D .. .. .. .."]
""",
    )
    registry = load_registry(first, second)
    assert [e.name for e in registry.entries] == [SIMULATOR, "catch-all"]  # one of each name
    chosen = registry.match(Observation(atr=build_atr())).entry
    assert chosen is not None
    assert chosen.source == str(first)
    assert isinstance(chosen.driver, SkfLibraryDriver)
    # The other order: the disabled entry shadows the shipped one, the next entry serves.
    registry = load_registry(second, first)
    match = registry.match(Observation(atr=build_atr()))
    assert match.entry is not None
    assert match.entry.name == "catch-all"
    assert match.reasons == (f"{SIMULATOR} ({second}): disabled",)
    assert len(load_registry(second, shipped=False).entries) == 2


def test_missing_override_files(tmp_path: Path) -> None:
    absent = tmp_path / "absent.toml"
    with pytest.raises(RegistryError, match="no such driver registry file"):
        load_registry(absent)
    assert [e.name for e in load_registry(absent, missing_ok=True).entries] == [SIMULATOR]
    empty = load_registry(absent, shipped=False, missing_ok=True)
    assert empty.match(Observation(atr=build_atr())).reasons == ("the driver registry is empty",)


# --- strict loading -----------------------------------------------------------------------

_ENTRY = 'name = "x"\ndriver = "eport-apdu"\natr = ["3B 00"]\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = 1\n[[driver]\n", "not valid TOML"),
        ('[[driver]]\nname = "x"\n', "version = 1 is required"),
        ("version = 2\n", "version = 1 is required, got 2"),
        ("version = 1\nextra = true\n", "unknown top-level key"),
        ('version = 1\ndriver = "x"\n', "array of tables"),
        ('version = 1\n[[driver]]\nname = "bad name"\n', "name must be"),
        ('version = 1\n[[driver]]\nname = "x"\ndriver = "pkcs11"\n', "driver must be"),
        (f"version = 1\n[[driver]]\n{_ENTRY}colour = 1\n", r"driver 'x': unknown key\(s\) colour"),
        (f'version = 1\n[[driver]]\n{_ENTRY}library = "/x.so"\n', "unknown key.* library"),
        (f'version = 1\n[[driver]]\n{_ENTRY}devices = ["d"]\n', "skf drivers only"),
        ('version = 1\n[[driver]]\nname = "x"\ndriver = "eport-apdu"\n', "names nothing"),
        ('version = 1\n[[driver]]\nname = "x"\ndriver = "skf"\ndevices=["a"]\n', "needs library"),
        (
            'version = 1\n[[driver]]\nname = "x"\ndriver = "skf"\nlibrary = "lib.so"\n',
            "absolute path",
        ),
        (
            'version = 1\n[[driver]]\nname = "x"\ndriver = "skf"\nlibrary = "/l.so"\n'
            'devices = ["a"]\ncard_type = "boss"\n',
            "card_type 'boss' is not one of legal_person, operator",
        ),
        (
            'version = 1\n[[driver]]\nname = "x"\ndriver = "skf"\nlibrary = "/l.so"\n'
            'devices = ["a"]\napplication = ""\n',
            "application must be a non-empty string",
        ),
        ('version = 1\n[[driver]]\nname = "x"\ndriver = "eport-apdu"\natr = "3B00"\n', "list"),
        ('version = 1\n[[driver]]\nname = "x"\ndriver = "eport-apdu"\natr = []\n', "is empty"),
        ('version = 1\n[[driver]]\nname = "x"\ndriver = "eport-apdu"\natr = ["3B0"]\n', "odd"),
        (f"version = 1\n[[driver]]\n{_ENTRY}enabled = 1\n", "enabled must be true or false"),
        (f"version = 1\n[[driver]]\n{_ENTRY}description = 3\n", "description must be"),
        (f"version = 1\n[[driver]]\n{_ENTRY}[[driver]]\n{_ENTRY}", "'x' appears twice"),
    ],
)
def test_strict_errors_name_the_file_and_entry(text: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message) as caught:
        parse_registry(text, "/etc/card-agent/drivers.toml")
    assert str(caught.value).startswith("/etc/card-agent/drivers.toml: ")


def test_a_bad_override_file_is_reported_with_its_path(tmp_path: Path) -> None:
    path = _write(tmp_path, "drivers.toml", "version = 1\n[[driver]]\nname = 5\n")
    with pytest.raises(RegistryError, match=rf"{tmp_path}/drivers.toml: driver\[0\]: name"):
        load_registry(path)


# --- from entry to driver -----------------------------------------------------------------


def test_an_skf_entry_opens_a_driver(softskf: SoftSkf, tmp_path: Path) -> None:
    softskf.load_card("legal-person-sm2", device="ES3000GM 0")
    path = _write(
        tmp_path,
        "drivers.toml",
        f"""
version = 1
[[driver]]
name = "softskf"
driver = "skf"
library = "{softskf.library_path}"
devices = ["ES3000GM *"]
application = "EPORT"
card_type = "legal_person"
""",
    )
    registry = load_registry(path)
    match = registry.match(Observation(skf_device="ES3000GM 0"))
    assert match.entry is not None
    assert isinstance(match.entry.driver, SkfLibraryDriver)
    with open_skf_driver(match.entry.driver, "ES3000GM 0") as driver:
        assert driver.discovery.application == "EPORT"
        assert driver.card_info().card_type is CardType.LEGAL_PERSON
        assert driver.card_info().holder_name == "张伟"
