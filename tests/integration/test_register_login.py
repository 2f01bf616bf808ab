"""Registration, the password grant and /users/me over HTTP."""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import ADMIN_PASSWORD, USER_PASSWORD, Service, bearer

pytestmark = pytest.mark.asyncio


def _problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == f"urn:mlgate:problem:{code}"
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_register_login_and_me(svc: Service) -> None:
    created = await svc.register("alice")
    assert created["username"] == "alice"
    assert created["roles"] == ["user"]
    assert "password" not in json.dumps(created)
    assert "hash" not in json.dumps(created)
    tokens = await svc.login("alice", USER_PASSWORD)
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    assert len(tokens["refresh_token"]) >= 43
    assert tokens["refresh_token"].count(".") != 2
    me = await svc.client.get("/api/v1/users/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    body = me.json()
    assert body["username"] == "alice"
    assert body["email"] == "alice@example.com"
    assert body["roles"] == ["user"]
    assert body["permissions"] == ["apikeys:write", "models:predict", "models:read"]
    assert body["is_active"] is True
    assert body["last_login_at"] is not None
    assert set(body) == {
        "id",
        "username",
        "email",
        "roles",
        "permissions",
        "is_active",
        "created_at",
        "last_login_at",
    }


async def test_login_by_email_any_case(svc: Service) -> None:
    await svc.register("bob")
    tokens = await svc.login("BOB@Example.com", USER_PASSWORD)
    assert tokens["access_token"]


async def test_token_answer_headers_and_claims(svc: Service) -> None:
    await svc.register("carol")
    response = await svc.client.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": "carol", "password": USER_PASSWORD},
    )
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    token = response.json()["access_token"]
    header_b64, payload_b64, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    header = json.loads(base64.urlsafe_b64decode(pad(header_b64)))
    payload = json.loads(base64.urlsafe_b64decode(pad(payload_b64)))
    assert header["alg"] == "EdDSA"
    assert header["typ"] == "at+jwt"
    assert header["kid"]
    assert {"iss", "aud", "sub", "iat", "exp", "jti", "sid", "scope"} <= set(payload)
    assert payload["iss"] == "mlgate"
    assert payload["aud"] == "mlgate-api"
    jwks = (await svc.client.get("/.well-known/jwks.json")).json()
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}
    assert all("d" not in k for k in jwks["keys"])  # never a private part


async def test_duplicate_username_other_case_and_email(svc: Service) -> None:
    await svc.register("dave")
    clash = await svc.client.post(
        "/api/v1/auth/register",
        json={"username": "DAVE", "email": "other@example.com", "password": USER_PASSWORD},
    )
    _problem(clash, 409, "username_taken")
    clash = await svc.client.post(
        "/api/v1/auth/register",
        json={"username": "dave2", "email": "Dave@EXAMPLE.com", "password": USER_PASSWORD},
    )
    _problem(clash, 409, "email_taken")


@pytest.mark.parametrize(
    ("field", "value"),
    [("roles", ["admin"]), ("is_active", False), ("permissions", ["users:write"])],
)
async def test_mass_assignment_refused(svc: Service, field: str, value: object) -> None:
    body = {"username": "eve", "email": "eve@example.com", "password": USER_PASSWORD, field: value}
    response = await svc.client.post("/api/v1/auth/register", json=body)
    problem = _problem(response, 422, "validation_error")
    assert any(field in err["loc"] for err in problem["errors"])


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "at least 12"),
        ("x" * 129, "at most 128"),
        ("password1234", "common"),
        ("frankfrankfrank-is-me", "username"),
    ],
)
async def test_weak_passwords_refused_with_reason(svc: Service, password: str, reason: str) -> None:
    response = await svc.client.post(
        "/api/v1/auth/register",
        json={"username": "frankfrankfrank", "email": "f@example.com", "password": password},
    )
    problem = _problem(response, 422, "weak_password")
    assert reason in problem["detail"].lower()


@pytest.mark.parametrize("username", ["ab", "x" * 33, "has space", "semi;colon", "ünï"])
async def test_bad_usernames(svc: Service, username: str) -> None:
    response = await svc.client.post(
        "/api/v1/auth/register",
        json={"username": username, "email": "g@example.com", "password": USER_PASSWORD},
    )
    _problem(response, 422, "validation_error")


async def test_registration_closed(make_service) -> None:
    async with make_service(registration="closed") as svc:
        response = await svc.client.post(
            "/api/v1/auth/register",
            json={"username": "henry", "email": "h@example.com", "password": USER_PASSWORD},
        )
        _problem(response, 403, "registration_closed")


async def test_unknown_user_and_wrong_password_same_answer(svc: Service) -> None:
    await svc.register("ivan")
    answers = []
    for username in ("ivan", "nobody-here"):
        response = await svc.client.post(
            "/api/v1/auth/token",
            data={"grant_type": "password", "username": username, "password": "wrong " * 3},
        )
        answers.append((response.status_code, response.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 400
    assert answers[0][1]["error"] == "invalid_grant"


async def test_token_endpoint_request_errors(svc: Service) -> None:
    url = "/api/v1/auth/token"
    missing = await svc.client.post(url, data={"grant_type": "password", "username": "x"})
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"
    repeated = await svc.client.post(
        url,
        content="grant_type=password&username=a&username=b&password=c",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert repeated.status_code == 400
    assert repeated.json()["error"] == "invalid_request"
    unsupported = await svc.client.post(url, data={"grant_type": "client_credentials"})
    assert unsupported.json()["error"] == "unsupported_grant_type"
    as_json = await svc.client.post(url, json={"grant_type": "password"})
    assert as_json.status_code == 400
    assert as_json.json()["error"] == "invalid_request"
    # Unknown parameters are ignored (RFC 6749 §3.2); over-long passwords are just bad.
    ok = await svc.client.post(
        url,
        data={
            "grant_type": "password",
            "username": "admin",
            "password": ADMIN_PASSWORD,
            "client_id": "swagger",
            "extra": "1",
        },
    )
    assert ok.status_code == 200
    long = await svc.client.post(
        url, data={"grant_type": "password", "username": "admin", "password": "p" * 10000}
    )
    assert long.status_code == 400
    assert long.json()["error"] == "invalid_grant"


async def test_scope_requests(svc: Service) -> None:
    await svc.register("judy")
    empty = await svc.login("judy", USER_PASSWORD, scope="")
    assert set(empty["scope"].split()) == {"apikeys:write", "models:predict", "models:read"}
    narrow = await svc.login("judy", USER_PASSWORD, scope="models:read")
    assert narrow["scope"] == "models:read"
    me = await svc.client.get("/api/v1/users/me", headers=bearer(narrow["access_token"]))
    assert me.status_code == 200
    wide = await svc.client.post(
        "/api/v1/auth/token",
        data={
            "grant_type": "password",
            "username": "judy",
            "password": USER_PASSWORD,
            "scope": "users:write",
        },
    )
    assert wide.status_code == 400
    assert wide.json()["error"] == "invalid_scope"


async def test_disabled_account_with_right_password(svc: Service) -> None:
    await svc.register("kate")
    async with svc.ctx.db.session() as session:
        from mlgate.users import repository

        user = await repository.find_by_login(session, "kate")
        assert user is not None
        user.is_active = False
    response = await svc.client.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": "kate", "password": USER_PASSWORD},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "disabled" in response.json()["error_description"]
