"""Admin user management over HTTP, and the `mlgate users` commands."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from mlgate.cli import app as cli_app
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, TEST_KEK, USER_PASSWORD, Service, bearer

pytestmark = pytest.mark.asyncio
USERS = "/api/v1/admin/users"
NEW_PASSWORD = "another entirely different passphrase"


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


async def user_id(svc: Service, headers: dict[str, str]) -> str:
    return str((await svc.client.get("/api/v1/users/me", headers=headers)).json()["id"])


async def admin_id(svc: Service, admin: dict[str, str]) -> str:
    return await user_id(svc, admin)


async def test_create_get_and_list_with_filters_and_cursor(svc: Service) -> None:
    admin = await svc.admin_headers()
    made = []
    for i in range(5):
        response = await svc.client.post(
            USERS,
            json={
                "username": f"Pager{i}",
                "email": f"pager{i}@example.com",
                "password": USER_PASSWORD,
                "roles": ["guest"] if i % 2 else ["user"],
                "is_active": i != 4,
            },
            headers=admin,
        )
        assert response.status_code == 201, response.text
        made.append(response.json())
    assert made[1]["roles"] == ["guest"]
    assert made[4]["is_active"] is False
    got = await svc.client.get(f"{USERS}/{made[0]['id']}", headers=admin)
    assert got.json()["username"] == "Pager0"
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"q": "PAGER", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await svc.client.get(USERS, params=params, headers=admin)).json()
        seen += [item["username"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"Pager{i}" for i in range(5)]
    assert pages == 3
    guests = (await svc.client.get(USERS, params={"role": "guest"}, headers=admin)).json()
    assert sorted(u["username"] for u in guests["items"]) == ["Pager1", "Pager3"]
    inactive = (await svc.client.get(USERS, params={"is_active": False}, headers=admin)).json()
    assert [u["username"] for u in inactive["items"]] == ["Pager4"]
    problem(
        await svc.client.get(USERS, params={"limit": 201}, headers=admin), 422, "validation_error"
    )
    problem(
        await svc.client.get(USERS, params={"cursor": "garbage!"}, headers=admin),
        422,
        "validation_error",
    )


async def test_create_refuses_unknown_roles_duplicates_and_weak_passwords(svc: Service) -> None:
    admin = await svc.admin_headers()
    body = {"username": "dup", "email": "dup@example.com", "password": USER_PASSWORD}
    problem(
        await svc.client.post(USERS, json={**body, "roles": ["wizard"]}, headers=admin),
        422,
        "validation_error",
    )
    assert (await svc.client.post(USERS, json=body, headers=admin)).status_code == 201
    problem(
        await svc.client.post(USERS, json={**body, "email": "o@example.com"}, headers=admin),
        409,
        "username_taken",
    )
    problem(
        await svc.client.post(
            USERS,
            json={"username": "w", "email": "w@example.com", "password": "short"},
            headers=admin,
        ),
        422,
        "validation_error",
    )
    problem(
        await svc.client.post(
            USERS,
            json={"username": "weak", "email": "w@example.com", "password": "password"},
            headers=admin,
        ),
        422,
        "weak_password",
    )
    problem(
        await svc.client.post(USERS, json={**body, "is_admin": True}, headers=admin),
        422,
        "validation_error",
    )


async def test_patch_roles_email_quota_and_unknown_role(svc: Service) -> None:
    admin = await svc.admin_headers()
    username, _ = await svc.create_user("user")
    uid = (await svc.client.get(USERS, params={"q": username}, headers=admin)).json()["items"][0][
        "id"
    ]
    response = await svc.client.patch(
        f"{USERS}/{uid}",
        json={"roles": ["guest", "user"], "email": "New@Example.com", "daily_quota": 7},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["roles"] == ["guest", "user"]
    assert body["email"] == "New@example.com"
    assert body["daily_quota"] == 7
    cleared = await svc.client.patch(f"{USERS}/{uid}", json={"daily_quota": None}, headers=admin)
    assert cleared.json()["daily_quota"] is None
    problem(
        await svc.client.patch(f"{USERS}/{uid}", json={"roles": ["nope"]}, headers=admin),
        422,
        "validation_error",
    )
    problem(
        await svc.client.patch(
            f"{USERS}/{uid}", json={"email": "admin@localhost.localdomain"}, headers=admin
        ),
        409,
        "email_taken",
    )
    problem(
        await svc.client.patch(f"{USERS}/{uid}", json={"username": "x"}, headers=admin),
        422,
        "validation_error",
    )
    problem(await svc.client.get(f"{USERS}/{uuid.uuid4()}", headers=admin), 404, "not_found")


async def test_disable_kills_live_tokens_and_refresh(svc: Service) -> None:
    username, password = await svc.create_user("user")
    tokens = await svc.login(username, password)
    user = bearer(tokens["access_token"])
    uid = await user_id(svc, user)
    admin = await svc.admin_headers()
    assert (
        await svc.client.patch(f"{USERS}/{uid}", json={"is_active": False}, headers=admin)
    ).status_code == 200
    problem(await svc.client.get("/api/v1/users/me", headers=user), 401, "account_disabled")
    refresh = await svc.client.post(
        "/api/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert refresh.status_code == 400
    assert refresh.json()["error"] == "invalid_grant"
    await svc.client.patch(f"{USERS}/{uid}", json={"is_active": True}, headers=admin)
    # Sessions of a disabled user stay ended after it is enabled again.
    problem(await svc.client.get("/api/v1/users/me", headers=user), 401, "token_revoked")
    assert await svc.token(username, password)


async def test_force_logout_ends_every_session(svc: Service) -> None:
    username, password = await svc.create_user("user")
    first = bearer(await svc.token(username, password))
    second = bearer(await svc.token(username, password))
    uid = await user_id(svc, first)
    admin = await svc.admin_headers()
    assert (await svc.client.delete(f"{USERS}/{uid}/sessions", headers=admin)).status_code == 204
    for headers in (first, second):
        problem(await svc.client.get("/api/v1/users/me", headers=headers), 401, "token_revoked")


async def test_admin_sets_password_policy_applies_and_sessions_end(svc: Service) -> None:
    username, password = await svc.create_user("user")
    user = bearer(await svc.token(username, password))
    uid = await user_id(svc, user)
    admin = await svc.admin_headers()
    url = f"{USERS}/{uid}/password"
    problem(
        await svc.client.post(url, json={"password": "password"}, headers=admin),
        422,
        "weak_password",
    )
    assert (
        await svc.client.post(url, json={"password": NEW_PASSWORD}, headers=admin)
    ).status_code == 204
    problem(await svc.client.get("/api/v1/users/me", headers=user), 401, "token_revoked")
    old = await svc.client.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": username, "password": password},
    )
    assert old.status_code == 400
    assert await svc.token(username, NEW_PASSWORD)


async def test_delete_tombstones_frees_name_and_kills_credentials(svc: Service) -> None:
    username, password = await svc.create_user("user", username="leaver")
    user = bearer(await svc.token(username, password))
    key = (
        await svc.client.post("/api/v1/users/me/api-keys", json={"name": "k"}, headers=user)
    ).json()["key"]
    uid = await user_id(svc, user)
    admin = await svc.admin_headers()
    assert (await svc.client.delete(f"{USERS}/{uid}", headers=admin)).status_code == 204
    problem(await svc.client.get(f"{USERS}/{uid}", headers=admin), 404, "not_found")
    problem(await svc.client.delete(f"{USERS}/{uid}", headers=admin), 404, "not_found")
    problem(await svc.client.get("/api/v1/users/me", headers=user), 401, "token_invalid")
    assert (await svc.client.get("/api/v1/users/me", headers=bearer(key))).status_code == 401
    listed = (await svc.client.get(USERS, params={"q": "leaver"}, headers=admin)).json()
    assert listed["items"] == []
    again = await svc.client.post(
        USERS,
        json={"username": "leaver", "email": "leaver@example.com", "password": USER_PASSWORD},
        headers=admin,
    )
    assert again.status_code == 201, again.text
    assert again.json()["id"] != uid


async def test_last_admin_cannot_be_demoted_disabled_or_deleted(svc: Service) -> None:
    admin = await svc.admin_headers()
    me = await admin_id(svc, admin)
    for call in (
        svc.client.patch(f"{USERS}/{me}", json={"roles": ["user"]}, headers=admin),
        svc.client.patch(f"{USERS}/{me}", json={"is_active": False}, headers=admin),
        svc.client.delete(f"{USERS}/{me}", headers=admin),
    ):
        problem(await call, 409, "last_admin")
    assert (await svc.client.get("/api/v1/users/me", headers=admin)).status_code == 200
    # With a second admin, the first may step down.
    other, password = await svc.create_user("admin")
    demote = await svc.client.patch(f"{USERS}/{me}", json={"roles": ["user"]}, headers=admin)
    assert demote.status_code == 200, demote.text
    other_headers = bearer(await svc.token(other, password))
    other_id = await user_id(svc, other_headers)
    problem(
        await svc.client.delete(f"{USERS}/{other_id}", headers=other_headers), 409, "last_admin"
    )


async def test_privilege_escalation_is_refused(svc: Service) -> None:
    admin = await svc.admin_headers()
    created = await svc.client.post(
        "/api/v1/admin/roles",
        json={
            "name": "usermgr",
            "permissions": ["users:read", "users:write", "models:read", "models:predict"],
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    mgr_name, password = await svc.create_user("usermgr")
    mgr = bearer(await svc.token(mgr_name, password))
    victim, _ = await svc.create_user("guest")
    victim_id = (await svc.client.get(USERS, params={"q": victim}, headers=mgr)).json()["items"][0][
        "id"
    ]
    for roles in (["admin"], ["user"]):
        problem(
            await svc.client.patch(f"{USERS}/{victim_id}", json={"roles": roles}, headers=mgr),
            403,
            "privilege_escalation",
        )
    body = {"username": "made", "email": "made@example.com", "password": USER_PASSWORD}
    problem(
        await svc.client.post(USERS, json={**body, "roles": ["admin"]}, headers=mgr),
        403,
        "privilege_escalation",
    )
    problem(
        await svc.client.patch(
            f"{USERS}/{await user_id(svc, mgr)}", json={"roles": ["admin"]}, headers=mgr
        ),
        403,
        "privilege_escalation",
    )
    # Nor may it take over a more privileged account.
    admin_uid = await admin_id(svc, admin)
    problem(
        await svc.client.post(
            f"{USERS}/{admin_uid}/password", json={"password": NEW_PASSWORD}, headers=mgr
        ),
        403,
        "privilege_escalation",
    )
    problem(
        await svc.client.delete(f"{USERS}/{admin_uid}", headers=mgr), 403, "privilege_escalation"
    )
    assert (await svc.client.get("/api/v1/users/me", headers=admin)).status_code == 200
    ok = await svc.client.patch(f"{USERS}/{victim_id}", json={"is_active": False}, headers=mgr)
    assert ok.status_code == 200, ok.text


async def test_audit_events_are_written_in_the_same_transaction(svc: Service) -> None:
    from sqlalchemy import select

    from mlgate.audit.tables import AuditEventRow

    admin = await svc.admin_headers()
    username, _ = await svc.create_user("user")
    uid = (await svc.client.get(USERS, params={"q": username}, headers=admin)).json()["items"][0][
        "id"
    ]
    await svc.client.patch(f"{USERS}/{uid}", json={"roles": ["guest"]}, headers=admin)
    problem(
        await svc.client.patch(f"{USERS}/{uid}", json={"roles": ["nope"]}, headers=admin),
        422,
        "validation_error",
    )
    await svc.client.delete(f"{USERS}/{uid}", headers=admin)
    async with svc.ctx.db.session() as session:
        rows = (
            await session.execute(
                select(AuditEventRow).where(AuditEventRow.resource == f"user:{uid}")
            )
        ).scalars()
        events = [(r.action, r.actor, r.details) for r in rows]
    actions = [a for a, _, _ in events]
    assert actions.count("admin.user.update") == 1
    assert actions.count("admin.user.delete") == 1
    assert all(actor == ADMIN_USERNAME for _, actor, _ in events)
    assert USER_PASSWORD not in str(events)


# -- CLI --------------------------------------------------------------------------------


def cli_env(svc: Service) -> dict[str, str]:
    env = {
        "MLGATE_DATA_DIR": str(svc.settings.data_dir),
        "MLGATE_KEY_ENCRYPTION_KEY": TEST_KEK,
        "MLGATE_ARGON2_MEMORY_COST": "1024",
        "MLGATE_ARGON2_TIME_COST": "1",
        "MLGATE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MLGATE_DEMO_MODELS": "false",
    }
    if svc.settings.database_url:
        env["MLGATE_DATABASE_URL"] = svc.settings.database_url
    return env


async def cli(svc: Service, *args: str, stdin: str | None = None) -> Any:
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, cli_app, list(args), input=stdin, env=cli_env(svc)
    )


async def eventually_refused(svc: Service, headers: dict[str, str], code: str) -> None:
    """Another process changed the database: this replica must notice within 1 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0
    while True:
        response = await svc.client.get("/api/v1/users/me", headers=headers)
        if response.status_code == 401:
            assert response.json()["code"] == code
            return
        assert loop.time() < deadline, "still accepted after 1 s"
        await asyncio.sleep(0.05)


