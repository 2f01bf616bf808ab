"""The token lifecycle over HTTP: refresh rotation, reuse detection, logout, revocation,
password change, and how fast disabling and re-roling reach live access tokens."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from mlgate.app import create_app
from tests.conftest import USER_PASSWORD, Service, bearer

pytestmark = pytest.mark.asyncio
ME = "/api/v1/users/me"
TOKEN = "/api/v1/auth/token"
NEW_PASSWORD = "a completely new and long passphrase"


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


async def refresh(svc: Service, token: str, **extra: str) -> httpx.Response:
    return await svc.client.post(
        TOKEN, data={"grant_type": "refresh_token", "refresh_token": token, **extra}
    )


def invalid_grant(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


async def signed_in(svc: Service, role: str = "user") -> tuple[str, dict[str, Any]]:
    username, password = await svc.create_user(role)
    return username, await svc.login(username, password)


async def test_refresh_rotates_and_the_old_token_is_spent(svc: Service) -> None:
    _, first = await signed_in(svc)
    response = await refresh(svc, first["refresh_token"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert (await svc.client.get(ME, headers=bearer(second["access_token"]))).status_code == 200
    third = await refresh(svc, second["refresh_token"])
    assert third.status_code == 200


async def test_reuse_revokes_the_family_including_the_newest_tokens(svc: Service) -> None:
    _, first = await signed_in(svc)
    second = (await refresh(svc, first["refresh_token"])).json()
    assert (await svc.client.get(ME, headers=bearer(second["access_token"]))).status_code == 200
    invalid_grant(await refresh(svc, first["refresh_token"]))  # replayed: a thief or a bug
    invalid_grant(await refresh(svc, second["refresh_token"]))
    problem(await svc.client.get(ME, headers=bearer(second["access_token"])), 401, "token_revoked")
    problem(await svc.client.get(ME, headers=bearer(first["access_token"])), 401, "token_revoked")


async def test_reuse_is_recorded_in_the_audit_log(svc: Service) -> None:
    from sqlalchemy import select

    from mlgate.audit.tables import AuditEventRow

    _, first = await signed_in(svc)
    await refresh(svc, first["refresh_token"])
    await refresh(svc, first["refresh_token"])
    async with svc.ctx.db.session() as session:
        stmt = select(AuditEventRow.action).where(
            AuditEventRow.action == "auth.token.reuse_detected"
        )
        assert len(list((await session.execute(stmt)).scalars())) == 1


async def test_logout_kills_access_and_refresh_tokens(svc: Service) -> None:
    _, tokens = await signed_in(svc)
    _, other = await signed_in(svc)
    headers = bearer(tokens["access_token"])
    assert (await svc.client.post("/api/v1/auth/logout", headers=headers)).status_code == 204
    problem(await svc.client.get(ME, headers=headers), 401, "token_revoked")
    invalid_grant(await refresh(svc, tokens["refresh_token"]))
    assert (await svc.client.get(ME, headers=bearer(other["access_token"]))).status_code == 200


async def test_disabling_kills_a_live_access_token_at_once_here_and_within_1s_elsewhere(
    svc: Service,
) -> None:
    _, tokens = await signed_in(svc)
    headers = bearer(tokens["access_token"])
    # A second replica on the same database, with its own in-memory view.
    replica = create_app(svc.settings, run_bootstrap=False)
    async with replica.router.lifespan_context(replica):
        transport = httpx.ASGITransport(app=replica, client=("127.0.0.1", 50001))
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as other:
            assert (await other.get(ME, headers=headers)).status_code == 200  # cached there
            uid = (await svc.client.get(ME, headers=headers)).json()["id"]
            admin = await svc.admin_headers()
            loop = asyncio.get_running_loop()
            disabled = await svc.client.patch(
                f"/api/v1/admin/users/{uid}", json={"is_active": False}, headers=admin
            )
            started = loop.time()
            assert disabled.status_code == 200
            problem(await svc.client.get(ME, headers=headers), 401, "account_disabled")
            while (await other.get(ME, headers=headers)).status_code == 200:
                assert loop.time() - started < 1.0, "the other replica still accepts the token"
                await asyncio.sleep(0.02)


async def test_role_change_reaches_a_live_access_token_at_once(svc: Service) -> None:
    _, tokens = await signed_in(svc, "admin")
    headers = bearer(tokens["access_token"])
    assert (await svc.client.get("/api/v1/admin/users", headers=headers)).status_code == 200
    uid = (await svc.client.get(ME, headers=headers)).json()["id"]
    admin = await svc.admin_headers()
    await svc.client.patch(f"/api/v1/admin/users/{uid}", json={"roles": ["user"]}, headers=admin)
    problem(await svc.client.get("/api/v1/admin/users", headers=headers), 403, "permission_denied")


async def test_password_change_revokes_the_other_sessions_only(svc: Service) -> None:
    username, password = await svc.create_user("user")
    here = await svc.login(username, password)
    there = await svc.login(username, password)
    response = await svc.client.post(
        "/api/v1/users/me/password",
        json={"current_password": password, "new_password": NEW_PASSWORD},
        headers=bearer(here["access_token"]),
    )
    assert response.status_code == 204, response.text
    problem(await svc.client.get(ME, headers=bearer(there["access_token"])), 401, "token_revoked")
    invalid_grant(await refresh(svc, there["refresh_token"]))
    assert (await svc.client.get(ME, headers=bearer(here["access_token"]))).status_code == 200
    assert (await refresh(svc, here["refresh_token"])).status_code == 200


async def revoke(svc: Service, **data: str) -> httpx.Response:
    return await svc.client.post("/api/v1/auth/revoke", data=data)


async def test_revoke_a_refresh_token_ends_its_session(svc: Service) -> None:
    _, tokens = await signed_in(svc)
    response = await revoke(svc, token=tokens["refresh_token"], token_type_hint="refresh_token")
    assert response.status_code == 200
    invalid_grant(await refresh(svc, tokens["refresh_token"]))
    problem(await svc.client.get(ME, headers=bearer(tokens["access_token"])), 401, "token_revoked")


async def test_revoke_an_access_token(svc: Service) -> None:
    _, tokens = await signed_in(svc)
    assert (await revoke(svc, token=tokens["access_token"])).status_code == 200
    problem(await svc.client.get(ME, headers=bearer(tokens["access_token"])), 401, "token_revoked")


async def test_revoke_an_api_key(svc: Service) -> None:
    _, tokens = await signed_in(svc)
    key = (
        await svc.client.post(
            "/api/v1/users/me/api-keys",
            json={"name": "k"},
            headers=bearer(tokens["access_token"]),
        )
    ).json()["key"]
    assert (await revoke(svc, token=key)).status_code == 200
    problem(await svc.client.get(ME, headers={"X-API-Key": key}), 401, "token_revoked")


async def test_revoke_edge_cases(svc: Service) -> None:
    assert (await revoke(svc, token="not-a-token")).status_code == 200
    assert (await revoke(svc, token="mlg_" + "A" * 43)).status_code == 200
    missing = await revoke(svc, token_type_hint="refresh_token")
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"


async def test_refresh_may_narrow_scope_but_not_widen_it(svc: Service) -> None:
    _, tokens = await signed_in(svc)
    narrowed = await refresh(svc, tokens["refresh_token"], scope="models:read")
    assert narrowed.status_code == 200, narrowed.text
    body = narrowed.json()
    assert body["scope"] == "models:read"
    denied = await svc.client.post(
        "/api/v1/users/me/api-keys", json={"name": "k"}, headers=bearer(body["access_token"])
    )
    problem(denied, 403, "permission_denied")
    assert 'scope="apikeys:write"' in denied.headers["www-authenticate"]
    wider = await refresh(svc, body["refresh_token"], scope="users:write")
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"


async def test_own_sessions_list_and_end_one(svc: Service) -> None:
    username, password = await svc.create_user("user")
    here = bearer(await svc.token(username, password))
    there = bearer(await svc.token(username, password))
    listed = (await svc.client.get("/api/v1/users/me/sessions", headers=here)).json()
    assert len(listed) == 2
    assert [s["current"] for s in listed] == [True, False]
    assert not any("token" in field or "hash" in field for field in listed[0])
    other_sid = listed[1]["id"]
    stranger = await svc.user_headers("user")
    bola = await svc.client.delete(f"/api/v1/users/me/sessions/{other_sid}", headers=stranger)
    problem(bola, 404, "not_found")
    assert (await svc.client.get(ME, headers=there)).status_code == 200
    ended = await svc.client.delete(f"/api/v1/users/me/sessions/{other_sid}", headers=here)
    assert ended.status_code == 204
    problem(await svc.client.get(ME, headers=there), 401, "token_revoked")
    assert len((await svc.client.get("/api/v1/users/me/sessions", headers=here)).json()) == 1
    problem(
        await svc.client.delete(f"/api/v1/users/me/sessions/{other_sid}", headers=here),
        404,
        "not_found",
    )
    assert USER_PASSWORD not in str(listed)
