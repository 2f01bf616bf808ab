"""`mlgate audit tail | export | purge` on a running service's database (SQLite and
PostgreSQL): what they print matches what the API holds, purge asks first and leaves an
`audit.purge` checkpoint, and bad input is one clear line with exit 1.

The CLI runs `asyncio.run` itself, so each invocation runs in a worker thread while the
test's loop (which serves the app) waits."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import mlgate.cli
from mlgate.audit import cli as audit_cli
from mlgate.audit import repository as repo
from tests.audit.util import events, rid
from tests.conftest import TEST_KEK, USER_PASSWORD, Service

runner = CliRunner()
if not any(group.name == "audit" for group in mlgate.cli.app.registered_groups):
    # `main()` mounts the optional groups at start; the bare Typer app lacks them.
    mlgate.cli._mount_optional()


def _env(svc: Service) -> dict[str, Any]:
    return {
        "MLGATE_DATA_DIR": str(svc.settings.data_dir),
        "MLGATE_DATABASE_URL": svc.settings.database_url,
        "MLGATE_KEY_ENCRYPTION_KEY": TEST_KEK,
    }


async def invoke(svc: Service, *args: str, input: str | None = None) -> Result:
    env = _env(svc)
    return await asyncio.to_thread(
        lambda: runner.invoke(mlgate.cli.app, ["audit", *args], input=input, env=env)
    )


def one_line_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


async def _activity(svc: Service) -> str:
    """A success and a failure of a fresh user; returns the username."""
    username, password = await svc.create_user()
    await svc.login(username, password)
    failed = await svc.client.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": username, "password": "wrong" + password},
        headers=rid("cli-fail"),
    )
    assert failed.status_code == 400
    return username


async def test_tail_shows_the_latest_events_oldest_first(svc: Service) -> None:
    username = await _activity(svc)
    result = await invoke(svc, "tail", "-n", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2, result.output
    assert " auth.login.success " in lines[0]
    assert " auth.login.failure " in lines[1]
    assert all(username in line for line in lines)
    assert "cli-fail" in lines[1]  # the request id
    assert "wrong" not in result.output  # never a password

    filtered = await invoke(svc, "tail", "--action", "auth.login.*", "--actor", username)
    assert filtered.exit_code == 0, filtered.output
    assert len(filtered.output.splitlines()) == 2
    nothing = await invoke(svc, "tail", "--actor", "nobody-at-all")
    assert nothing.exit_code == 0
    assert nothing.output == ""


def test_tail_output_escapes_control_characters() -> None:
    """Unknown usernames are not stored, so a forged line cannot be planted through the
    API here; the renderer every tail line goes through escapes it anyway."""
    forged = "mallory\n2099-01-01T00:00:00Z  admin.user.delete\x1b[2J"
    assert audit_cli._safe(forged) == "mallory\\x0a2099-01-01T00:00:00Z  admin.user.delete\\x1b[2J"
    assert audit_cli._safe(None) == "-"


async def test_tail_follow_prints_new_events_once(
    svc: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--follow` loops until interrupted, so its loop is driven directly on the service's
    own context and cancelled; the command wrapper only adds the KeyboardInterrupt exit."""
    monkeypatch.setattr(audit_cli, "FOLLOW_POLL_SECONDS", 0.05)
    username = await _activity(svc)
    follow = asyncio.create_task(audit_cli._tail(svc.ctx, repo.AuditFilter(), 1, True))
    await asyncio.sleep(0.2)
    await svc.login(username, USER_PASSWORD)  # a new event while following
    await asyncio.sleep(0.4)
    follow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await follow
    lines = capsys.readouterr().out.splitlines()
    assert " auth.login.failure " in lines[0]
    new = [line for line in lines[1:] if " auth.login.success " in line]
    assert len(new) == 1, lines  # printed once, despite the overlapping look-back
    assert len(lines) == len(set(lines)), lines


