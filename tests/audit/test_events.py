"""Each act leaves exactly one event with the right actor, resource, outcome, ip and
request id; refusals by guards are `access.denied`; anonymous 401s are aggregated."""

from __future__ import annotations

import uuid

import pytest

from mlgate.audit.events import Action
from tests.audit.util import events, rid
from tests.conftest import USER_PASSWORD, Service, bearer

NEW_PASSWORD = "another entirely different passphrase"


def token_form(**data: str) -> dict[str, str]:
    return data


async def test_each_auth_act_is_one_event(svc: Service) -> None:
    c = svc.client
    name = f"alice{uuid.uuid4().hex[:6]}"
    body = {"username": name, "email": f"{name}@example.com", "password": USER_PASSWORD}
    r = await c.post("/api/v1/auth/register", json=body, headers=rid("r-register"))
    assert r.status_code == 201
    user_id = r.json()["id"]

    r = await c.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": name, "password": "wrong password here"},
        headers=rid("r-fail"),
    )
    assert r.status_code == 400
    r = await c.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": name, "password": USER_PASSWORD},
        headers=rid("r-login"),
    )
    assert r.status_code == 200
    first = r.json()
    r = await c.post(
        "/api/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        headers=rid("r-refresh"),
    )
    assert r.status_code == 200
    second = r.json()
    r = await c.post(
        "/api/v1/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        headers=rid("r-reuse"),
    )
    assert r.status_code == 400

    third = await svc.login(name, USER_PASSWORD)
    headers = bearer(third["access_token"])
    r = await c.post(
        "/api/v1/users/me/password",
        json={"current_password": USER_PASSWORD, "new_password": NEW_PASSWORD},
        headers={**headers, **rid("r-password")},
    )
    assert r.status_code == 204
    r = await c.post("/api/v1/auth/logout", headers={**headers, **rid("r-logout")})
    assert r.status_code == 204
    del second

    expected = [
        (Action.REGISTER, "r-register", "success", 201),
        (Action.LOGIN_FAILURE, "r-fail", "failure", 400),
        (Action.LOGIN_SUCCESS, "r-login", "success", 200),
        (Action.TOKEN_REFRESH, "r-refresh", "success", 200),
        (Action.TOKEN_REUSE, "r-reuse", "denied", 400),
        (Action.PASSWORD_CHANGE, "r-password", "success", 204),
        (Action.LOGOUT, "r-logout", "success", 204),
    ]
    for action, request_id, outcome, status in expected:
        found = await events(svc, action, request_id=request_id)
        assert len(found) == 1, (action, [e.request_id for e in await events(svc, action)])
        event = found[0]
        assert str(event.actor_id) == user_id, action
        assert (event.outcome, event.status) == (outcome, status), action
        assert event.ip == "127.0.0.1", action
        assert event.user_agent == f"tests/{request_id}", action
        assert (event.resource or "").split(":")[0] in {"user", "session"}, action
        if action != Action.TOKEN_REUSE:
            assert event.actor == name, action
        # Nothing else carries this request id: one act, one event.
        assert len(await events(svc, request_id=request_id)) == 1, action
    failure = (await events(svc, Action.LOGIN_FAILURE, request_id="r-fail"))[0]
    assert failure.details == {"reason": "bad_credentials"}
    assert failure.resource == f"user:{user_id}"


async def test_forbidden_is_access_denied_with_actor(svc: Service) -> None:
    username, password = await svc.create_user("user")
    headers = bearer(await svc.token(username, password))
    r = await svc.client.get("/api/v1/admin/audit", headers={**headers, **rid("r-403")})
    assert r.status_code == 403
    found = await events(svc, Action.ACCESS_DENIED, request_id="r-403")
    assert len(found) == 1
    event = found[0]
    assert event.actor == username
    assert event.actor_type == "user"
    assert event.outcome == "denied"
    assert event.status == 403
    assert event.resource == "route:GET /api/v1/admin/audit"
    assert event.details["permission"] == "audit:read"
    assert event.ip == "127.0.0.1"


async def test_refusal_inside_a_route_is_access_denied(svc: Service) -> None:
    """A 403 decided by the route (an API key may not log out) is recorded too."""
    headers = await svc.user_headers()
    r = await svc.client.post("/api/v1/users/me/api-keys", json={"name": "k"}, headers=headers)
    if r.status_code == 404:
        pytest.skip("API keys are not mounted in this build")
    key = r.json()["key"]
    r = await svc.client.post(
        "/api/v1/auth/logout", headers={"X-API-Key": key, **rid("r-key-logout")}
    )
    assert r.status_code == 403
    found = await events(svc, Action.ACCESS_DENIED, request_id="r-key-logout")
    assert len(found) == 1
    assert found[0].actor_type == "api_key"
    assert key not in str(found[0].details)


async def test_anonymous_401s_aggregate_per_ip_and_minute(svc: Service) -> None:
    for i in range(4):
        r = await svc.client.get("/api/v1/users/me", headers=rid(f"r-anon-{i}"))
        assert r.status_code == 401
    r = await svc.client.get(
        "/api/v1/users/me", headers={"Authorization": "Bearer not-a-token", **rid("r-anon-bad")}
    )
    assert r.status_code == 401
    found = await events(svc, Action.ACCESS_DENIED)
    assert len(found) == 1, [(e.request_id, e.details) for e in found]
    assert found[0].details["count"] == 5
    assert found[0].actor_type == "anonymous"
    assert found[0].status == 401
    assert found[0].request_id == "r-anon-0"


async def test_public_routes_emit_nothing(svc: Service) -> None:
    await svc.client.get("/healthz")
    await svc.client.get("/.well-known/jwks.json")
    assert await events(svc, Action.ACCESS_DENIED) == []
