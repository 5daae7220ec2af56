"""Settings: file, environment, precedence, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringfence.config import ConfigError, load_settings

EXAMPLE = Path(__file__).parent.parent / "ringfence.example.toml"


def test_defaults_are_the_embedded_single_machine_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("RINGFENCE_")]:
        monkeypatch.delenv(name)
    settings = load_settings()
    assert settings.http.host == "127.0.0.1"
    assert settings.http.port == 8080
    assert settings.storage.url() == "sqlite+aiosqlite:///var/ringfence.db"
    assert settings.key_store_url() == "sqlite+aiosqlite:///var/keys.db"
    assert settings.kek_path() == Path("var/kek.key")


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rf.toml"
    path.write_text('[http]\nport = 9000\nhost = "192.0.2.1"\n[storage]\ndata_dir = "/srv/rf"\n')
    monkeypatch.setenv("RINGFENCE_HTTP__PORT", "9100")
    settings = load_settings(path)
    assert settings.http.port == 9100  # the environment wins
    assert settings.http.host == "192.0.2.1"  # the file's other keys stay
    assert settings.storage.data_dir == Path("/srv/rf")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[http]\nprot = 1\n", "http.prot: unknown key"),
        ("[htp]\nport = 1\n", "htp: unknown key"),
        ("[http]\nport = 0\n", "http.port"),
        ('[storage]\ndatabase_url = "mysql://x"\n', "storage.database_url"),
        ('[logging]\nlevel = "LOUD"\n', "logging.level"),
    ],
)
def test_file_errors_name_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "rf.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(path)


def test_unknown_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGFENCE_HTTP__PROT", "1")
    with pytest.raises(ConfigError, match="RINGFENCE_HTTP__PROT: unknown key"):
        load_settings()


def test_invalid_environment_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGFENCE_HTTP__PORT", "eighty")
    with pytest.raises(ConfigError, match=r"http\.port"):
        load_settings()


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[http\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)


def test_the_shipped_example_is_valid_and_complete() -> None:
    settings = load_settings(EXAMPLE)
    text = EXAMPLE.read_text()
    # Every setting is documented in the example.
    for section, model in settings:
        for key in type(model).model_fields:
            assert f"{key} =" in text or f"# {key} =" in text, f"{section}.{key} undocumented"
