"""Settings: the one place that reads the environment.

Every variable of the operator's contract (README "Configuration") is a typed
field here. `Settings.load()` builds them; `production_problems()` lists what a
production deployment refuses to start with.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, FilePath, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from smilingsteps.platform.ratelimit.policies import DEFAULT_RATES, parse_rate

PLACEHOLDER_SECRETS = frozenset(
    {"changeme", "change-me", "change_me", "secret", "secret-key", "your-secret-key", "dev", "development", "test"}
)
MIN_SECRET_BYTES = 32
ARGON2_MIN_MEMORY_KIB = 19_456
ARGON2_MIN_TIME_COST = 2
SECRET_KEY_FILE = "secret_key"  # noqa: S105 (a file name, not a secret)


class AppEnv(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    STAGING = "staging"
    PRODUCTION = "production"


class DbSslMode(StrEnum):
    DISABLE = "disable"
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Typed configuration; field names are the environment variable names."""

    model_config = SettingsConfigDict(env_file=None, case_sensitive=True, extra="ignore", validate_default=True)

    APP_ENV: AppEnv = AppEnv.DEVELOPMENT
    DEBUG: bool = False
    SECRET_KEY: SecretStr | None = None
    DATA_DIR: Path = Path("var")
    HOST: str = "127.0.0.1"
    PORT: int = Field(default=8000, ge=1, le=65535)
    PUBLIC_BASE_URL: str = "http://127.0.0.1:8000"
    ALLOWED_ORIGINS: CsvList = Field(default_factory=list)
    TRUSTED_PROXIES: CsvList = Field(default_factory=list)
    MAX_REQUEST_BODY_BYTES: int = Field(default=1_048_576, ge=1024)
    # What one connection may cost the server before the app sees a request (slow or oversized clients).
    SERVER_MAX_HEADER_BYTES: int = Field(default=32_768, ge=4096, le=1_048_576)
    SERVER_MAX_HEADERS: int = Field(default=100, ge=16, le=1000)
    SERVER_HEADER_TIMEOUT: float = Field(default=10.0, gt=0, le=300)
    SERVER_BODY_TIMEOUT: float = Field(default=15.0, gt=0, le=300)
    SERVER_KEEPALIVE_TIMEOUT: float = Field(default=5.0, gt=0, le=300)
    SERVER_MAX_CONNECTIONS: int = Field(default=1000, ge=10, le=100_000)

    DATABASE_URL: str | None = None
    DB_POOL_SIZE: int = Field(default=10, ge=1, le=200)
    DB_MAX_OVERFLOW: int = Field(default=5, ge=0, le=200)
    DB_POOL_TIMEOUT: float = Field(default=10.0, gt=0, le=120)
    DB_CONNECT_TIMEOUT: float = Field(default=5.0, gt=0, le=120)
    DB_STATEMENT_TIMEOUT: float = Field(default=30.0, gt=0, le=3600)
    DB_MAX_RETRIES: int = Field(default=5, ge=0, le=100)
    DB_RETRY_BASE_DELAY: float = Field(default=0.5, gt=0, le=60)
    DB_RETRY_MAX_DELAY: float = Field(default=30.0, gt=0, le=600)
    DB_SSL_MODE: DbSslMode | None = None
    DB_SSL_ROOT_CERT: Path | None = None

    REDIS_URL: SecretStr | None = None

    STORAGE_BACKEND: Literal["local", "s3"] = "local"
    S3_BUCKET: str | None = None
    S3_ENDPOINT_URL: str | None = None
    S3_REGION: str | None = None
    AWS_ACCESS_KEY_ID: str | None = None
    AWS_SECRET_ACCESS_KEY: SecretStr | None = None

    SMTP_HOST: str | None = None
    SMTP_PORT: int = Field(default=587, ge=1, le=65535)
    SMTP_USER: str | None = None
    SMTP_PASSWORD: SecretStr | None = None
    SMTP_STARTTLS: bool = True
    EMAIL_FROM: str = "Smiling Steps <no-reply@smilingsteps.local>"
    EMAIL_BACKEND: Literal["auto", "smtp", "file"] = "auto"
    EMAIL_FILE_DIR: Path | None = None
    SMTP_TIMEOUT: float = Field(default=30.0, gt=0, le=600)
    SMTP_CA_FILE: FilePath | None = None
    EMAIL_MAX_ATTEMPTS: int = Field(default=8, ge=1, le=100)
    EMAIL_RETRY_BASE_DELAY: float = Field(default=30.0, gt=0, le=86400)
    EMAIL_RETRY_MAX_DELAY: float = Field(default=3600.0, gt=0, le=86400)
    EMAIL_BATCH_SIZE: int = Field(default=20, ge=1, le=1000)
    EMAIL_CLAIM_TIMEOUT: float = Field(default=600.0, ge=10, le=86400)
    EMAIL_RETENTION_DAYS: int = Field(default=30, ge=1, le=3650)
    # Deprecated spelling of JOBS_IN_PROCESS (the mail sender is one of the jobs).
    EMAIL_IN_PROCESS_SENDER: bool | None = None
    JOBS_IN_PROCESS: bool | None = None
    WORKER_POLL_INTERVAL: float = Field(default=2.0, gt=0, le=3600)

    MPESA_ENV: Literal["simulator", "sandbox", "production"] = "simulator"
    MPESA_CONSUMER_KEY: SecretStr | None = None
    MPESA_CONSUMER_SECRET: SecretStr | None = None
    MPESA_SHORTCODE: str | None = None
    MPESA_PASSKEY: SecretStr | None = None
    MPESA_CALLBACK_BASE_URL: str | None = None
    MPESA_BASE_URL: str | None = None
    MPESA_TRANSACTION_TYPE: Literal["CustomerPayBillOnline", "CustomerBuyGoodsOnline"] = "CustomerPayBillOnline"
    # The till that receives Buy Goods payments (Pay Bill pays the shortcode itself).
    MPESA_PARTY_B: str | None = Field(default=None, pattern=r"^\d{5,10}$")
    MPESA_CONNECT_TIMEOUT: float = Field(default=5.0, gt=0, le=60)
    MPESA_READ_TIMEOUT: float = Field(default=30.0, gt=0, le=120)
    # Safaricom's callback source addresses (IPs or CIDRs); empty accepts any (the token decides).
    MPESA_CALLBACK_ALLOWED_IPS: CsvList = Field(default_factory=list)
    # Reconciliation asks Daraja about a payment with no answer after this long…
    MPESA_CHECK_AFTER_SECONDS: int = Field(default=90, ge=10, le=3600)
    # …and gives up (timed out) when nothing definitive came after this long.
    MPESA_PAYMENT_TIMEOUT_SECONDS: int = Field(default=300, ge=60, le=86400)
    # The built-in simulator's pause before it calls back (the time a person takes to enter a PIN).
    MPESA_SIMULATOR_DELAY: float = Field(default=3.0, ge=0, le=120)

    LOG_LEVEL: Literal["debug", "info", "warning", "error", "critical"] = "info"
    LOG_FORMAT: Literal["console", "json"] | None = None
    LOG_DIR: Path | None = None
    LOG_FILE_MAX_BYTES: int = Field(default=10_485_760, ge=1024)
    LOG_FILE_BACKUP_COUNT: int = Field(default=5, ge=1, le=100)

    METRICS_TOKEN: SecretStr | None = None
    RATE_LIMITS_ENABLED: bool = True
    RATE_LIMIT_AUTH: str = DEFAULT_RATES["auth"]
    RATE_LIMIT_EMAIL: str = DEFAULT_RATES["email"]
    RATE_LIMIT_API: str = DEFAULT_RATES["api"]
    RATE_LIMIT_PAYMENTS: str = DEFAULT_RATES["payments"]
    RATE_LIMIT_VIDEO: str = DEFAULT_RATES["video"]
    RATE_LIMIT_UPLOADS: str = DEFAULT_RATES["uploads"]
    RATE_LIMIT_ADMIN: str = DEFAULT_RATES["admin"]
    RATE_LIMIT_REDIS_TIMEOUT_MS: int = Field(default=50, ge=1, le=5000)
    # How many instances share the quota: each enforces quota ÷ this while Redis is down.
    RATE_LIMIT_INSTANCES: int = Field(default=1, ge=1, le=1000)
    REDIS_KEY_PREFIX: str = Field(default="ss", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    ICE_SERVERS: str | None = None
    TURN_SECRET: SecretStr | None = None

    ACCESS_TOKEN_TTL_MINUTES: int = Field(default=15, ge=1, le=60)
    SESSION_IDLE_TIMEOUT_MINUTES: int = Field(default=30, ge=5, le=1440)
    SESSION_ABSOLUTE_LIFETIME_HOURS: int = Field(default=12, ge=1, le=720)
    SESSION_REVOCATION_SYNC_SECONDS: float = Field(default=2.0, gt=0, le=60)
    LOGIN_MAX_FAILURES: int = Field(default=5, ge=1, le=100)
    LOGIN_FAILURE_WINDOW_MINUTES: int = Field(default=15, ge=1, le=1440)
    LOGIN_LOCKOUT_BASE_MINUTES: int = Field(default=15, ge=1, le=1440)
    LOGIN_LOCKOUT_MAX_MINUTES: int = Field(default=1440, ge=1, le=43200)
    LOGIN_IP_MAX_FAILURES: int = Field(default=50, ge=1, le=10000)
    ARGON2_TIME_COST: int = Field(default=3, ge=1, le=20)
    ARGON2_MEMORY_KIB: int = Field(default=65536, ge=8, le=4_194_304)
    ARGON2_PARALLELISM: int = Field(default=1, ge=1, le=16)
    ARGON2_MAX_CONCURRENT: int = Field(default=4, ge=1, le=64)
    EMAIL_VERIFICATION_TTL_HOURS: int = Field(default=48, ge=1, le=720)
    # Registration answers the same whether or not the address has an account (unset: on when deployed).
    REGISTRATION_HIDES_ACCOUNTS: bool | None = None
    # /api/v1/openapi.json and the interactive docs (unset: off in production).
    API_DOCS_ENABLED: bool | None = None
    PASSWORD_RESET_TTL_MINUTES: int = Field(default=30, ge=5, le=1440)
    ENCRYPTION_KEYS: SecretStr | None = None

    BOOKING_MIN_NOTICE_HOURS: int = Field(default=12, ge=0, le=720)
    BOOKING_HORIZON_DAYS: int = Field(default=60, ge=1, le=365)
    BOOKING_HOLD_MINUTES: int = Field(default=10, ge=1, le=120)
    BOOKING_FREE_CANCELLATION_HOURS: int = Field(default=24, ge=0, le=720)

    SHUTDOWN_READINESS_DELAY: float = Field(default=5.0, ge=0, le=120)
    SHUTDOWN_TIMEOUT: float = Field(default=25.0, gt=0, le=600)

    @field_validator("ALLOWED_ORIGINS", "TRUSTED_PROXIES", "MPESA_CALLBACK_ALLOWED_IPS", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator(
        "RATE_LIMIT_AUTH",
        "RATE_LIMIT_EMAIL",
        "RATE_LIMIT_API",
        "RATE_LIMIT_PAYMENTS",
        "RATE_LIMIT_VIDEO",
        "RATE_LIMIT_UPLOADS",
        "RATE_LIMIT_ADMIN",
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    @field_validator("ENCRYPTION_KEYS")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _fernet_keys(value.get_secret_value())
        return value

    @field_validator("REDIS_URL")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("EMAIL_BACKEND")
    @classmethod
    def _smtp_needs_host(cls, value: str, info: ValidationInfo) -> str:
        if value == "smtp" and not info.data.get("SMTP_HOST"):
            raise ValueError("smtp needs SMTP_HOST")
        return value

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("PUBLIC_BASE_URL")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL such as https://smilingsteps.example")
        return value.rstrip("/")

    @field_validator("ALLOWED_ORIGINS")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*":
                continue
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port])")
        return [origin.rstrip("/") for origin in value]

    @field_validator("TRUSTED_PROXIES", "MPESA_CALLBACK_ALLOWED_IPS")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from exc
        return value

    @field_validator("MPESA_BASE_URL", "MPESA_CALLBACK_BASE_URL")
    @classmethod
    def _mpesa_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be an absolute http(s) URL without a query, such as https://api.example")
        return value.rstrip("/")

    @field_validator("DATABASE_URL")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("must start with postgresql+asyncpg:// or sqlite+aiosqlite://")
        return value

    # ---- derived values -------------------------------------------------

    @property
    def is_production(self) -> bool:
        return self.APP_ENV is AppEnv.PRODUCTION

    @property
    def is_deployed(self) -> bool:
        """Staging and production run on real infrastructure behind TLS."""
        return self.APP_ENV in (AppEnv.STAGING, AppEnv.PRODUCTION)

    @property
    def database_url(self) -> str:
        if self.DATABASE_URL:
            return self.DATABASE_URL
        return f"sqlite+aiosqlite:///{(self.DATA_DIR / 'smilingsteps.db').as_posix()}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def db_ssl_mode(self) -> DbSslMode:
        if self.DB_SSL_MODE is not None:
            return self.DB_SSL_MODE
        return DbSslMode.VERIFY_FULL if self.is_deployed else DbSslMode.DISABLE

    @property
    def log_format(self) -> Literal["console", "json"]:
        if self.LOG_FORMAT is not None:
            return self.LOG_FORMAT
        return "console" if self.APP_ENV is AppEnv.DEVELOPMENT else "json"

    @property
    def origins(self) -> list[str]:
        """Exact origins allowed for CORS, WebSocket and CSRF checks."""
        if self.ALLOWED_ORIGINS:
            return self.ALLOWED_ORIGINS
        parts = urlsplit(self.PUBLIC_BASE_URL)
        return [f"{parts.scheme}://{parts.netloc}"]

    @property
    def rate_limits(self) -> dict[str, str]:
        """Policy name -> rate, after environment overrides."""
        return {name: getattr(self, f"RATE_LIMIT_{name.upper()}") for name in DEFAULT_RATES}

    @property
    def docs_enabled(self) -> bool:
        """The OpenAPI document and the interactive docs; production publishes them with the release instead."""
        return self.API_DOCS_ENABLED if self.API_DOCS_ENABLED is not None else not self.is_production

    @property
    def registration_hides_accounts(self) -> bool:
        """Registration answers 202 "check your email" for new and existing addresses alike (no enumeration)."""
        return self.REGISTRATION_HIDES_ACCOUNTS if self.REGISTRATION_HIDES_ACCOUNTS is not None else self.is_deployed

    @property
    def email_backend(self) -> Literal["smtp", "file"]:
        """`auto` sends through SMTP when SMTP_HOST is set, else writes .eml files."""
        if self.EMAIL_BACKEND != "auto":
            return self.EMAIL_BACKEND
        return "smtp" if self.SMTP_HOST else "file"

    @property
    def email_file_dir(self) -> Path:
        return self.EMAIL_FILE_DIR if self.EMAIL_FILE_DIR is not None else self.DATA_DIR / "mail"

    @property
    def jobs_in_process(self) -> bool:
        """Development runs every periodic job (mail, holds, reminders) in the app; elsewhere `smilingsteps worker`."""
        for chosen in (self.JOBS_IN_PROCESS, self.EMAIL_IN_PROCESS_SENDER):
            if chosen is not None:
                return chosen
        return self.APP_ENV is AppEnv.DEVELOPMENT

    @property
    def email_in_process_sender(self) -> bool:
        """The app sends mail itself: one of the jobs it runs when `jobs_in_process`."""
        return self.jobs_in_process

    @property
    def mpesa_embedded_simulator(self) -> bool:
        """The embedded default: Daraja is the built-in simulator, started inside this process."""
        return self.MPESA_ENV == "simulator" and self.MPESA_BASE_URL is None

    @property
    def mpesa_callback_base_url(self) -> str:
        """Where Safaricom calls back: MPESA_CALLBACK_BASE_URL, else the public URL."""
        return self.MPESA_CALLBACK_BASE_URL or self.PUBLIC_BASE_URL

    @property
    def encryption_keys(self) -> list[bytes]:
        """Fernet keys, newest first; in development one is derived from the secret key."""
        if self.ENCRYPTION_KEYS is None:
            return []
        return _fernet_keys(self.ENCRYPTION_KEYS.get_secret_value())

    @cached_property
    def secret_key(self) -> str:
        """The signing key; in development one is generated and kept in DATA_DIR."""
        if self.SECRET_KEY is not None:
            return self.SECRET_KEY.get_secret_value()
        if self.is_deployed:
            raise RuntimeError("SECRET_KEY is required outside development")
        return _local_secret_key(self.DATA_DIR)

    # ---- validation -----------------------------------------------------

    def production_problems(self) -> list[str]:
        """Lines naming each variable a production deployment refuses, and why."""
        problems: list[str] = []
        secret = self.SECRET_KEY.get_secret_value() if self.SECRET_KEY else ""
        if not secret:
            problems.append(
                "SECRET_KEY: missing; set at least 32 random bytes"
                " (python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        elif secret.strip().lower() in PLACEHOLDER_SECRETS or len(set(secret)) < 8:
            problems.append("SECRET_KEY: is a placeholder or has too little variety; use a random value")
        elif len(secret.encode()) < MIN_SECRET_BYTES:
            problems.append(f"SECRET_KEY: is {len(secret.encode())} bytes; at least {MIN_SECRET_BYTES} are required")
        if not self.ALLOWED_ORIGINS:
            problems.append("ALLOWED_ORIGINS: empty; list the exact https origins of the web front end")
        for origin in self.ALLOWED_ORIGINS:
            if origin == "*":
                problems.append("ALLOWED_ORIGINS: '*' is not allowed; list exact origins")
            elif not origin.startswith("https://"):
                problems.append(f"ALLOWED_ORIGINS: {origin} is not https")
        if self.is_sqlite:
            problems.append("DATABASE_URL: SQLite is for development; use postgresql+asyncpg://")
        if not self.PUBLIC_BASE_URL.startswith("https://"):
            problems.append("PUBLIC_BASE_URL: must be an https URL")
        if self.db_ssl_mode is not DbSslMode.VERIFY_FULL:
            problems.append(
                f"DB_SSL_MODE: is {self.db_ssl_mode.value}; production verifies the database certificate (verify-full)"
            )
        if self.ENCRYPTION_KEYS is None:
            problems.append(
                "ENCRYPTION_KEYS: missing; set one or more Fernet keys, comma-separated, newest first"
                " (python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
            )
        if self.ARGON2_MEMORY_KIB < ARGON2_MIN_MEMORY_KIB:
            problems.append(f"ARGON2_MEMORY_KIB: below the OWASP minimum for argon2id ({ARGON2_MIN_MEMORY_KIB})")
        if self.ARGON2_TIME_COST < ARGON2_MIN_TIME_COST:
            problems.append(f"ARGON2_TIME_COST: below the OWASP minimum for argon2id ({ARGON2_MIN_TIME_COST} passes)")
        if self.email_backend == "file":
            if self.EMAIL_BACKEND == "file":
                problems.append("EMAIL_BACKEND: file is for development; production sends mail through SMTP")
            else:
                problems.append("SMTP_HOST: unset; production sends mail through SMTP (files are for development)")
        elif not self.SMTP_STARTTLS and not _is_loopback(self.SMTP_HOST or ""):
            problems.append("SMTP_STARTTLS: must be true unless SMTP_HOST is a loopback relay")
        problems.extend(self._mpesa_production_problems())
        if self.DEBUG:
            problems.append("DEBUG: must be false")
        if not self.RATE_LIMITS_ENABLED:
            problems.append("RATE_LIMITS_ENABLED: must be true (false is for local fuzzing only)")
        return problems

    def _mpesa_production_problems(self) -> list[str]:
        problems: list[str] = []
        if self.MPESA_ENV != "production":
            problems.append(f"MPESA_ENV: is {self.MPESA_ENV}; production takes real payments (production)")
        for name in ("MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_SHORTCODE", "MPESA_PASSKEY"):
            value = getattr(self, name)
            if not (value.get_secret_value() if isinstance(value, SecretStr) else value):
                problems.append(f"{name}: missing; copy it from the Daraja portal")
        callback = urlsplit(self.mpesa_callback_base_url)
        callback_ok = callback.scheme == "https" and not _is_loopback(callback.hostname or "")
        # Unset, it is PUBLIC_BASE_URL, whose own problem (not https) is named already.
        if not callback_ok and (self.MPESA_CALLBACK_BASE_URL or self.PUBLIC_BASE_URL.startswith("https://")):
            problems.append("MPESA_CALLBACK_BASE_URL: must be a public https URL Safaricom can reach")
        if self.MPESA_BASE_URL is not None and not self.MPESA_BASE_URL.startswith("https://"):
            problems.append("MPESA_BASE_URL: must be https (Daraja is always reached over verified TLS)")
        if self.MPESA_TRANSACTION_TYPE == "CustomerBuyGoodsOnline" and not self.MPESA_PARTY_B:
            problems.append("MPESA_PARTY_B: Buy Goods needs the till number that receives the money")
        return problems

    def startup_problems(self) -> list[str]:
        """Problems that stop this process from starting in its own APP_ENV."""
        return self.production_problems() if self.is_production else []

    def masked(self) -> dict[str, str]:
        """Every setting as text, secrets masked, for `check-config`."""
        shown: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown[name] = "********" if value.get_secret_value() else "(empty)"
            elif value is None:
                shown[name] = "(unset)"
            elif isinstance(value, list):
                shown[name] = ",".join(value) or "(empty)"
            elif name == "DATABASE_URL":
                shown[name] = _mask_url_password(str(value))
            else:
                shown[name] = str(value.value if isinstance(value, StrEnum) else value)
        return shown

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read the environment (and `.env` in development); raise ConfigError on bad values."""
        try:
            settings = cls(**overrides)
            if settings.APP_ENV is AppEnv.DEVELOPMENT and Path(".env").is_file():
                with_dotenv = cls(_env_file=".env", **overrides)
                # A .env file may never turn a process into a deployed one.
                if with_dotenv.APP_ENV is AppEnv.DEVELOPMENT:
                    settings = with_dotenv
        except ValidationError as exc:
            raise ConfigError(_describe_validation_error(exc)) from None
        return settings


class ConfigError(Exception):
    """Invalid configuration; `problems` holds one line per variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _describe_validation_error(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        name = str(error["loc"][0]) if error["loc"] else "settings"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}")
    return lines


def _fernet_keys(text: str) -> list[bytes]:
    keys = [item.strip().encode() for item in text.split(",") if item.strip()]
    if not keys:
        raise ValueError("must list at least one Fernet key")
    for key in keys:
        try:
            if len(base64.urlsafe_b64decode(key)) != 32:
                raise ValueError
        except ValueError:
            raise ValueError("each key must be a Fernet key (32 bytes, url-safe base64)") from None
    return keys


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":********@", 1)
    return url


def _local_secret_key(data_dir: Path) -> str:
    """A per-install development key, created once with owner-only permissions."""
    path = data_dir / SECRET_KEY_FILE
    if path.is_file():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(key)
    return key
