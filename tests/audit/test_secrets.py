"""A full scenario, then every audit row and every captured log line is searched for
the passwords, tokens, refresh tokens and API keys it used."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from mlgate.audit.tables import AuditEventRow
from tests.conftest import Service, bearer

PASSWORD = "secret passphrase number one 9f2c"
NEW_PASSWORD = "secret passphrase number two 7a1e"
WRONG = "wrong secret attempt 4b8d"


async def test_no_secret_in_events_or_logs(svc: Service, caplog: pytest.LogCaptureFixture) -> None:
    # Everything mlgate logs, and INFO from libraries (aiosqlite's DEBUG log prints SQL
    # parameters; production logging keeps it off).
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="mlgate")
    c = svc.client
    user = await svc.register(password=PASSWORD)
    name = user["username"]
    secrets: list[str] = [PASSWORD, NEW_PASSWORD, WRONG]

    await c.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": name, "password": WRONG},
    )
    await c.post(  # a password typed into the username field
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": PASSWORD, "password": PASSWORD},
    )
    first = await svc.login(name, PASSWORD)
    secrets += [first["access_token"], first["refresh_token"]]
    r = await c.post(
        "/api/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
    )
    second = r.json()
    secrets += [second["access_token"], second["refresh_token"]]
    await c.post(  # reuse: revokes the family
        "/api/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
    )
    third = await svc.login(name, PASSWORD)
    secrets += [third["access_token"], third["refresh_token"]]
    headers = bearer(third["access_token"])
    r = await c.post("/api/v1/users/me/api-keys", json={"name": "ci"}, headers=headers)
    if r.status_code == 201:
        key = r.json()["key"]
        secrets.append(key)
        await c.get("/api/v1/users/me", headers={"X-API-Key": key})
        await c.get("/api/v1/admin/audit", headers={"X-API-Key": key})  # 403, audited
        await c.post("/api/v1/auth/revoke", data={"token": key})
    await c.get("/api/v1/models", headers={"Authorization": f"Bearer {third['refresh_token']}"})
    await c.post(
        "/api/v1/models/iris/predict",
        json={"inputs": [[5.1, 3.5, 1.4, 0.2]]},
        headers=headers,
    )
    await c.post(
        "/api/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=headers,
    )
    await c.post("/api/v1/auth/revoke", data={"token": third["refresh_token"]})
    await c.post("/api/v1/auth/logout", headers=headers)

    async with svc.ctx.db.session() as session:
        rows = list((await session.scalars(select(AuditEventRow))).all())
    assert len(rows) >= 8
    dumped = "\n".join(
        repr({col.name: getattr(row, col.key) for col in AuditEventRow.__table__.columns})
        for row in rows
    )
    admin = await svc.admin_headers()
    exported = (await c.get("/api/v1/admin/audit/export", headers=admin)).text
    logs = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    for secret in secrets:
        assert secret not in dumped
        assert secret not in exported
        assert secret not in logs
        # Neither a recognisable half of it.
        assert secret[: len(secret) // 2] not in dumped
