"""softskf's key store: exporting simulated cards (simulator profiles) into it.

The format is the line-based one softskf.c documents. A card state from the simulator's
`CardFactory` (certificates from the test CA, private keys, PIN and retry counter)
becomes one device with one application and one container; tests can add more devices,
applications and containers to exercise discovery.

The store holds private keys and PINs in clear: test material only (mode 0600).
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from simulator.state import CardState

CONTAINER_RSA = 1
CONTAINER_ECC = 2


def pem_to_der(pem: bytes) -> bytes:
    body = b"".join(line for line in pem.strip().splitlines() if not line.startswith(b"-----"))
    return base64.b64decode(body, validate=True)


@dataclass
class StorePin:
    value: str
    max_tries: int = 10
    tries_left: int | None = None

    def line(self, keyword: str) -> str:
        left = self.max_tries if self.tries_left is None else self.tries_left
        return f"{keyword} {self.max_tries} {left} {self.value}"


@dataclass
class StoreContainer:
    name: str
    type: int  # CONTAINER_RSA / CONTAINER_ECC, or 0 for an empty container
    sign_cert: bytes = b""
    sign_key: bytes = b""  # PKCS#8 DER
    enc_cert: bytes = b""
    enc_key: bytes = b""


@dataclass
class StoreApplication:
    name: str
    user_pin: StorePin
    admin_pin: StorePin = field(default_factory=lambda: StorePin("12345678"))
    containers: list[StoreContainer] = field(default_factory=list)


@dataclass
class StoreDevice:
    name: str
    serial: str = ""
    label: str = ""
    manufacturer: str = ""
    applications: list[StoreApplication] = field(default_factory=list)


def _text(value: str, what: str) -> str:
    if not value or "\n" in value or "\r" in value or len(value.encode()) >= 64:
        raise ValueError(f"{what} {value!r}: one line, 1 to 63 bytes")
    return value


def device_from_state(
    state: CardState,
    *,
    device: str = "SoftSKF Token 0",
    application: str = "EPORT",
    container: str = "SignKey",
) -> StoreDevice:
    """One device holding the card's keys and certificates, the card number as its
    serial and the card's PIN (with its retry counter)."""
    pin = StorePin(state.pin.value.decode("ascii"), state.pin.max_tries, state.pin.tries_left)
    kind = CONTAINER_ECC if state.algorithm == "SM2" else CONTAINER_RSA
    return StoreDevice(
        name=device,
        serial=state.card_number,
        label=f"E-Port {state.profile}",
        manufacturer="card-agent softskf",
        applications=[
            StoreApplication(
                name=application,
                user_pin=pin,
                admin_pin=StorePin(state.unblock.value.decode("ascii"), state.unblock.max_tries),
                containers=[
                    StoreContainer(
                        name=container,
                        type=kind,
                        sign_cert=state.sign_cert,
                        sign_key=pem_to_der(state.sign_key_pem),
                        enc_cert=state.enc_cert,
                        enc_key=pem_to_der(state.enc_key_pem),
                    )
                ],
            )
        ],
    )


def render_store(devices: list[StoreDevice]) -> str:
    lines = ["# softskf key store: TEST MATERIAL, private keys in clear", "softskf-store 1"]
    for dev in devices:
        lines.append(f"device {_text(dev.name, 'device name')}")
        for keyword, value in (("serial", dev.serial), ("label", dev.label)):
            if value:
                lines.append(f"{keyword} {_text(value, keyword)}")
        if dev.manufacturer:
            lines.append(f"manufacturer {_text(dev.manufacturer, 'manufacturer')}")
        for app in dev.applications:
            lines.append(f"application {_text(app.name, 'application name')}")
            lines.append(app.admin_pin.line("admin-pin"))
            lines.append(app.user_pin.line("user-pin"))
            for cont in app.containers:
                lines.append(f"container {_text(cont.name, 'container name')}")
                lines.append(f"type {cont.type}")
                for keyword, blob in (
                    ("sign-cert", cont.sign_cert),
                    ("sign-key", cont.sign_key),
                    ("enc-cert", cont.enc_cert),
                    ("enc-key", cont.enc_key),
                ):
                    if blob:
                        lines.append(f"{keyword} {blob.hex()}")
    return "\n".join(lines) + "\n"


def write_store(path: Path, devices: list[StoreDevice]) -> Path:
    """Write the store (0600, atomically)."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(render_store(devices))
    os.replace(tmp, path)
    return path


def user_pin_counter(path: Path, application: str) -> tuple[int, int]:
    """(max, left) of an application's user PIN as the store file says now."""
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        keyword, _, value = line.partition(" ")
        if keyword == "application":
            current = value
        elif keyword == "user-pin" and current == application:
            match = re.fullmatch(r"(\d+) (\d+) \S+", value)
            if match is None:
                raise ValueError(f"malformed user-pin line in {path}")
            return int(match[1]), int(match[2])
    raise KeyError(f"no application {application!r} in {path}")
