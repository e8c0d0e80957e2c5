"""Configuration: typed, validated, and refused in production when insecure."""

from __future__ import annotations

from pathlib import Path

import pytest

from smilingsteps.config import ConfigError, DbSslMode, Settings

STRONG = "x7Qm2v9LpR4tY8wK1zN6bH3jD5fG0sAeUcViOoPq"
GOOD_PRODUCTION = {
    "APP_ENV": "production",
    "SECRET_KEY": STRONG,
    "ALLOWED_ORIGINS": "https://app.smilingsteps.example",
    "PUBLIC_BASE_URL": "https://app.smilingsteps.example",
    "DATABASE_URL": "postgresql+asyncpg://app:pw@db.internal:5432/smilingsteps",
    "SMTP_HOST": "smtp.smilingsteps.example",
    "ENCRYPTION_KEYS": "qJ3cKp8qK8bq3m0f1Zq2n9W4z6Yv1xT0b5Q7r8s9u2E=,Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGw=",
    "MPESA_ENV": "production",
    "MPESA_CONSUMER_KEY": "daraja-consumer-key",
    "MPESA_CONSUMER_SECRET": "daraja-consumer-secret",
    "MPESA_SHORTCODE": "600980",
    "MPESA_PASSKEY": "daraja-passkey",
}


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.load()


def test_good_production_settings_have_no_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch, **GOOD_PRODUCTION)
    assert settings.production_problems() == []
    assert settings.db_ssl_mode is DbSslMode.VERIFY_FULL
    assert settings.docs_enabled is False


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SECRET_KEY", ""),
        ("SECRET_KEY", "short-but-random-Zq81"),
        ("SECRET_KEY", "changeme"),
        ("SECRET_KEY", "a" * 64),
        ("ALLOWED_ORIGINS", ""),
        ("ALLOWED_ORIGINS", "*"),
        ("ALLOWED_ORIGINS", "https://app.smilingsteps.example,http://app.smilingsteps.example"),
        ("DATABASE_URL", "sqlite+aiosqlite:///var/prod.db"),
        ("PUBLIC_BASE_URL", "http://app.smilingsteps.example"),
        ("DB_SSL_MODE", "require"),
        ("DB_SSL_MODE", "disable"),
        ("DEBUG", "true"),
        ("RATE_LIMITS_ENABLED", "false"),
        ("SMTP_HOST", ""),
        ("SMTP_STARTTLS", "false"),
        ("EMAIL_BACKEND", "file"),
        ("ARGON2_MEMORY_KIB", "8192"),
        ("ARGON2_TIME_COST", "1"),
        ("MPESA_ENV", "simulator"),
        ("MPESA_ENV", "sandbox"),
        ("MPESA_CONSUMER_KEY", ""),
        ("MPESA_PASSKEY", ""),
        ("MPESA_CALLBACK_BASE_URL", "http://app.smilingsteps.example"),
        ("MPESA_CALLBACK_BASE_URL", "https://127.0.0.1:8443"),
        ("MPESA_CALLBACK_BASE_URL", "https://localhost"),
        ("MPESA_BASE_URL", "http://daraja.internal"),
    ],
)
def test_each_insecure_production_setting_is_named(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    settings = load(monkeypatch, **{**GOOD_PRODUCTION, variable: value})
    problems = settings.production_problems()
    assert problems, f"{variable}={value!r} accepted"
    assert all(problem.startswith(f"{variable}:") for problem in problems), problems
    assert settings.startup_problems() == problems


def test_buy_goods_in_production_needs_the_till_that_receives_the_money(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch, **{**GOOD_PRODUCTION, "MPESA_TRANSACTION_TYPE": "CustomerBuyGoodsOnline"})
    assert [p.split(":")[0] for p in settings.production_problems()] == ["MPESA_PARTY_B"]
    settings = load(
        monkeypatch,
        **{**GOOD_PRODUCTION, "MPESA_TRANSACTION_TYPE": "CustomerBuyGoodsOnline", "MPESA_PARTY_B": "5432109"},
    )
    assert settings.production_problems() == []


def test_development_starts_with_insecure_defaults_but_reports_them(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch)
    assert settings.startup_problems() == []
    assert any(problem.startswith("SECRET_KEY") for problem in settings.production_problems())


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "not-a-port"),
        ("PORT", "70000"),
        ("DB_POOL_SIZE", "0"),
        ("APP_ENV", "prod"),
        ("PUBLIC_BASE_URL", "smilingsteps.example"),
        ("ALLOWED_ORIGINS", "https://a.example/path"),
        ("TRUSTED_PROXIES", "10.0.0.0/33"),
        ("DATABASE_URL", "mysql://x"),
        ("ENCRYPTION_KEYS", "not-a-fernet-key"),
        ("ENCRYPTION_KEYS", " , "),
        ("LOG_LEVEL", "loud"),
        ("RATE_LIMIT_API", "1000000000/15m"),  # rounds the GCRA interval to zero
        ("RATE_LIMIT_AUTH", "5/1000d"),
    ],
)
def test_bad_values_raise_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(monkeypatch, **{variable: value})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{variable}: ")
    assert "\n" not in caught.value.problems[0]


def test_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(
        monkeypatch, ALLOWED_ORIGINS=" https://a.example , https://b.example/ ", TRUSTED_PROXIES="10.0.0.0/8"
    )
    assert settings.ALLOWED_ORIGINS == ["https://a.example", "https://b.example"]
    assert settings.origins == ["https://a.example", "https://b.example"]


def test_default_origin_is_the_servers_own(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(monkeypatch).origins == ["http://127.0.0.1:8000"]


def test_masked_view_hides_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(
        monkeypatch,
        **{**GOOD_PRODUCTION, "MPESA_PASSKEY": "passkey-planted"},
        SMTP_PASSWORD="smtp-planted",
        REDIS_URL="redis://:redispw-planted@127.0.0.1:6379/0",
    )
    text = "\n".join(f"{k}={v}" for k, v in settings.masked().items())
    for planted in (STRONG, "passkey-planted", "smtp-planted", "redispw-planted", ":pw@"):
        assert planted not in text
    assert "DATABASE_URL=postgresql+asyncpg://app:********@db.internal" in text


def test_development_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = Settings(DATA_DIR=tmp_path).secret_key
    second = Settings(DATA_DIR=tmp_path).secret_key
    assert first == second and len(first) >= 48
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_dotenv_is_read_in_development_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("PORT=9123\n")
    assert Settings.load().PORT == 9123
    monkeypatch.setenv("APP_ENV", "production")
    assert Settings.load().PORT == 8000
    (tmp_path / ".env").write_text("APP_ENV=production\nPORT=9124\n")
    monkeypatch.delenv("APP_ENV")
    loaded = Settings.load()
    assert loaded.APP_ENV.value == "development" and loaded.PORT == 8000


def test_production_requires_encryption_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    production = {k: v for k, v in GOOD_PRODUCTION.items() if k != "ENCRYPTION_KEYS"}
    problems = load(monkeypatch, **production).production_problems()
    assert [p.split(":")[0] for p in problems] == ["ENCRYPTION_KEYS"]


def test_encryption_keys_are_listed_newest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = load(monkeypatch, **GOOD_PRODUCTION).encryption_keys
    assert [len(key) for key in keys] == [44, 44]
    assert keys[0].startswith(b"qJ3c")
