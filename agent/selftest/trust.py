"""Trust anchors for the chain check: the configured CA bundle, or the simulated card's
test CA."""

from __future__ import annotations

from pathlib import Path

from agent.config import SIMULATED_CA_FILE, Config
from card.crypto.certs import certificate_from_pem
from card.errors import ProtocolError


def load_pem_bundle(path: Path) -> list[bytes]:
    """Every CERTIFICATE block of a PEM file, as DER. Raises OSError, ProtocolError."""
    text = path.read_text(encoding="ascii", errors="replace")
    end = "-----END CERTIFICATE-----"
    return [certificate_from_pem(block + end) for block in text.split(end) if "BEGIN" in block]


def simulator_anchors(config: Config) -> list[bytes] | None:
    """The simulated card's test CAs: the runtime writes them next to the card when it
    builds the simulated backend (`agent.runtime.simulated_ca_path`). None when the
    file is missing or unreadable."""
    path = config.paths.state_dir / SIMULATED_CA_FILE
    try:
        return load_pem_bundle(path) or None
    except (OSError, ProtocolError):
        return None
