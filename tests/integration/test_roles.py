"""Roles over HTTP: listing, custom roles, built-in immutability, escalation, in-use."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Service, bearer

pytestmark = pytest.mark.asyncio
ROLES = "/api/v1/admin/roles"


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


async def test_anyone_signed_in_lists_the_builtin_roles(svc: Service) -> None:
    guest = await svc.user_headers("guest")
    response = await svc.client.get("/api/v1/roles", headers=guest)
    assert response.status_code == 200
    roles = {r["name"]: r for r in response.json()}
    assert set(roles) == {"admin", "guest", "user"}
    assert roles["guest"]["permissions"] == ["models:predict", "models:read"]
    assert roles["user"]["permissions"] == ["apikeys:write", "models:predict", "models:read"]
    assert "roles:write" in roles["admin"]["permissions"]
    assert all(r["builtin"] for r in roles.values())


async def test_custom_role_lifecycle_takes_effect_on_live_tokens(svc: Service) -> None:
    admin = await svc.admin_headers()
    created = await svc.client.post(
        ROLES,
        json={
            "name": "auditor",
            "permissions": ["audit:read", "users:read"],
            "description": "reads",
            "daily_quota": 10,
            "rate_limit": "10/minute",
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    assert created.json()["permissions"] == ["audit:read", "users:read"]
    assert created.json()["builtin"] is False
    username, password = await svc.create_user("auditor")
    auditor = bearer(await svc.token(username, password))
    assert (await svc.client.get("/api/v1/admin/users", headers=auditor)).status_code == 200
    changed = await svc.client.patch(
        f"{ROLES}/auditor", json={"permissions": ["audit:read"], "rate_limit": None}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["rate_limit"] is None
    assert changed.json()["daily_quota"] == 10
    problem(await svc.client.get("/api/v1/admin/users", headers=auditor), 403, "permission_denied")
    in_use = await svc.client.delete(f"{ROLES}/auditor", headers=admin)
    problem(in_use, 409, "conflict")
    me = (await svc.client.get("/api/v1/users/me", headers=auditor)).json()
    await svc.client.patch(
        f"/api/v1/admin/users/{me['id']}", json={"roles": ["user"]}, headers=admin
    )
    assert (await svc.client.delete(f"{ROLES}/auditor", headers=admin)).status_code == 204
    names = [r["name"] for r in (await svc.client.get("/api/v1/roles", headers=admin)).json()]
    assert "auditor" not in names
    problem(await svc.client.delete(f"{ROLES}/auditor", headers=admin), 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Bad Name", "permissions": []},
        {"name": "x", "permissions": []},
        {"name": "ok-name", "permissions": ["models:fly"]},
        {"name": "ok-name", "permissions": [], "rate_limit": "lots"},
        {"name": "ok-name", "permissions": [], "daily_quota": -1},
        {"name": "ok-name", "permissions": [], "builtin": True},
    ],
)
async def test_invalid_roles_are_422(svc: Service, body: dict[str, Any]) -> None:
    admin = await svc.admin_headers()
    problem(await svc.client.post(ROLES, json=body, headers=admin), 422, "validation_error")


async def test_builtin_roles_are_immutable_and_names_unique(svc: Service) -> None:
    admin = await svc.admin_headers()
    for name in ("admin", "user", "guest"):
        problem(
            await svc.client.patch(f"{ROLES}/{name}", json={"description": "x"}, headers=admin),
            409,
            "conflict",
        )
        problem(await svc.client.delete(f"{ROLES}/{name}", headers=admin), 409, "conflict")
    problem(
        await svc.client.post(ROLES, json={"name": "user", "permissions": []}, headers=admin),
        409,
        "conflict",
    )
    roles = {r["name"]: r for r in (await svc.client.get("/api/v1/roles", headers=admin)).json()}
    assert roles["user"]["permissions"] == ["apikeys:write", "models:predict", "models:read"]


async def test_role_writer_cannot_grant_what_it_lacks(svc: Service) -> None:
    admin = await svc.admin_headers()
    made = await svc.client.post(
        ROLES,
        json={"name": "rolemgr", "permissions": ["roles:write", "models:read"]},
        headers=admin,
    )
    assert made.status_code == 201
    username, password = await svc.create_user("rolemgr")
    mgr = bearer(await svc.token(username, password))
    problem(
        await svc.client.post(
            ROLES, json={"name": "sneaky", "permissions": ["users:write"]}, headers=mgr
        ),
        403,
        "privilege_escalation",
    )
    ok = await svc.client.post(
        ROLES, json={"name": "reader", "permissions": ["models:read"]}, headers=mgr
    )
    assert ok.status_code == 201, ok.text
    problem(
        await svc.client.patch(
            f"{ROLES}/reader", json={"permissions": ["models:read", "audit:read"]}, headers=mgr
        ),
        403,
        "privilege_escalation",
    )
    audit = await svc.client.post(
        ROLES, json={"name": "auditor", "permissions": ["audit:read"]}, headers=admin
    )
    assert audit.status_code == 201
    problem(
        await svc.client.patch(f"{ROLES}/auditor", json={"permissions": []}, headers=mgr),
        403,
        "privilege_escalation",
    )


async def test_changing_a_custom_role_cannot_remove_the_last_admin(svc: Service) -> None:
    admin = await svc.admin_headers()
    full = await svc.client.post(
        ROLES,
        json={"name": "root", "permissions": ["users:write", "roles:write", "users:read"]},
        headers=admin,
    )
    assert full.status_code == 201
    me = (await svc.client.get("/api/v1/users/me", headers=admin)).json()["id"]
    moved = await svc.client.patch(
        f"/api/v1/admin/users/{me}", json={"roles": ["root"]}, headers=admin
    )
    assert moved.status_code == 200, moved.text
    admin = await svc.admin_headers()
    problem(
        await svc.client.patch(
            f"{ROLES}/root", json={"permissions": ["users:read"]}, headers=admin
        ),
        409,
        "last_admin",
    )


async def test_role_events_are_audited(svc: Service) -> None:
    from sqlalchemy import select

    from mlgate.audit.tables import AuditEventRow

    admin = await svc.admin_headers()
    await svc.client.post(
        ROLES, json={"name": "temp", "permissions": ["models:read"]}, headers=admin
    )
    await svc.client.patch(f"{ROLES}/temp", json={"description": "d"}, headers=admin)
    await svc.client.delete(f"{ROLES}/temp", headers=admin)
    async with svc.ctx.db.session() as session:
        stmt = select(AuditEventRow.action).where(AuditEventRow.resource == "role:temp")
        actions = sorted((await session.execute(stmt)).scalars())
    assert actions == ["admin.role.create", "admin.role.delete", "admin.role.update"]
