"""The simulated card's persistent state, and the card-sim CLI that reads it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from card.apdu import CommandApdu
from card.crypto.certs import certificate_from_pem, verify_issued_by
from card.eport import profile as p
from simulator.card_os import SimulatedCard
from simulator.cli import main
from simulator.pin import make_pin_block
from simulator.state import CardFactory, CardState, StateStore

SELECT = CommandApdu(0, p.INS_SELECT, 0x04, 0x0C, p.EPORT_AID).encode()
STATUS = CommandApdu(0, p.INS_VERIFY, 0x00, p.PIN_REF).encode()


def verify(pin: str) -> bytes:
    return CommandApdu(0, p.INS_VERIFY, 0x00, p.PIN_REF, make_pin_block(pin)).encode()


def stored_tries(path: Path) -> int:
    state = StateStore(path).load()
    assert state is not None
    return state.pin.tries_left


@pytest.fixture(scope="module")
def factory() -> CardFactory:
    return CardFactory()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "cards" / "card.json"


def test_blocked_card_stays_blocked_after_reload(factory: CardFactory, path: Path) -> None:
    card = SimulatedCard.create("legal-person-sm2", factory=factory, state_path=path)
    assert card.process(SELECT) == b"\x90\x00"
    for left in range(9, -1, -1):
        assert card.process(verify("11111111")) == bytes((0x63, 0xC0 | left))
        # Saved on every counter change, before the answer.
        assert json.loads(path.read_text("utf-8"))["pin"]["tries_left"] == left
    again = SimulatedCard.create("legal-person-sm2", factory=factory, state_path=path)
    assert again.state.sign_cert == card.state.sign_cert  # the same card, not a new one
    assert again.process(SELECT) == b"\x90\x00"
    assert again.process(STATUS) == b"\x69\x83"
    assert again.process(verify("88888888")) == b"\x69\x83"


def test_success_and_pin_change_persist(factory: CardFactory, path: Path) -> None:
    card = SimulatedCard.create("legal-person-sm2", factory=factory, state_path=path)
    card.process(SELECT)
    card.process(verify("11111111"))
    assert stored_tries(path) == 9
    card.process(verify("88888888"))
    assert stored_tries(path) == 10
    data = make_pin_block("88888888") + make_pin_block("changed1")
    change = CommandApdu(0, p.INS_CHANGE_REFERENCE_DATA, 0, p.PIN_REF, data).encode()
    assert card.process(change) == b"\x90\x00"
    reloaded = SimulatedCard.create("legal-person-sm2", factory=factory, state_path=path)
    reloaded.process(SELECT)
    assert reloaded.process(verify("changed1")) == b"\x90\x00"


def test_state_file_is_private_and_written_whole(factory: CardFactory, path: Path) -> None:
    SimulatedCard.create("blocked-pin", factory=factory, state_path=path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [f.name for f in path.parent.iterdir()] == ["card.json"]  # no temp files left
    state = StateStore(path).load()
    assert state is not None
    assert state.pin.blocked
    assert state.profile == "blocked-pin"
    assert "SM2" in state.ca_states


def test_profile_mismatch_is_refused(factory: CardFactory, path: Path) -> None:
    SimulatedCard.create("blocked-pin", factory=factory, state_path=path)
    with pytest.raises(ValueError, match="blocked-pin"):
        SimulatedCard.create("legal-person-sm2", factory=factory, state_path=path)


def test_missing_file_loads_as_none(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "nope.json").load() is None


def test_state_round_trip(factory: CardFactory) -> None:
    state = factory.make_state("operator-sm2")
    copy = CardState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert copy.to_dict() == state.to_dict()
    assert copy.sign_key_pem == state.sign_key_pem
    assert copy.pin.value == state.pin.value
    bad = state.to_dict() | {"format": 99}
    with pytest.raises(ValueError, match="format"):
        CardState.from_dict(bad)


def test_factory_world_round_trip(factory: CardFactory) -> None:
    factory.ca("SM2")
    world = CardFactory.from_state(factory.to_state())
    assert world.ca("SM2").certificate_der == factory.ca("SM2").certificate_der


# --- card-sim ------------------------------------------------------------------------


def test_cli_profiles() -> None:
    result = CliRunner().invoke(main, ["profiles"])
    assert result.exit_code == 0, result.output
    for name in ("legal-person-sm2", "legacy-rsa1024", "blocked-pin", "expiring-soon"):
        assert name in result.output


def test_cli_show_never_prints_the_pin() -> None:
    result = CliRunner().invoke(main, ["show", "legal-person-sm2", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["holder_name"] == "张伟"
    assert info["signing_certificate"]["subject_cn"] == "张伟"
    assert info["pin"]["tries_left"] == 10
    assert "88888888" not in result.output
    assert "12345678" not in result.output
    text = CliRunner().invoke(main, ["show", "expiring-soon"])
    assert text.exit_code == 0
    assert "days_left: 10" in text.output or "days_left: 9.9" in text.output


def test_cli_show_unknown_profile() -> None:
    result = CliRunner().invoke(main, ["show", "no-such-card"])
    assert result.exit_code != 0
    assert "unknown card profile" in result.output


def test_cli_show_persisted_state(factory: CardFactory, path: Path) -> None:
    card = SimulatedCard.create("legal-person-sm2", factory=factory, state_path=path)
    card.process(SELECT)
    card.process(verify("11111111"))
    result = CliRunner().invoke(main, ["show", "legal-person-sm2", "--json", "--state", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["pin"]["tries_left"] == 9


def test_cli_export_ca_from_state(factory: CardFactory, path: Path, tmp_path: Path) -> None:
    card = SimulatedCard.create("legal-person-sm2", factory=factory, state_path=path)
    out = tmp_path / "ca.pem"
    result = CliRunner().invoke(main, ["export-ca", "--state", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    ca_der = certificate_from_pem(out.read_text("ascii"))
    assert verify_issued_by(card.state.sign_cert, ca_der)
    missing = CliRunner().invoke(
        main, ["export-ca", "--algorithm", "RSA", "--state", str(path), "-o", str(out)]
    )
    assert missing.exit_code != 0
    assert "no RSA CA" in missing.output


def test_cli_export_fresh_ca_to_stdout() -> None:
    result = CliRunner().invoke(main, ["export-ca", "-o", "-"])
    assert result.exit_code == 0
    assert "-----BEGIN CERTIFICATE-----" in result.output
