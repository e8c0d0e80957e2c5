"""Email settings: the backend follows SMTP_HOST, production refuses files and clear-text SMTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from smilingsteps.config import ConfigError, Settings
from tests.unit.test_config import GOOD_PRODUCTION, load


def test_the_backend_is_smtp_when_a_host_is_set_and_files_otherwise(tmp_path: Path) -> None:
    assert Settings(DATA_DIR=tmp_path).email_backend == "file"
    assert Settings(DATA_DIR=tmp_path).email_file_dir == tmp_path / "mail"
    assert Settings(SMTP_HOST="smtp.example").email_backend == "smtp"
    assert Settings(SMTP_HOST="smtp.example", EMAIL_BACKEND="file").email_backend == "file"
    assert Settings(EMAIL_FILE_DIR=tmp_path / "out").email_file_dir == tmp_path / "out"


def test_the_smtp_backend_without_a_host_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as caught:
        load(monkeypatch, EMAIL_BACKEND="smtp")
    assert caught.value.problems == ["EMAIL_BACKEND: smtp needs SMTP_HOST"]


def test_a_missing_ca_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(monkeypatch, SMTP_CA_FILE=str(tmp_path / "nope.pem"))
    assert [problem.split(":")[0] for problem in caught.value.problems] == ["SMTP_CA_FILE"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_clear_text_smtp_is_allowed_to_a_loopback_relay_only(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    settings = load(monkeypatch, **{**GOOD_PRODUCTION, "SMTP_HOST": host, "SMTP_STARTTLS": "false"})
    assert not [problem for problem in settings.production_problems() if problem.startswith("SMTP")]


def test_production_without_smtp_names_smtp_host(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch, **{**GOOD_PRODUCTION, "SMTP_HOST": ""})
    assert any(problem.startswith("SMTP_HOST: unset") for problem in settings.production_problems())
