"""`mlgate check-config`: the production checklist against the current environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlgate.cli import app

SAFE = {
    "MLGATE_REGISTRATION": "closed",
    "MLGATE_KEY_ENCRYPTION_KEY": "k" * 44,
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the variables a test sets: no MLGATE_* from the shell, no stray .env file."""
    for name in list(os.environ):
        if name.startswith("MLGATE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLGATE_DATA_DIR", str(tmp_path / "data"))


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["check-config", *args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.output.split())


def test_safe_config_passes() -> None:
    code, out = run(SAFE)
    assert code == 0, out
    assert "production checklist" in out
    assert "FAIL" not in out
    assert "ALLOW_PICKLE must be false" in out  # every check is listed, passing ones too
    assert "0 failed" in out


def test_allow_pickle_fails() -> None:
    code, out = run({**SAFE, "MLGATE_ALLOW_PICKLE": "true"})
    assert code != 0, out
    assert "FAIL MLGATE_ALLOW_PICKLE must be false" in out
    assert "1 failed" in out


def test_failing_production_env_is_reported_not_refused() -> None:
    """With MLGATE_ENV=production the app would refuse to start; the checker explains why."""
    code, out = run({**SAFE, "MLGATE_ENV": "production", "MLGATE_CORS_ORIGINS": "*"})
    assert code != 0, out
    assert "FAIL MLGATE_CORS_ORIGINS must not be '*'" in out


def test_weak_hs256_secret_fails() -> None:
    env = {**SAFE, "MLGATE_JWT_ALGORITHM": "HS256", "MLGATE_JWT_SECRET": "s" * 40}
    code, out = run(env)
    assert code != 0, out
    assert "FAIL HS256 secret" in out
    strong = {**SAFE, "MLGATE_JWT_ALGORITHM": "HS256", "MLGATE_JWT_SECRET": "Zq8" * 22}
    code, out = run(strong)
    assert code == 0, out


def test_sqlite_with_many_workers_fails() -> None:
    code, out = run(SAFE, "--workers", "4")
    assert code != 0, out
    assert "FAIL SQLite cannot serve more than one worker" in out
    code, out = run(SAFE, "--workers", "1")
    assert code == 0, out


def test_short_key_encryption_key_fails() -> None:
    code, out = run({**SAFE, "MLGATE_KEY_ENCRYPTION_KEY": "short"})
    assert code != 0, out
    assert "FAIL MLGATE_KEY_ENCRYPTION_KEY" in out


@pytest.mark.parametrize("role", ["user", "guest", "admin"])
def test_open_registration_with_a_predicting_role_warns(role: str) -> None:
    env = {**SAFE, "MLGATE_REGISTRATION": "open", "MLGATE_DEFAULT_ROLE": role}
    code, out = run(env)
    assert code == 0, out  # a warning, not a failure
    assert "warn open registration" in out
    assert "can predict" in out
    assert "1 warnings" in out


def test_closed_registration_does_not_warn() -> None:
    code, out = run(SAFE)
    assert code == 0
    assert "warn" not in out.replace("0 warnings", "")


def test_open_registration_with_a_custom_role_asks_to_verify() -> None:
    env = {**SAFE, "MLGATE_REGISTRATION": "open", "MLGATE_DEFAULT_ROLE": "reader"}
    code, out = run(env)
    assert code == 0, out
    assert "warn open registration gives custom role 'reader'" in out


def test_invalid_settings_exit_non_zero_with_one_line() -> None:
    code, out = run({**SAFE, "MLGATE_RATE_LIMIT_USER": "lots"})
    assert code != 0
    assert "invalid settings" in out