async def eventually_accepted(svc: Service, headers: dict[str, str]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0
    while True:
        response = await svc.client.get("/api/v1/users/me", headers=headers)
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            return body
        assert loop.time() < deadline, response.text
        await asyncio.sleep(0.05)


async def test_cli_disable_enable_and_set_role(svc: Service) -> None:
    username, password = await svc.create_user("user")
    user = bearer(await svc.token(username, password))
    result = await cli(svc, "users", "disable", username)
    assert result.exit_code == 0, result.output
    await eventually_refused(svc, user, "account_disabled")
    result = await cli(svc, "users", "enable", username)
    assert result.exit_code == 0, result.output
    result = await cli(svc, "users", "set-role", username, "guest", "user")
    assert result.exit_code == 0, result.output
    fresh = bearer(await svc.token(username, password))
    me = await eventually_accepted(svc, fresh)
    assert me["roles"] == ["guest", "user"]
    bad = await cli(svc, "users", "set-role", username, "wizard")
    assert bad.exit_code == 1
    assert "wizard" in bad.output
    assert "Traceback" not in bad.output
    missing = await cli(svc, "users", "disable", "nobody-here")
    assert missing.exit_code == 1
    assert len(missing.output.strip().splitlines()) == 1


async def test_cli_last_admin_guard(svc: Service) -> None:
    result = await cli(svc, "users", "disable", ADMIN_USERNAME)
    assert result.exit_code == 1
    assert "administrator" in result.output
    result = await cli(svc, "users", "set-role", ADMIN_USERNAME, "user")
    assert result.exit_code == 1
    assert (await svc.client.get("/api/v1/users/me", headers=await svc.admin_headers())).is_success


async def test_cli_reset_password_and_revoke_sessions(svc: Service) -> None:
    username, password = await svc.create_user("user")
    user = bearer(await svc.token(username, password))
    weak = await cli(svc, "users", "reset-password", username, "--password-stdin", stdin="short\n")
    assert weak.exit_code == 1
    result = await cli(
        svc, "users", "reset-password", username, "--password-stdin", stdin=NEW_PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    assert NEW_PASSWORD not in result.output
    await eventually_refused(svc, user, "token_revoked")
    again = bearer(await svc.token(username, NEW_PASSWORD))
    result = await cli(svc, "users", "sessions", "revoke", username)
    assert result.exit_code == 0, result.output
    await eventually_refused(svc, again, "token_revoked")


async def test_concurrent_demotions_keep_one_admin(svc: Service) -> None:
    """Two admins demoting each other at once: one demotion wins, the other is 409."""
    import asyncio

    second, password = await svc.create_user("admin")
    first_headers = await svc.admin_headers()
    second_headers = bearer(await svc.token(second, password))
    users = (await svc.client.get("/api/v1/admin/users", headers=first_headers)).json()["items"]
    ids = {u["username"]: u["id"] for u in users}
    answers = await asyncio.gather(
        svc.client.patch(
            f"/api/v1/admin/users/{ids[second]}", json={"roles": ["user"]}, headers=first_headers
        ),
        svc.client.patch(
            f"/api/v1/admin/users/{ids['admin']}", json={"roles": ["user"]}, headers=second_headers
        ),
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses in ([200, 409], [200, 401], [200, 403]), [a.text for a in answers]
    users = (
        await svc.client.get("/api/v1/admin/users?role=admin", headers=first_headers)
    ).json()
    remaining = users.get("items", []) if isinstance(users, dict) else []
    if not remaining:  # the first admin was demoted: ask as the second one
        remaining = (
            await svc.client.get("/api/v1/admin/users?role=admin", headers=second_headers)
        ).json()["items"]
    assert len(remaining) == 1
