"""Runtime configuration, read from `MLGATE_*` environment variables and `.env`."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

RATE_RE = re.compile(r"^\s*\d+\s*/\s*(second|minute|hour|day)s?\s*$")
MIN_HS256_SECRET_BYTES = 32


def _split_csv(value: object) -> object:
    # Lists come from the environment as comma-separated text, which is what people type.
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _none_if_blank(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() in {"", "none", "null", "unlimited"}:
        return None
    return value


class Settings(BaseSettings):
    """Every knob of mlgate. Field names map to `MLGATE_<NAME>` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="MLGATE_", env_file=".env", extra="ignore", frozen=False
    )

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path("./mlgate-data")
    database_url: str | None = None
    redis_url: str | None = None

    jwt_algorithm: Literal["EdDSA", "RS256", "HS256"] = "EdDSA"
    jwt_secret: SecretStr | None = None
    issuer: str = "mlgate"
    audience: str = "mlgate-api"
    access_token_ttl_seconds: int = Field(900, ge=30, le=86400)
    refresh_token_ttl_seconds: int = Field(1209600, ge=60)
    refresh_token_max_lifetime_seconds: int = Field(2592000, ge=60)
    refresh_reuse_grace_seconds: int = Field(0, ge=0, le=60)
    key_encryption_key: SecretStr | None = None

    registration: Literal["open", "closed"] = "open"
    default_role: str = "user"
    password_min_length: int = Field(12, ge=8, le=128)
    argon2_memory_cost: int = Field(19456, ge=8)
    argon2_time_cost: int = Field(2, ge=1)
    argon2_parallelism: int = Field(1, ge=1)

    login_max_failures: int = Field(5, ge=1)
    login_lockout_seconds: int = Field(900, ge=1)
    login_max_failures_per_ip: int = Field(100, ge=1)
    login_max_failures_per_account: int = Field(50, ge=1)

    rate_limit_guest: str | None = "60/minute"
    rate_limit_user: str | None = "1200/minute"
    rate_limit_admin: str | None = None
    rate_limit_register: str | None = "10/hour"
    daily_quota_guest: int | None = Field(1000, ge=0)
    daily_quota_user: int | None = Field(None, ge=0)
    daily_quota_admin: int | None = Field(None, ge=0)

    max_batch_rows: int = Field(1000, ge=1)
    max_body_bytes: int = Field(1048576, ge=1024)
    max_model_bytes: int = Field(104857600, ge=1024)
    # serving settings
    batch_max_wait_ms: float = Field(2.0, ge=0, le=1000)
    batch_max_rows: int = Field(256, ge=1)
    batching: bool = True
    # Extra types a .skops upload may contain, beyond scikit-learn's estimators that
    # mlgate trusts by default. Taken from configuration, never from the file.
    skops_trusted_types: Annotated[list[str], NoDecode] = Field(default_factory=list)
    upload_check_memory_mb: int = Field(2048, ge=128)
    upload_check_cpu_seconds: int = Field(120, ge=1)
    allow_pickle: bool = False
    demo_models: bool = True

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    admin_username: str = "admin"
    admin_password: SecretStr | None = None
    api_key_max_days: int = Field(365, ge=1)
    log_format: Literal["json", "console"] = "json"
    log_level: str = "INFO"

    _split = field_validator(
        "cors_origins", "trusted_proxies", "skops_trusted_types", mode="before"
    )(_split_csv)
    _blank = field_validator(
        "rate_limit_guest",
        "rate_limit_user",
        "rate_limit_admin",
        "rate_limit_register",
        "daily_quota_guest",
        "daily_quota_user",
        "daily_quota_admin",
        "redis_url",
        "database_url",
        mode="before",
    )(_none_if_blank)

    @field_validator(
        "rate_limit_guest", "rate_limit_user", "rate_limit_admin", "rate_limit_register"
    )
    @classmethod
    def _rate_shape(cls, value: str | None) -> str | None:
        if value is not None and not RATE_RE.match(value):
            raise ValueError("a rate limit looks like '60/minute' (second, minute, hour or day)")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.jwt_algorithm == "HS256":
            secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
            if len(secret.encode()) < MIN_HS256_SECRET_BYTES:
                raise ValueError(
                    f"MLGATE_JWT_SECRET must be at least {MIN_HS256_SECRET_BYTES} bytes with HS256"
                )
        if self.env == "production":
            failures = [check.message for check in self.checks() if check.level == "fail"]
            if failures:
                raise ValueError("unsafe production settings: " + "; ".join(failures))
        return self

    @cached_property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'mlgate.db').as_posix()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    def checks(self, workers: int = 1) -> list[ConfigCheck]:
        """The production checklist, evaluated on these settings (used by check-config too)."""
        out: list[ConfigCheck] = []

        def add(ok: bool, message: str, level: Literal["fail", "warn"] = "fail") -> None:
            out.append(ConfigCheck("ok" if ok else level, message))

        if self.jwt_algorithm == "HS256":
            secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
            add(
                len(secret.encode()) >= 48 and secret.lower() not in WEAK_SECRETS,
                "HS256 secret must be a random value of at least 48 bytes",
            )
        add(not self.allow_pickle, "MLGATE_ALLOW_PICKLE must be false")
        add("*" not in self.cors_origins, "MLGATE_CORS_ORIGINS must not be '*'")
        add(not (self.is_sqlite and workers > 1), "SQLite cannot serve more than one worker")
        kek = self.key_encryption_key.get_secret_value() if self.key_encryption_key else None
        add(
            kek is None or len(kek.encode()) >= 32,
            "MLGATE_KEY_ENCRYPTION_KEY must be at least 32 bytes when set",
        )
        if self.registration == "open":
            from mlgate.rbac.permissions import BUILTIN_ROLES, Permission

            builtin = BUILTIN_ROLES.get(self.default_role)
            if builtin is None:
                # A custom role's permissions live in the database; say what to verify.
                add(
                    False,
                    f"open registration gives custom role '{self.default_role}': make sure it "
                    "cannot predict, or anyone may use your models",
                    level="warn",
                )
            else:
                add(
                    Permission.MODELS_PREDICT not in builtin[1],
                    "open registration whose default role can predict: anyone may use your "
                    "models (set MLGATE_REGISTRATION=closed or a default role without "
                    "models:predict)",
                    level="warn",
                )
        return out


class ConfigCheck:
    """One line of the production checklist."""

    def __init__(self, level: Literal["ok", "fail", "warn"], message: str) -> None:
        self.level = level
        self.message = message

    def __repr__(self) -> str:
        return f"ConfigCheck({self.level!r}, {self.message!r})"


WEAK_SECRETS = {"secret", "changeme", "change-me", "password", "mlgate"}
