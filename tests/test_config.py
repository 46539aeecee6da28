"""Settings: TOML file overlaid by environment variables; bad values stop the program."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomguard.config import database_url, default_config_toml, load_settings, resolve_home
from dicomguard.errors import ConfigurationError


def test_defaults_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.toml").write_text(default_config_toml() + "")
    s = load_settings(tmp_path)
    assert s.archive.ae_title == "DICOMGUARD" and s.ingest.batch_size == 64
    assert database_url(s, tmp_path) == f"sqlite:///{tmp_path / 'index.db'}"
    (tmp_path / "config.toml").write_text('[archive]\nae_title = "PACS1"\n[ingest]\nbatch_size = 8\n')
    monkeypatch.setenv("DICOMGUARD_INGEST__BATCH_SIZE", "16")
    s = load_settings(tmp_path)
    assert s.archive.ae_title == "PACS1" and s.ingest.batch_size == 16  # environment wins


@pytest.mark.parametrize(
    "toml",
    [
        "[ingest]\nbatch_size = 0\n",
        "[archive]\nae_title = \"A_TITLE_LONGER_THAN_16\"\n",
        "[limits]\nmax_sequence_depth = 1000\n",
        "[unknown]\nx = 1\n",
        "not toml at all [",
    ],
)
def test_invalid_configuration_is_refused(tmp_path: Path, toml: str) -> None:
    (tmp_path / "config.toml").write_text(toml)
    with pytest.raises(ConfigurationError):
        load_settings(tmp_path)


def test_home_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DICOMGUARD_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_home() == tmp_path / "dicomguard-home"
    monkeypatch.setenv("DICOMGUARD_HOME", str(tmp_path / "x"))
    assert resolve_home() == tmp_path / "x"
