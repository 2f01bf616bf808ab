"""Settings: names from the environment, and production refusing unsafe values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from mlgate.cli import app
from mlgate.settings import Settings


def test_environment_names_and_lists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MLGATE_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("MLGATE_TRUSTED_PROXIES", "10.0.0.0/8,192.168.1.1")
    monkeypatch.setenv("MLGATE_RATE_LIMIT_ADMIN", "none")
    monkeypatch.setenv("MLGATE_DAILY_QUOTA_GUEST", "50")
    settings = Settings()
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.168.1.1"]
    assert settings.rate_limit_admin is None
    assert settings.daily_quota_guest == 50
    assert settings.effective_database_url.endswith(f"{tmp_path}/mlgate.db")


@pytest.mark.parametrize(
    "bad",
    [
        {"allow_pickle": True},
        {"cors_origins": ["*"]},
        {"jwt_algorithm": "HS256", "jwt_secret": "s" * 32},  # long enough for dev, not prod
        {"key_encryption_key": "short"},
    ],
)
def test_production_refuses_unsafe_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="unsafe production settings"):
        Settings(env="production", **bad)
    Settings(env="development", **bad)  # the same values are allowed while developing


def test_production_accepts_safe_values() -> None:
    Settings(env="production", jwt_algorithm="HS256", jwt_secret="r" * 64)


@pytest.mark.parametrize(
    ("value", "field"),
    [("MLGATE_RATE_LIMIT_USER", "10 per minute"), ("MLGATE_TRUSTED_PROXIES", "not-a-cidr")],
)
def test_malformed_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, field: str
) -> None:
    monkeypatch.setenv(value, field)
    with pytest.raises(ValidationError):
        Settings()


def test_serve_refuses_unsafe_production_and_many_sqlite_workers(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {
        "MLGATE_DATA_DIR": str(tmp_path),
        "MLGATE_ENV": "production",
        "MLGATE_ALLOW_PICKLE": "true",
    }
    refused = runner.invoke(app, ["serve", "--port", "1"], env=env)
    assert refused.exit_code == 1
    assert "ALLOW_PICKLE" in refused.output
    assert "Traceback" not in refused.output
    workers = runner.invoke(
        app, ["serve", "--port", "1", "--workers", "2"], env={"MLGATE_DATA_DIR": str(tmp_path)}
    )
    assert workers.exit_code == 1
    assert "SQLite" in workers.output
