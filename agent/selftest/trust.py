"""Trust anchors for the chain check: the configured CA bundle, or the simulated card's
test CA."""

from __future__ import annotations

from pathlib import Path

from agent.config import Config
from card.crypto.certs import certificate_from_pem


def load_pem_bundle(path: Path) -> list[bytes]:
    """Every CERTIFICATE block of a PEM file, as DER. Raises OSError, ProtocolError."""
    text = path.read_text(encoding="ascii", errors="replace")
    end = "-----END CERTIFICATE-----"
    return [certificate_from_pem(block + end) for block in text.split(end) if "BEGIN" in block]


def simulator_anchors(config: Config) -> list[bytes] | None:
    """The simulated card's test CAs, from its state file (`card.sim_state_file`): the
    CA that issued its certificates lives with the card. None when the card is kept in
    memory only (no file to read: the agent's own process alone knows that CA), or the
    file is missing or unreadable."""
    name = config.card.sim_state_file
    if not name:
        return None
    from simulator.state import StateStore

    try:
        state = StateStore(config.paths.state_dir / name).load()
    except (OSError, ValueError, KeyError):
        return None
    if state is None:
        return None
    return [certificate_from_pem(ca["certificate_pem"]) for ca in state.ca_states.values()]
