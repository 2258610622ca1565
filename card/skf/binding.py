"""`SkfLibrary`: a vendor SKF library loaded with ctypes, one typed method per call.

Every method checks the return code and raises the typed error for it
(`card.skf.sar.error_for_sar`), so callers never see a raw SAR code. Sizes are queried
the way GM/T 0016 describes (a NULL buffer first), accepting either answer vendors give
to that query: SAR_OK with the size, or SAR_BUFFER_TOO_SMALL with the size.

Thread safety: none. Many vendor libraries are not thread-safe (global state behind
every handle, a single USB/PC/SC channel without a lock), and some hang when the key is
pulled mid-call, so this binding is used from one thread only: the agent's card owner
thread. The one exception is `cancel_wait_for_dev_event`, which GM/T 0016 defines for
exactly that purpose (ending another thread's `SKF_WaitForDevEvent`).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from card.errors import ProtocolError, ServiceUnavailable
from card.skf import sar as codes
from card.skf import types as t

log = logging.getLogger(__name__)

Handle = ctypes.c_void_p
_P = ctypes.c_void_p  # every pointer argument: buffers, Cells, structures, handles
_U = t.ULONG

# name -> argument types; every function returns a ULONG.
_REQUIRED: dict[str, tuple[Any, ...]] = {
    "SKF_EnumDev": (_U, _P, _P),
    "SKF_ConnectDev": (ctypes.c_char_p, _P),
    "SKF_DisConnectDev": (_P,),
    "SKF_GetDevInfo": (_P, _P),
    "SKF_EnumApplication": (_P, _P, _P),
    "SKF_OpenApplication": (_P, ctypes.c_char_p, _P),
    "SKF_CloseApplication": (_P,),
    "SKF_GetPINInfo": (_P, _U, _P, _P, _P),
    "SKF_VerifyPIN": (_P, _U, _P, _P),
    "SKF_ChangePIN": (_P, _U, _P, _P, _P),
    "SKF_ClearSecureState": (_P,),
    "SKF_EnumContainer": (_P, _P, _P),
    "SKF_OpenContainer": (_P, ctypes.c_char_p, _P),
    "SKF_CloseContainer": (_P,),
    "SKF_GetContainerType": (_P, _P),
    "SKF_ExportCertificate": (_P, _U, _P, _P),
    "SKF_ExportPublicKey": (_P, _U, _P, _P),
    "SKF_ECCSignData": (_P, _P, _U, _P),
    "SKF_RSASignData": (_P, _P, _U, _P, _P),
}
# Resolved when present; the driver works without them.
_OPTIONAL: dict[str, tuple[Any, ...]] = {
    "SKF_WaitForDevEvent": (_P, _P, _P),
    "SKF_CancelWaitForDevEvent": (),
    "SKF_DigestInit": (_P, _U, _P, _P, _U, _P),
    "SKF_Digest": (_P, _P, _U, _P, _P),
    "SKF_CloseHandle": (_P,),
}

# Upper bounds on what we let a library make us allocate: names, certificates, blobs.
MAX_NAME_LIST = 64 * 1024
MAX_CERTIFICATE = 16 * 1024
_MAX_SIZE_ROUNDS = 4
_MAX_DEV_NAME = 1024
_MAX_RSA_SIGNATURE = t.MAX_RSA_MODULUS_LEN * 2


class SkfLibraryUnavailable(ServiceUnavailable):
    """The SKF library cannot be loaded, or lacks a function the driver needs."""

    retryable = False


@dataclass(frozen=True)
class SkfName:
    """A device, application or container name: the bytes the library gave (passed back
    unchanged) and their text."""

    raw: bytes

    @property
    def text(self) -> str:
        return t.decode_text(self.raw)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class PinInfo:
    max_retries: int
    remaining: int
    is_default: bool


@dataclass(frozen=True)
class DevEvent:
    device: SkfName
    event: int  # DEV_EVENT_INSERTED / DEV_EVENT_REMOVED; anything else: nothing happened


class SkfLibrary:
    """One loaded SKF library. Not thread-safe (module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._dll = ctypes.CDLL(str(self.path), mode=ctypes.RTLD_LOCAL)
        except OSError as exc:
            raise SkfLibraryUnavailable(f"cannot load SKF library {self.path}: {exc}") from None
        self._fn: dict[str, Any] = {}
        missing = [name for name in _REQUIRED if not self._resolve(name, _REQUIRED[name])]
        if missing:
            raise SkfLibraryUnavailable(
                f"SKF library {self.path} lacks required functions: {', '.join(missing)}"
            )
        for name, argtypes in _OPTIONAL.items():
            self._resolve(name, argtypes)

    def _resolve(self, name: str, argtypes: tuple[Any, ...]) -> bool:
        try:
            function = getattr(self._dll, name)  # dlsym; AttributeError when not exported
        except AttributeError:
            return False
        function.argtypes = argtypes
        function.restype = t.ULONG
        self._fn[name] = function
        return True

    def exports(self, name: str) -> bool:
        return name in self._fn

    @property
    def has_dev_events(self) -> bool:
        return self.exports("SKF_WaitForDevEvent") and self.exports("SKF_CancelWaitForDevEvent")

    @property
    def has_digest(self) -> bool:
        return all(self.exports(n) for n in ("SKF_DigestInit", "SKF_Digest", "SKF_CloseHandle"))

    # --- plumbing ------------------------------------------------------------------------

    def _call(self, name: str, *args: Any) -> int:
        rc = int(self._fn[name](*args))
        # The name and the result only: arguments may hold a PIN.
        log.debug("%s -> %s", name, codes.sar_name(rc))
        return rc

    def _check(self, name: str, *args: Any) -> None:
        rc = self._call(name, *args)
        if rc != codes.SAR_OK:
            raise codes.error_for_sar(rc, name)

    def _sized(self, name: str, call: Callable[[Any, t.Cell], int], limit: int) -> bytes:
        """Query the size (NULL buffer), then fetch. Copes with both size conventions, a
        size that grows between the calls, and refuses a library that claims to have
        written more than the buffer holds."""
        size = t.Cell(0)
        rc = call(None, size)
        if rc not in (codes.SAR_OK, codes.SAR_BUFFER_TOO_SMALL):
            raise codes.error_for_sar(rc, name)
        want = size.value
        for _ in range(_MAX_SIZE_ROUNDS):
            if want == 0:
                return b""
            if want > limit:
                raise codes.SkfProtocolError(f"{name} asks for {want} bytes (at most {limit})")
            buffer = ctypes.create_string_buffer(want)
            size.value = want
            rc = call(buffer, size)
            if rc == codes.SAR_BUFFER_TOO_SMALL:
                # The data grew between the calls (a device plugged in), or the size query
                # lied: take the new size if it says one, else grow ourselves.
                want = size.value if size.value > want else want * 2
                continue
            if rc != codes.SAR_OK:
                raise codes.error_for_sar(rc, name)
            got = size.value
            if got > want:
                raise codes.SkfProtocolError(
                    f"{name} reports {got} bytes written into a {want}-byte buffer"
                )
            return buffer.raw[:got]
        raise codes.SkfProtocolError(f"{name} kept answering SAR_BUFFER_TOO_SMALL")

    def _names(self, name: str, call: Callable[[Any, t.Cell], int]) -> list[SkfName]:
        return [SkfName(raw) for raw in t.parse_name_list(self._sized(name, call, MAX_NAME_LIST))]

    def _open(self, name: str, *args: Any) -> Handle:
        handle = Handle()
        self._check(name, *args, ctypes.byref(handle))
        return handle

    # --- devices ---------------------------------------------------------------------------

    def enum_dev(self, present: bool = True) -> list[SkfName]:
        flag = t.TRUE if present else t.FALSE
        return self._names(
            "SKF_EnumDev",
            lambda buf, size: self._call("SKF_EnumDev", flag, buf, ctypes.byref(size)),
        )

    def connect_dev(self, name: SkfName) -> Handle:
        return self._open("SKF_ConnectDev", name.raw)

    def disconnect_dev(self, device: Handle) -> None:
        self._check("SKF_DisConnectDev", device)

    def get_dev_info(self, device: Handle) -> t.DeviceInfo:
        info = t.DevInfo()
        self._check("SKF_GetDevInfo", device, ctypes.byref(info))
        return t.DeviceInfo.from_struct(info)

    def wait_for_dev_event(self) -> DevEvent:
        """Blocks until a device is inserted or removed, or another thread calls
        `cancel_wait_for_dev_event` (then the event is 0, or the library's error)."""
        name = ctypes.create_string_buffer(_MAX_DEV_NAME)
        length = t.Cell(_MAX_DEV_NAME)
        event = t.Cell(0)
        self._check("SKF_WaitForDevEvent", name, ctypes.byref(length), ctypes.byref(event))
        used = min(length.value, _MAX_DEV_NAME)
        return DevEvent(SkfName(name.raw[:used].split(b"\0", 1)[0]), event.value)

    def cancel_wait_for_dev_event(self) -> None:
        """The one call that may come from another thread."""
        self._check("SKF_CancelWaitForDevEvent")

    # --- applications and PINs ---------------------------------------------------------

    def enum_application(self, device: Handle) -> list[SkfName]:
        return self._names(
            "SKF_EnumApplication",
            lambda buf, size: self._call("SKF_EnumApplication", device, buf, ctypes.byref(size)),
        )

    def open_application(self, device: Handle, name: SkfName) -> Handle:
        return self._open("SKF_OpenApplication", device, name.raw)

    def close_application(self, application: Handle) -> None:
        self._check("SKF_CloseApplication", application)

    def get_pin_info(self, application: Handle, pin_type: int = t.USER_TYPE) -> PinInfo:
        max_retries, remaining, is_default = t.Cell(), t.Cell(), t.Cell()
        self._check(
            "SKF_GetPINInfo",
            application,
            pin_type,
            ctypes.byref(max_retries),
            ctypes.byref(remaining),
            ctypes.byref(is_default),
        )
        return PinInfo(max_retries.value, remaining.value, bool(is_default.value))

    def verify_pin(self, application: Handle, pin: bytes, pin_type: int = t.USER_TYPE) -> None:
        retries = t.Cell()
        with _SecretBuffer(pin) as buffer:
            rc = self._call("SKF_VerifyPIN", application, pin_type, buffer, ctypes.byref(retries))
        if rc != codes.SAR_OK:
            raise codes.error_for_sar(rc, "SKF_VerifyPIN", tries_left=retries.value)

    def change_pin(
        self, application: Handle, old: bytes, new: bytes, pin_type: int = t.USER_TYPE
    ) -> None:
        retries = t.Cell()
        with _SecretBuffer(old) as old_buffer, _SecretBuffer(new) as new_buffer:
            rc = self._call(
                "SKF_ChangePIN",
                application,
                pin_type,
                old_buffer,
                new_buffer,
                ctypes.byref(retries),
            )
        if rc != codes.SAR_OK:
            raise codes.error_for_sar(rc, "SKF_ChangePIN", tries_left=retries.value)

    def clear_secure_state(self, application: Handle) -> None:
        self._check("SKF_ClearSecureState", application)

    # --- containers ----------------------------------------------------------------------

    def enum_container(self, application: Handle) -> list[SkfName]:
        return self._names(
            "SKF_EnumContainer",
            lambda buf, size: self._call("SKF_EnumContainer", application, buf, ctypes.byref(size)),
        )

    def open_container(self, application: Handle, name: SkfName) -> Handle:
        return self._open("SKF_OpenContainer", application, name.raw)

    def close_container(self, container: Handle) -> None:
        self._check("SKF_CloseContainer", container)

    def get_container_type(self, container: Handle) -> int:
        kind = t.Cell()
        self._check("SKF_GetContainerType", container, ctypes.byref(kind))
        return kind.value

    def export_certificate(self, container: Handle, sign: bool) -> bytes:
        """DER; b"" when the library reports an empty slot with a zero size."""
        flag = t.TRUE if sign else t.FALSE
        return self._sized(
            "SKF_ExportCertificate",
            lambda buf, size: self._call(
                "SKF_ExportCertificate", container, flag, buf, ctypes.byref(size)
            ),
            MAX_CERTIFICATE,
        )

    def export_public_key(self, container: Handle, sign: bool) -> bytes:
        """The ECCPUBLICKEYBLOB or RSAPUBLICKEYBLOB bytes."""
        flag = t.TRUE if sign else t.FALSE
        return self._sized(
            "SKF_ExportPublicKey",
            lambda buf, size: self._call(
                "SKF_ExportPublicKey", container, flag, buf, ctypes.byref(size)
            ),
            ctypes.sizeof(t.RsaPublicKeyBlob) * 2,
        )

    # --- signatures ----------------------------------------------------------------------

    def ecc_sign_data(self, container: Handle, digest: bytes) -> bytes:
        """SM2 signature of e (32 bytes) as raw r||s."""
        blob = t.EccSignatureBlob()
        data = ctypes.create_string_buffer(digest, len(digest))
        self._check("SKF_ECCSignData", container, data, len(digest), ctypes.byref(blob))
        return t.signature_blob_to_raw(blob)

    def rsa_sign_data(self, container: Handle, data: bytes, modulus_bytes: int) -> bytes:
        """The library pads `data` (PKCS#1 v1.5 type 1) and applies the private key; the
        result is left-padded to the modulus length (some libraries drop leading zeros)."""
        out = ctypes.create_string_buffer(_MAX_RSA_SIGNATURE)
        size = t.Cell(_MAX_RSA_SIGNATURE)
        source = ctypes.create_string_buffer(data, len(data))
        self._check("SKF_RSASignData", container, source, len(data), out, ctypes.byref(size))
        got = size.value
        if not 0 < got <= modulus_bytes:
            raise codes.SkfProtocolError(
                f"SKF_RSASignData returned {got} bytes for a {modulus_bytes}-byte modulus"
            )
        return out.raw[:got].rjust(modulus_bytes, b"\0")

    def digest_sm2_e(
        self, device: Handle, public_point: bytes, uid: bytes, message: bytes
    ) -> bytes:
        """e = SM3(Z||M) computed by the library (SKF_DigestInit with the signer's key and
        ID). Raises SkfNotSupported when the library lacks the functions."""
        if not self.has_digest:
            raise codes.SkfNotSupported("the SKF library does not export SKF_DigestInit")
        blob = t.point_to_ecc_blob(public_point)
        uid_buffer = ctypes.create_string_buffer(uid, len(uid))
        handle = self._open(
            "SKF_DigestInit", device, t.SGD_SM3, ctypes.byref(blob), uid_buffer, len(uid)
        )
        try:
            source = ctypes.create_string_buffer(message, max(1, len(message)))
            out = ctypes.create_string_buffer(64)
            size = t.Cell(64)
            self._check("SKF_Digest", handle, source, len(message), out, ctypes.byref(size))
        finally:
            rc = self._call("SKF_CloseHandle", handle)
            if rc != codes.SAR_OK:
                log.debug("SKF_CloseHandle of a digest returned %s", codes.sar_name(rc))
        if size.value != 32:
            raise ProtocolError(f"SKF_Digest returned {size.value} bytes, SM3 has 32")
        return out.raw[:32]


class _SecretBuffer:
    """A NUL-terminated copy of a PIN in a ctypes buffer, zeroed after the call.

    (The Python `bytes` it came from cannot be wiped; this at least keeps the copy the
    library saw from lingering in memory we allocated.)
    """

    def __init__(self, value: bytes) -> None:
        self._buffer = ctypes.create_string_buffer(value, len(value) + 1)

    def __enter__(self) -> ctypes.Array[ctypes.c_char]:
        return self._buffer

    def __exit__(self, *exc: object) -> None:
        ctypes.memset(self._buffer, 0, len(self._buffer))
