"""The access log: one structured line per request, never headers, query or body."""

from __future__ import annotations

import json
import logging

import pytest

from mlgate.logs import JsonFormatter
from tests.conftest import USER_PASSWORD, Service

pytestmark = pytest.mark.asyncio


def _access(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "mlgate.access" and hasattr(r, "route")]


async def test_one_line_per_request_with_fields(
    svc: Service, caplog: pytest.LogCaptureFixture
) -> None:
    await svc.register("logged")
    token = await svc.token("logged", USER_PASSWORD)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="mlgate.access")
    response = await svc.client.get(
        "/api/v1/users/me?secret-query=topsecretvalue",
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-123"},
    )
    assert response.status_code == 200
    records = _access(caplog)
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["request_id"] == "req-123"
    assert line["principal"] == "logged"
    assert line["method"] == "GET"
    assert line["route"] == "/api/v1/users/me"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float)
    assert line["duration_ms"] >= 0
    assert line["logger"] == "mlgate.access"
    text = json.dumps(line)
    assert "topsecretvalue" not in text
    assert token not in text
    assert "Bearer" not in text


async def test_anonymous_unmatched_and_errors(
    svc: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mlgate.access")
    await svc.client.get("/not/a/route/9f8e7d")
    await svc.client.get("/api/v1/users/me")
    records = _access(caplog)
    assert [(r.route, r.status, r.principal) for r in records] == [  # type: ignore[attr-defined]
        ("unmatched", 404, "-"),
        ("/api/v1/users/me", 401, "-"),
    ]
    assert "9f8e7d" not in caplog.text


async def test_login_body_and_password_never_logged(
    svc: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await svc.register("carol")
    tokens = await svc.client.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": "carol", "password": USER_PASSWORD},
    )
    secrets = [USER_PASSWORD, tokens.json()["access_token"], tokens.json()["refresh_token"]]
    await svc.client.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": "carol", "password": "wrong-" + USER_PASSWORD},
    )
    records = _access(caplog)
    assert [r.status for r in records] == [201, 200, 400]  # type: ignore[attr-defined]
    for record in caplog.records:
        rendered = JsonFormatter().format(record)
        for secret in secrets:
            assert secret not in rendered


async def test_console_format_is_one_readable_line(
    svc: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mlgate.access")
    await svc.client.get("/healthz", headers={"X-Request-ID": "abc"})
    (record,) = _access(caplog)
    message = record.getMessage()
    assert "\n" not in message
    assert message.startswith("GET /healthz 200 ")
    assert "rid=abc" in message
    assert "user=-" in message
