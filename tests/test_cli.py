"""The `mlgate` command acts on the configured database and fails with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlgate.cli import app
from tests.conftest import TEST_KEK, USER_PASSWORD

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "MLGATE_DATA_DIR": str(tmp_path / "data"),
        "MLGATE_KEY_ENCRYPTION_KEY": TEST_KEK,
        "MLGATE_ADMIN_PASSWORD": "correct horse battery staple for root",
        "MLGATE_ARGON2_MEMORY_COST": "1024",
        "MLGATE_ARGON2_TIME_COST": "1",
        "MLGATE_DEMO_MODELS": "false",
    }


def test_init_is_idempotent(env: dict[str, str]) -> None:
    first = runner.invoke(app, ["init", "--no-demo-models"], env=env)
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["init", "--no-demo-models"], env=env)
    assert second.exit_code == 0, second.output
    listing = runner.invoke(app, ["users", "list"], env=env)
    assert listing.output.count("admin@localhost") == 1


def test_users_create_from_stdin_and_list(env: dict[str, str]) -> None:
    result = runner.invoke(
        app,
        ["users", "create", "cliuser", "--email", "cli@example.com", "--password-stdin"],
        input=USER_PASSWORD + "\n",
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert USER_PASSWORD not in result.output
    listing = runner.invoke(app, ["users", "list"], env=env)
    assert "cliuser" in listing.output
    assert "cli@example.com" in listing.output


def test_users_create_admin_flag(env: dict[str, str]) -> None:
    result = runner.invoke(
        app,
        ["users", "create", "boss", "--email", "boss@example.com", "--admin", "--password-stdin"],
        input=USER_PASSWORD + "\n",
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "admin" in result.output


@pytest.mark.parametrize(
    ("args", "password", "message"),
    [
        (["weakling", "--email", "w@example.com"], "short", "too short"),
        (["ab", "--email", "w@example.com"], USER_PASSWORD, "username"),
        (["okname", "--email", "not-an-email"], USER_PASSWORD, "email"),
        (["okname", "--email", "w@example.com", "--role", "nosuchrole"], USER_PASSWORD, "role"),
    ],
)
def test_users_create_failures_are_one_line(
    env: dict[str, str], args: list[str], password: str, message: str
) -> None:
    result = runner.invoke(
        app, ["users", "create", *args, "--password-stdin"], input=password + "\n", env=env
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert message in result.output.lower()
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_duplicate_user_fails_cleanly(env: dict[str, str]) -> None:
    args = ["users", "create", "twice", "--email", "t@example.com", "--password-stdin"]
    assert runner.invoke(app, args, input=USER_PASSWORD + "\n", env=env).exit_code == 0
    again = runner.invoke(app, args, input=USER_PASSWORD + "\n", env=env)
    assert again.exit_code == 1
    assert "already taken" in again.output


def test_keys_rotate(env: dict[str, str]) -> None:
    assert runner.invoke(app, ["init", "--no-demo-models"], env=env).exit_code == 0
    first = runner.invoke(app, ["keys", "rotate"], env=env)
    second = runner.invoke(app, ["keys", "rotate"], env=env)
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0
    assert first.output != second.output


def test_bad_settings_are_one_line(env: dict[str, str]) -> None:
    bad = {**env, "MLGATE_JWT_ALGORITHM": "HS256", "MLGATE_JWT_SECRET": "short"}
    result = runner.invoke(app, ["users", "list"], env=bad)
    assert result.exit_code == 1
    assert "32 bytes" in result.output


def test_users_unlock(env: dict[str, str]) -> None:
    args = ["users", "create", "locked", "--email", "l@example.com", "--password-stdin"]
    assert runner.invoke(app, args, input=USER_PASSWORD + "\n", env=env).exit_code == 0
    result = runner.invoke(app, ["users", "unlock", "locked"], env=env)
    assert result.exit_code == 0, result.output
    assert "locked is unlocked" in result.output
    missing = runner.invoke(app, ["users", "unlock", "nobody"], env=env)
    assert missing.exit_code == 1
    assert "No user named" in missing.output
