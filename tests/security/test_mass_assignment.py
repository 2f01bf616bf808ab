"""Mass assignment (OWASP API3 / ASVS V8.2): every JSON write body the OpenAPI declares
refuses fields it does not declare with 422, naming the field; the form-encoded token
endpoint ignores unknown parameters, as RFC 6749 §3.2 requires, and grants nothing
for them. Driven by the app's OpenAPI, so routes added later are covered too."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.conftest import USER_PASSWORD, Service, bearer
from tests.security._util import assert_problem, json_body_schema, openapi, operations, resolve

pytestmark = pytest.mark.asyncio
# Fields an attacker adds hoping the server binds them; only undeclared ones are sent.
SMUGGLED: dict[str, Any] = {
    "is_admin": True,
    "is_superuser": True,
    "role": "admin",
    "roles": ["admin"],
    "permissions": ["users:write", "roles:write"],
    "scopes": ["users:write"],
    "is_active": True,
    "id": str(uuid.uuid4()),
    "user_id": str(uuid.uuid4()),
    "owner_id": str(uuid.uuid4()),
    "password_hash": "$argon2id$v=19$m=8,t=1,p=1$AAAA$AAAA",
    "created_by": "admin",
    "daily_quota": None,
    "mlgate_unknown_field": 1,
}


def minimal(spec: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> Any:
    """A small value that satisfies the common constraints of `schema`."""
    schema = resolve(spec, schema)
    if depth > 6:
        return None
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [b for b in schema[key] if resolve(spec, b).get("type") != "null"]
            return minimal(spec, branches[0] if branches else schema[key][0], depth + 1)
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {
            name: minimal(spec, props[name], depth + 1)
            for name in schema.get("required", [])
            if name in props
        }
    if kind == "array":
        count = schema.get("minItems", 0)
        return [minimal(spec, schema.get("items", {}), depth + 1) for _ in range(count)]
    if kind == "integer":
        return max(int(schema.get("minimum", 1)), 1)
    if kind == "number":
        return float(max(schema.get("minimum", 1), 1))
    if kind == "boolean":
        return False
    if schema.get("format") == "email":
        return f"mass{uuid.uuid4().hex[:6]}@example.com"
    if schema.get("format") == "uuid":
        return str(uuid.uuid4())
    return "mass-" + uuid.uuid4().hex[:10]


def path_value(spec: dict[str, Any], op: dict[str, Any], name: str) -> str:
    for param in op.get("parameters", []):
        param = resolve(spec, param)
        if param.get("in") == "path" and param.get("name") == name:
            schema = resolve(spec, param.get("schema", {}))
            kinds = {schema.get("type")} | {b.get("type") for b in schema.get("anyOf", [])}
            if "integer" in kinds:
                return "1"
            if schema.get("format") == "uuid":
                return str(uuid.uuid4())
    return "iris"


def concrete(spec: dict[str, Any], path: str, op: dict[str, Any]) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: path_value(spec, op, m.group(1)), path)


def write_operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    found = []
    for path, method, op in operations(spec):
        if method not in ("post", "put", "patch"):
            continue
        schema = json_body_schema(spec, op)
        if schema is None or "properties" not in schema:
            # No declared JSON object (form bodies, or a protocol body kept opaque).
            continue
        found.append((path, method, op, schema))
    return found


async def test_write_schemas_declare_no_additional_properties(svc: Service) -> None:
    spec = await openapi(svc.client)
    writes = write_operations(spec)
    assert any(p == "/api/v1/auth/register" for p, *_ in writes), "the sweep found nothing"
    loose = [
        f"{method.upper()} {path}"
        for path, method, _, schema in writes
        if schema.get("additionalProperties") is not False
    ]
    assert not loose, f"write schemas that accept unknown fields: {loose}"


async def test_every_json_write_refuses_unknown_fields(svc: Service) -> None:
    spec = await openapi(svc.client)
    admin = await svc.admin_headers()
    failures: list[str] = []
    checked = 0
    for path, method, op, schema in write_operations(spec):
        declared = set(schema.get("properties", {}))
        extras = {k: v for k, v in SMUGGLED.items() if k not in declared}
        body = minimal(spec, schema)
        assert isinstance(body, dict)
        url = concrete(spec, path, op)
        response = await svc.client.request(method.upper(), url, json=body | extras, headers=admin)
        label = f"{method.upper()} {path}"
        if response.status_code != 422:
            failures.append(f"{label}: {response.status_code} {response.text[:200]}")
            continue
        problem = assert_problem(response, 422)
        named = {str(err["loc"][-1]) for err in problem.get("errors", []) if err.get("loc")}
        if not set(extras) <= named:
            failures.append(f"{label}: 422 does not name {sorted(set(extras) - named)}")
        checked += 1
    assert not failures, "\n".join(failures)
    assert checked >= 3


async def test_register_and_me_cannot_bind_roles_or_flags(svc: Service) -> None:
    response = await svc.client.post(
        "/api/v1/auth/register",
        json={
            "username": "mallory",
            "email": "mallory@example.com",
            "password": USER_PASSWORD,
            "roles": ["admin"],
        },
    )
    assert_problem(response, 422)
    # Nothing was created by the refused request.
    again = await svc.client.post(
        "/api/v1/auth/register",
        json={"username": "mallory", "email": "mallory@example.com", "password": USER_PASSWORD},
    )
    assert again.status_code == 201, again.text
    assert again.json()["roles"] == ["user"]
    token = await svc.token("mallory", USER_PASSWORD)
    for field, value in (("roles", ["admin"]), ("is_active", False), ("permissions", ["x"])):
        response = await svc.client.patch(
            "/api/v1/users/me", json={field: value}, headers=bearer(token)
        )
        assert_problem(response, 422)
    me = await svc.client.get("/api/v1/users/me", headers=bearer(token))
    assert me.json()["roles"] == ["user"]
    assert me.json()["is_active"] is True


async def test_token_endpoint_ignores_unknown_parameters(svc: Service) -> None:
    await svc.register("trent")
    response = await svc.client.post(
        "/api/v1/auth/token",
        data={
            "grant_type": "password",
            "username": "trent",
            "password": USER_PASSWORD,
            "is_admin": "true",
            "role": "admin",
            "client_secret_extra": "x",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["scope"].split()) == {"apikeys:write", "models:predict", "models:read"}
    refreshed = await svc.client.post(
        "/api/v1/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "roles": "admin",
            "unknown": "1",
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    assert "users:write" not in refreshed.json()["scope"]
    me = await svc.client.get("/api/v1/users/me", headers=bearer(refreshed.json()["access_token"]))
    assert me.json()["roles"] == ["user"]
