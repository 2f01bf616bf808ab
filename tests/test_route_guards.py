"""Every route states exactly one guard, and the guards hold over HTTP:
no credentials -> 401 on every non-public operation; a missing permission -> 403 with an
`insufficient_scope` challenge naming it, for every permission-guarded operation."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from mlgate.app import create_app, iter_api_routes, route_guard
from mlgate.rbac.permissions import BUILTIN_ROLES, GUEST, USER
from tests.conftest import Service, base_settings

# DESIGN.md "Contract details": public routes, and no others.
PUBLIC = {
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/token"),
    ("POST", "/api/v1/auth/revoke"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/openapi.json"),
}
METHODS = ("get", "post", "put", "patch", "delete")


def full_routes(app: FastAPI) -> list[tuple[str, str, str | None, APIRoute]]:
    """(method, full path, guard, route) of every operation, include prefixes applied."""
    found: list[tuple[str, str, str | None, APIRoute]] = []

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                for method in sorted(route.methods or ()):
                    if method != "HEAD":
                        found.append((method, prefix + route.path, route_guard(route), route))
            elif hasattr(route, "original_router"):
                walk(list(route.original_router.routes), prefix + route.include_context.prefix)

    walk(list(app.router.routes), "")
    return found


@pytest.fixture(scope="module")
def offline_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return create_app(base_settings(tmp_path_factory.mktemp("guards"), None), run_bootstrap=False)


def test_every_route_has_exactly_one_guard(offline_app: FastAPI) -> None:
    routes = full_routes(offline_app)
    assert len(routes) > 20
    assert len(iter_api_routes(offline_app)) == len({id(r) for *_, r in routes})
    unguarded = [f"{method} {path}" for method, path, guard, _ in routes if guard is None]
    assert unguarded == [], "routes without exactly one guard"
    public = {(method, path) for method, path, guard, _ in routes if guard == "public"}
    assert public == PUBLIC


def fill(path: str, route: APIRoute) -> str:
    """A concrete URL for a templated path, with plausible values of the declared types."""
    kinds = {field.name: field.field_info.annotation for field in route.dependant.path_params}

    def value(match: re.Match[str]) -> str:
        kind = kinds.get(match.group(1))
        if kind is int:
            return "1"
        if kind is uuid.UUID:
            return str(uuid.uuid4())
        return "iris"

    return re.sub(r"\{([^}:]+)(?::[^}]*)?\}", value, path)


@pytest.mark.asyncio
async def test_openapi_declares_security_on_every_non_public_operation(svc: Service) -> None:
    schema = (await svc.client.get("/openapi.json")).json()
    missing = []
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            public = (method.upper(), path) in PUBLIC
            if public == bool(op.get("security")):
                missing.append(f"{method.upper()} {path}")
    assert missing == [], "OpenAPI security does not match the guards (Swagger would not sign in)"


@pytest.mark.asyncio
async def test_no_credentials_is_401_on_every_non_public_operation(svc: Service) -> None:
    checked = 0
    for method, path, guard, route in full_routes(svc.app):
        if guard == "public":
            continue
        response = await svc.client.request(method, fill(path, route))
        where = f"{method} {path}: {response.status_code} {response.text[:200]}"
        assert response.status_code == 401, where
        assert response.json()["code"] == "not_authenticated", where
        assert response.headers["www-authenticate"] == 'Bearer realm="mlgate"', where
        checked += 1
    assert checked >= 15


@pytest.mark.asyncio
@pytest.mark.parametrize("role", [GUEST, USER])
async def test_missing_permission_is_403_naming_the_scope(svc: Service, role: str) -> None:
    held = BUILTIN_ROLES[role][1]
    headers = await svc.user_headers(role)
    checked: set[str] = set()
    for method, path, guard, route in full_routes(svc.app):
        if guard is None or not guard.startswith("require:"):
            continue
        permission = guard.removeprefix("require:")
        if permission in held:
            continue
        response = await svc.client.request(method, fill(path, route), headers=headers)
        where = f"{role} {method} {path}: {response.status_code} {response.text[:200]}"
        assert response.status_code == 403, where
        assert response.json()["code"] == "permission_denied", where
        challenge = response.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge, where
        assert f'scope="{permission}"' in challenge, where
        checked.add(f"{method} {path}")
    admin_ops = {f"{m} {p}" for m, p, _, _ in full_routes(svc.app) if p.startswith("/api/v1/admin")}
    assert admin_ops
    assert admin_ops <= checked


@pytest.mark.asyncio
async def test_bad_credentials_are_401_with_an_invalid_token_challenge(svc: Service) -> None:
    for headers in (
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"X-API-Key": "mlg_" + "x" * 43},
    ):
        response = await svc.client.get("/api/v1/users/me", headers=headers)
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        # A bad credential on a public route is ignored rather than refused.
        assert (await svc.client.get("/healthz", headers=headers)).status_code == 200
