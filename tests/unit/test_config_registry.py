"""The driver registry in the configuration: `card.registry`, the default override file,
and what a missing or broken one does (a configuration error at start)."""

from __future__ import annotations

from pathlib import Path

import pytest

import agent.config as config_module
from agent.config import CardConfig, ConfigError, PathsConfig, load_config, load_driver_registry
from agent.runtime import build_backend

KIOSK_ENTRY = """version = 1
[[driver]]
name = "kiosk-card"
driver = "eport-apdu"
atr = ["3B 02 14 50"]
"""


@pytest.fixture(autouse=True)
def no_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """/etc/card-agent/drivers.toml of this machine never gets into these tests."""
    default = tmp_path / "etc" / "drivers.toml"
    monkeypatch.setattr(config_module, "DEFAULT_REGISTRY", default)
    return default


def test_the_shipped_registry_alone_by_default() -> None:
    registry = load_driver_registry(CardConfig())
    assert [e.name for e in registry.entries] == ["card-agent-simulator"]


def test_the_default_override_file_is_used_when_it_exists(no_default_file: Path) -> None:
    no_default_file.parent.mkdir()
    no_default_file.write_text(KIOSK_ENTRY)
    registry = load_driver_registry(CardConfig())
    assert [e.name for e in registry.entries] == ["kiosk-card", "card-agent-simulator"]
    assert registry.entries[0].source == str(no_default_file)


def test_card_registry_names_the_file_and_it_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(KIOSK_ENTRY)
    assert load_driver_registry(CardConfig(registry=path)).entries[0].name == "kiosk-card"
    with pytest.raises(ConfigError, match="no such driver registry file") as missing:
        load_driver_registry(CardConfig(registry=tmp_path / "gone.toml"))
    assert str(tmp_path / "gone.toml") in str(missing.value)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("version = 1\n[[driver]\n", "not valid TOML"),
        ('version = 1\n[[driver]]\nname = "x"\ndriver = "eport-apdu"\n', "names nothing"),
        ('version = 1\n[[driver]]\nname = "x"\ndriver = "skf"\natr = ["3B00"]\n', "library"),
    ],
)
def test_a_broken_file_is_a_configuration_error_naming_it(
    tmp_path: Path, no_default_file: Path, text: str, why: str
) -> None:
    no_default_file.parent.mkdir()
    no_default_file.write_text(text)
    with pytest.raises(ConfigError, match=why) as broken:
        load_driver_registry(CardConfig())
    assert str(no_default_file) in str(broken.value)
    assert str(broken.value).startswith("driver registry (card.registry):")


def test_the_keys_load_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[card]\nbackend = "skf"\nregistry = "{tmp_path / "a.toml"}"\n')
    card = load_config(path, env={}).card
    assert (card.backend, card.registry) == ("skf", tmp_path / "a.toml")
    env = {"CARD_AGENT_CARD__REGISTRY": str(tmp_path / "b.toml")}
    assert load_config(path, env=env).card.registry == tmp_path / "b.toml"
    path.write_text('[card]\nbackend = "pkcs11"\n')
    with pytest.raises(ConfigError, match=r"card\.backend"):
        load_config(path, env={})


def test_the_skf_backend_refuses_to_start_without_a_usable_library(tmp_path: Path) -> None:
    config = load_config(env={}).model_copy(
        update={
            "card": CardConfig(backend="skf", registry=tmp_path / "drivers.toml"),
            "paths": PathsConfig(state_dir=tmp_path / "state"),
        }
    )
    (tmp_path / "drivers.toml").write_text(
        'version = 1\n[[driver]]\nname = "vendor"\ndriver = "skf"\n'
        f'library = "{tmp_path / "libvendor.so"}"\ndevices = ["*"]\n'
    )
    with pytest.raises(ConfigError, match="cannot load SKF library") as refused:
        build_backend(config)
    assert str(refused.value).startswith("card.backend = skf:")
