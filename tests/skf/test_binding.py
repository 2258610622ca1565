"""SkfLibrary against softskf: loading, both size-query conventions, sizes that lie,
multi-string name lists, optional functions."""

from __future__ import annotations

import ctypes.util
from pathlib import Path

import pytest

from card.errors import CardError
from card.skf.binding import SkfLibrary, SkfLibraryUnavailable, SkfName
from card.skf.sar import SkfProtocolError
from tests.skf.conftest import SoftSkf
from tests.skf.softskf.store import StoreApplication, StoreContainer, StoreDevice, StorePin


def _device(name: str, apps: int = 1, containers: int = 3) -> StoreDevice:
    return StoreDevice(
        name,
        serial="S-" + name,
        applications=[
            StoreApplication(
                f"APP{a}",
                StorePin("88888888"),
                containers=[StoreContainer(f"C{a}-{c}", 0) for c in range(containers)],
            )
            for a in range(apps)
        ],
    )


def test_missing_library_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "libnothere.so"
    with pytest.raises(SkfLibraryUnavailable, match=r"libnothere\.so") as caught:
        SkfLibrary(path)
    assert not caught.value.retryable


def test_a_library_without_the_skf_functions_is_refused() -> None:
    libcrypto = ctypes.util.find_library("crypto")
    assert libcrypto is not None
    with pytest.raises(SkfLibraryUnavailable, match=r"SKF_EnumDev.*SKF_RSASignData"):
        SkfLibrary(libcrypto)


def test_optional_functions(softskf_path: Path, softskf_noevents_path: Path) -> None:
    full = SkfLibrary(softskf_path)
    assert full.has_dev_events
    assert full.has_digest
    bare = SkfLibrary(softskf_noevents_path)
    # ctypes resolves a symbol with dlsym: a missing one is an AttributeError, which the
    # binding turns into "not exported".
    assert not bare.has_dev_events
    assert not bare.exports("SKF_WaitForDevEvent")
    assert bare.has_digest


@pytest.mark.parametrize("convention", ["ok", "too_small"])
def test_both_size_query_conventions(softskf: SoftSkf, convention: str) -> None:
    softskf.load(_device("Token A", apps=2), _device("Token B"))
    softskf.control.size_convention(convention)  # type: ignore[arg-type]
    lib = softskf.library
    assert [n.text for n in lib.enum_dev(True)] == ["Token A", "Token B"]
    device = lib.connect_dev(SkfName(b"Token A"))
    assert [n.text for n in lib.enum_application(device)] == ["APP0", "APP1"]
    app = lib.open_application(device, SkfName(b"APP1"))
    assert [n.text for n in lib.enum_container(app)] == ["C1-0", "C1-1", "C1-2"]
    for close, handle in ((lib.close_application, app), (lib.disconnect_dev, device)):
        close(handle)
    assert softskf.open_handles() == 0


@pytest.mark.parametrize("convention", ["ok", "too_small"])
def test_certificate_export_with_both_conventions(softskf: SoftSkf, convention: str) -> None:
    state = softskf.load_card("operator-sm2")
    softskf.control.size_convention(convention)  # type: ignore[arg-type]
    with softskf.open() as driver:
        assert driver.certificate() == state.sign_cert


def test_empty_lists(softskf: SoftSkf) -> None:
    softskf.load(StoreDevice("Lonely"))
    lib = softskf.library
    device = lib.connect_dev(SkfName(b"Lonely"))
    assert lib.enum_application(device) == []
    lib.disconnect_dev(device)
    softskf.control.pull()
    assert lib.enum_dev(True) == []
    assert [n.text for n in lib.enum_dev(False)] == ["Lonely"]  # supported, not present


def test_a_size_query_that_answers_too_little_is_survived(softskf: SoftSkf) -> None:
    state = softskf.load_card("legal-person-sm2")
    softskf.control.wrong_size("SKF_ExportCertificate", "short")
    with softskf.open() as driver:
        # The fetch with the short buffer answers SAR_BUFFER_TOO_SMALL and the true size;
        # the binding asks again with that size.
        assert driver.certificate() == state.sign_cert


def test_a_library_claiming_more_than_the_buffer_holds_is_refused(softskf: SoftSkf) -> None:
    softskf.load(_device("Token A"), _device("Token B"))
    softskf.control.wrong_size("SKF_EnumDev", "overflow")
    with pytest.raises(SkfProtocolError, match="bytes written into a"):
        softskf.library.enum_dev(True)


def test_names_are_passed_back_byte_for_byte(softskf: SoftSkf) -> None:
    softskf.load(_device("飞天 ePass3000GM 0"))
    lib = softskf.library
    (name,) = lib.enum_dev(True)
    assert name.text == "飞天 ePass3000GM 0"
    assert name.raw == "飞天 ePass3000GM 0".encode()
    device = lib.connect_dev(name)
    lib.disconnect_dev(device)


def test_a_name_the_library_does_not_know(softskf: SoftSkf) -> None:
    softskf.load(_device("Token A"))
    with pytest.raises(CardError, match="SAR_INVALIDPARAMERR"):
        softskf.library.connect_dev(SkfName(b"Token Z"))