async def _api_export(svc: Service, fmt: str, until: str) -> str:
    response = await svc.client.get(
        "/api/v1/admin/audit/export",
        params={"format": fmt, "until": until},
        headers=await svc.admin_headers(),
    )
    assert response.status_code == 200, response.text
    return response.text


async def test_export_jsonl_matches_the_api(svc: Service, tmp_path: Any) -> None:
    await _activity(svc)
    until = (datetime.now(UTC) + timedelta(milliseconds=1)).isoformat()
    await asyncio.sleep(0.01)
    api = [json.loads(line) for line in (await _api_export(svc, "jsonl", until)).splitlines()]
    result = await invoke(svc, "export", "--format", "jsonl", "--until", until)
    assert result.exit_code == 0, result.output
    cli = [json.loads(line) for line in result.output.splitlines()]
    assert cli == api
    assert {"auth.login.success", "auth.login.failure"} <= {e["action"] for e in cli}
    target = tmp_path / "audit.jsonl"
    written = await invoke(svc, "export", "--until", until, "-o", str(target))
    assert written.exit_code == 0, written.output
    assert f"exported {len(api)} events" in written.output
    assert [json.loads(line) for line in target.read_text().splitlines()] == api


async def test_export_csv_matches_the_api(svc: Service) -> None:
    await _activity(svc)
    until = (datetime.now(UTC) + timedelta(milliseconds=1)).isoformat()
    await asyncio.sleep(0.01)
    api = list(csv.DictReader(io.StringIO(await _api_export(svc, "csv", until))))
    result = await invoke(svc, "export", "--format", "csv", "--until", until)
    assert result.exit_code == 0, result.output
    cli = list(csv.DictReader(io.StringIO(result.output)))
    assert cli == api
    # Every stored event before `until` (the API export's own sign-in comes after it).
    cut = datetime.fromisoformat(until)
    stored = [e for e in await events(svc) if e.at.replace(tzinfo=e.at.tzinfo or UTC) < cut]
    assert [row["id"] for row in cli] == [str(e.id) for e in stored]


async def test_export_refuses_an_unknown_format(svc: Service) -> None:
    one_line_error(await invoke(svc, "export", "--format", "xml"), "jsonl or csv")


async def test_purge_asks_then_deletes_and_leaves_a_checkpoint(svc: Service) -> None:
    await _activity(svc)
    before = await events(svc)
    assert before
    cutoff = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()

    declined = await invoke(svc, "purge", "--before", cutoff, input="n\n")
    one_line_error_after_prompt(declined, "cancelled")
    assert len(await events(svc)) == len(before)

    confirmed = await invoke(svc, "purge", "--before", cutoff, input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert f"Delete {len(before)} audit events before {cutoff}" in confirmed.output
    assert f"deleted {len(before)} audit events" in confirmed.output
    left = await events(svc)
    assert [e.action for e in left] == ["audit.purge"]
    checkpoint = left[0]
    assert checkpoint.outcome == "success"
    assert checkpoint.resource == "audit"
    assert checkpoint.details["deleted"] == len(before)
    assert checkpoint.details["before"].startswith(cutoff)

    again = await invoke(svc, "purge", "--before", "2000-01-01", "--yes")
    assert again.exit_code == 0, again.output
    assert "deleted 0 audit events" in again.output
    assert [e.action for e in await events(svc)] == ["audit.purge", "audit.purge"]


def one_line_error_after_prompt(result: Result, needle: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    last = [line for line in result.output.splitlines() if line.strip()][-1]
    assert needle in last, result.output


@pytest.mark.parametrize("value", ["2024-13-45", "yesterday", "2024-01-01T25:00"])
async def test_purge_refuses_a_malformed_date(svc: Service, value: str) -> None:
    count = len(await events(svc))
    result = await invoke(svc, "purge", "--before", value, "--yes")
    one_line_error(result, value)
    assert len(await events(svc)) == count  # nothing deleted, no checkpoint


async def test_tail_refuses_a_malformed_since(svc: Service) -> None:
    one_line_error(await invoke(svc, "tail", "--since", "last tuesday"), "last tuesday")
