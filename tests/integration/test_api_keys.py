"""API keys over HTTP: minting, listing, revoking, scopes, BOLA, owner state."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import USER_PASSWORD, Service, bearer

pytestmark = pytest.mark.asyncio
KEYS = "/api/v1/users/me/api-keys"


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


async def mint(svc: Service, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await svc.client.post(KEYS, json={"name": "ci", **body}, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_key_is_shown_once_and_works_in_both_headers(svc: Service) -> None:
    headers = await svc.user_headers("user")
    created = await mint(svc, headers)
    key = created["key"]
    assert key.startswith("mlg_")
    assert len(key) == 47
    assert created["prefix"] == key[:12]
    assert created["scopes"] == ["apikeys:write", "models:predict", "models:read"]
    assert created["expires_at"] is not None
    listed = (await svc.client.get(KEYS, headers=headers)).json()
    assert [k["id"] for k in listed] == [created["id"]]
    assert key not in str(listed)
    assert "key" not in listed[0]
    assert not any("hash" in field for field in listed[0])
    for creds in (bearer(key), {"X-API-Key": key}):
        me = await svc.client.get("/api/v1/users/me", headers=creds)
        assert me.status_code == 200, me.text


async def test_default_expiry_is_the_maximum_and_longer_is_refused(
    make_service: Any,
) -> None:
    async with make_service(api_key_max_days=30) as svc:
        headers = await svc.user_headers("user")
        created = await mint(svc, headers)
        from datetime import datetime

        lifetime = datetime.fromisoformat(created["expires_at"]) - datetime.fromisoformat(
            created["created_at"]
        )
        assert lifetime.days == 30
        too_long = await svc.client.post(
            KEYS, json={"name": "x", "expires_in_days": 31}, headers=headers
        )
        problem(too_long, 422, "validation_error")


async def test_scopes_must_be_within_the_owners_permissions(svc: Service) -> None:
    headers = await svc.user_headers("user")
    response = await svc.client.post(
        KEYS, json={"name": "x", "scopes": ["users:read"]}, headers=headers
    )
    problem(response, 422, "validation_error")
    unknown = await svc.client.post(KEYS, json={"name": "x", "scopes": ["nope"]}, headers=headers)
    problem(unknown, 422, "validation_error")
    extra = await svc.client.post(KEYS, json={"name": "x", "owner": "admin"}, headers=headers)
    problem(extra, 422, "validation_error")


async def test_scopes_of_a_key_limit_it(svc: Service) -> None:
    admin = await svc.admin_headers()
    created = await mint(svc, admin, scopes=["users:read"])
    key = bearer(created["key"])
    assert (await svc.client.get("/api/v1/admin/users", headers=key)).status_code == 200
    denied = await svc.client.patch(
        f"/api/v1/admin/roles/{'user'}", json={"description": "x"}, headers=key
    )
    body = problem(denied, 403, "permission_denied")
    assert 'scope="roles:write"' in denied.headers["www-authenticate"]
    assert body["detail"]


async def test_api_key_principal_cannot_mint_change_password_or_log_out(svc: Service) -> None:
    headers = await svc.user_headers("user")
    key = {"X-API-Key": (await mint(svc, headers))["key"]}
    problem(await svc.client.post(KEYS, json={"name": "y"}, headers=key), 403, "permission_denied")
    problem(
        await svc.client.post(
            "/api/v1/users/me/password",
            json={"current_password": USER_PASSWORD, "new_password": "x" * 20},
            headers=key,
        ),
        403,
        "permission_denied",
    )
    problem(await svc.client.post("/api/v1/auth/logout", headers=key), 403, "permission_denied")


async def test_bola_another_users_key_is_404_and_survives(svc: Service) -> None:
    alice = await svc.user_headers("user")
    bob = await svc.user_headers("user")
    alice_key = await mint(svc, alice)
    response = await svc.client.delete(f"{KEYS}/{alice_key['id']}", headers=bob)
    problem(response, 404, "not_found")
    assert (await svc.client.get(KEYS, headers=bob)).json() == []
    still = await svc.client.get("/api/v1/users/me", headers=bearer(alice_key["key"]))
    assert still.status_code == 200


async def test_revoked_key_is_refused_at_once(svc: Service) -> None:
    headers = await svc.user_headers("user")
    created = await mint(svc, headers)
    key = bearer(created["key"])
    assert (await svc.client.get("/api/v1/users/me", headers=key)).status_code == 200
    assert (await svc.client.delete(f"{KEYS}/{created['id']}", headers=headers)).status_code == 204
    problem(await svc.client.get("/api/v1/users/me", headers=key), 401, "token_revoked")
    assert (await svc.client.get(KEYS, headers=headers)).json() == []
    again = await svc.client.delete(f"{KEYS}/{created['id']}", headers=headers)
    problem(again, 404, "not_found")


async def test_key_of_a_disabled_owner_is_refused_and_works_again_when_enabled(
    svc: Service,
) -> None:
    username, password = await svc.create_user("user")
    user = bearer(await svc.token(username, password))
    key = bearer((await mint(svc, user))["key"])
    me = (await svc.client.get("/api/v1/users/me", headers=key)).json()
    admin = await svc.admin_headers()
    url = f"/api/v1/admin/users/{me['id']}"
    assert (await svc.client.patch(url, json={"is_active": False}, headers=admin)).is_success
    problem(await svc.client.get("/api/v1/users/me", headers=key), 401, "account_disabled")
    assert (await svc.client.patch(url, json={"is_active": True}, headers=admin)).is_success
    assert (await svc.client.get("/api/v1/users/me", headers=key)).status_code == 200


async def test_role_change_limits_keys_at_once(svc: Service) -> None:
    username, password = await svc.create_user("admin")
    own = bearer(await svc.token(username, password))
    key = bearer((await mint(svc, own))["key"])
    me = (await svc.client.get("/api/v1/users/me", headers=key)).json()
    assert (await svc.client.get("/api/v1/admin/users", headers=key)).status_code == 200
    admin = await svc.admin_headers()
    demote = await svc.client.patch(
        f"/api/v1/admin/users/{me['id']}", json={"roles": ["user"]}, headers=admin
    )
    assert demote.status_code == 200, demote.text
    denied = await svc.client.get("/api/v1/admin/users", headers=key)
    problem(denied, 403, "permission_denied")


async def test_both_authorization_and_x_api_key_is_400(svc: Service) -> None:
    headers = await svc.user_headers("user")
    key = (await mint(svc, headers))["key"]
    response = await svc.client.get("/api/v1/users/me", headers={**headers, "X-API-Key": key})
    problem(response, 400, "invalid_request")


async def test_admin_lists_and_revokes_a_users_keys(svc: Service) -> None:
    alice = await svc.user_headers("user")
    created = await mint(svc, alice)
    alice_id = (await svc.client.get("/api/v1/users/me", headers=alice)).json()["id"]
    admin = await svc.admin_headers()
    url = f"/api/v1/admin/users/{alice_id}/api-keys"
    listed = (await svc.client.get(url, headers=admin)).json()
    assert [k["id"] for k in listed] == [created["id"]]
    admin_id = (await svc.client.get("/api/v1/users/me", headers=admin)).json()["id"]
    wrong_owner = await svc.client.delete(
        f"/api/v1/admin/users/{admin_id}/api-keys/{created['id']}", headers=admin
    )
    problem(wrong_owner, 404, "not_found")
    assert (await svc.client.delete(f"{url}/{created['id']}", headers=admin)).status_code == 204
    problem(
        await svc.client.get("/api/v1/users/me", headers=bearer(created["key"])),
        401,
        "token_revoked",
    )
