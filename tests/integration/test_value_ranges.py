"""Values a column cannot hold are the client's error (422), never a 503 or 500."""

from __future__ import annotations

import pytest

from tests.conftest import Service

pytestmark = pytest.mark.asyncio
HUGE = 791328051099788


async def test_huge_role_quota_is_422(svc: Service) -> None:
    headers = await svc.admin_headers()
    response = await svc.client.post(
        "/api/v1/admin/roles",
        json={"name": "bulk", "permissions": ["models:read"], "daily_quota": HUGE},
        headers=headers,
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_huge_user_quota_is_422(svc: Service) -> None:
    headers = await svc.admin_headers()
    username, _ = await svc.create_user("user")
    users = (await svc.client.get(f"/api/v1/admin/users?q={username}", headers=headers)).json()
    user_id = users["items"][0]["id"]
    response = await svc.client.patch(
        f"/api/v1/admin/users/{user_id}", json={"daily_quota": HUGE}, headers=headers
    )
    assert response.status_code == 422
    ok = await svc.client.patch(
        f"/api/v1/admin/users/{user_id}", json={"daily_quota": 2**31 - 1}, headers=headers
    )
    assert ok.status_code == 200, ok.text


async def test_nul_character_in_text_is_never_a_server_error(svc: Service) -> None:
    """PostgreSQL text cannot hold NUL: that is the client's input (422), not an outage."""
    headers = await svc.admin_headers()
    response = await svc.client.post(
        "/api/v1/admin/roles",
        json={"name": "nul", "permissions": ["models:read"], "description": "a\u0000b"},
        headers=headers,
    )
    assert response.status_code in (201, 422), response.text
    if response.status_code == 422:
        assert response.json()["code"] == "validation_error"
