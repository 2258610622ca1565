"""Finding the signing key on an SKF device: device, application, container.

Application and container names are vendor- and issuer-specific, so unless configured
they are discovered: the first application (in the library's order) with a container
that holds a key (SKF_GetContainerType RSA or ECC) and a signing certificate. What was
looked at and passed over is kept in the report, for a support report when nothing fits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from card.errors import CardError, CardMissing, UnsupportedCard
from card.skf import types as t
from card.skf.binding import Handle, SkfLibrary, SkfName
from card.skf.sar import SkfNotFound

_CONTAINER_TYPES = {t.CONTAINER_RSA: "RSA", t.CONTAINER_ECC: "ECC"}


@dataclass(frozen=True)
class Discovery:
    """Where the key was found; `notes` says what else was looked at."""

    application: str
    container: str
    container_type: int  # t.CONTAINER_RSA or t.CONTAINER_ECC
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Found:
    application: Handle
    container: Handle
    report: Discovery


def _names(names: list[SkfName]) -> str:
    return ", ".join(repr(n.text) for n in names) or "none"


def select_device(library: SkfLibrary, wanted: str | None) -> SkfName:
    """The present device named `wanted`, or the first present one."""
    present = library.enum_dev(True)
    if wanted is not None:
        for name in present:
            if name.text == wanted:
                return name
        raise CardMissing(f"SKF device {wanted!r} is not present (present: {_names(present)})")
    if not present:
        raise CardMissing("no SKF device is present")
    return present[0]


def discover(
    library: SkfLibrary, device: Handle, application: str | None, container: str | None
) -> Found:
    """Open the application and container holding the signing key (configured names
    are required to exist; missing ones are discovered). The caller owns the handles."""
    apps = library.enum_application(device)
    if application is not None:
        chosen = [a for a in apps if a.text == application]
        if not chosen:
            raise UnsupportedCard(
                f"application {application!r} is not on the device (it has: {_names(apps)})"
            )
        apps = chosen
    notes: list[str] = []
    for app in apps:
        app_handle = library.open_application(device, app)
        try:
            hit = _find_container(library, app_handle, app, container, notes)
        except BaseException:
            _close_quietly(library.close_application, app_handle)
            raise
        if hit is not None:
            handle, name, kind = hit
            return Found(app_handle, handle, Discovery(app.text, name.text, kind, tuple(notes)))
        _close_quietly(library.close_application, app_handle)
    if not apps:
        notes.append("the device has no application")
    raise UnsupportedCard("no signing key with a certificate on the device: " + "; ".join(notes))


def _find_container(
    library: SkfLibrary,
    app_handle: Handle,
    app: SkfName,
    wanted: str | None,
    notes: list[str],
) -> tuple[Handle, SkfName, int] | None:
    containers = library.enum_container(app_handle)
    if wanted is not None:
        chosen = [c for c in containers if c.text == wanted]
        if not chosen:
            notes.append(
                f"application {app.text!r} has no container {wanted!r} "
                f"(it has: {_names(containers)})"
            )
        containers = chosen
    elif not containers:
        notes.append(f"application {app.text!r} has no container")
    for name in containers:
        handle = library.open_container(app_handle, name)
        try:
            reason = _unusable(library, handle)
        except BaseException:
            _close_quietly(library.close_container, handle)
            raise
        if reason is None:
            return handle, name, library.get_container_type(handle)
        notes.append(f"container {app.text!r}/{name.text!r}: {reason}")
        _close_quietly(library.close_container, handle)
    return None


def _unusable(library: SkfLibrary, container: Handle) -> str | None:
    """Why a container cannot sign for us, or None if it can."""
    kind = library.get_container_type(container)
    if kind not in _CONTAINER_TYPES:
        return f"no key (container type {kind})"
    try:
        cert = library.export_certificate(container, True)
    except SkfNotFound:
        cert = b""
    if not cert:
        return f"{_CONTAINER_TYPES[kind]} key without a signing certificate"
    return None


def _close_quietly(close: Callable[[Handle], None], handle: Handle) -> None:
    # Only on the way out of a failure or a skipped candidate: the first error matters.
    with contextlib.suppress(CardError):
        close(handle)
