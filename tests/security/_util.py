"""Helpers shared by the security tests: problem checks and OpenAPI walking."""

from __future__ import annotations

import os
import re
from typing import Any

import httpx
from hypothesis import HealthCheck, settings

# Text that must never reach a client: tracebacks, SQL, driver and ORM internals.
LEAK_RE = re.compile(
    r"Traceback \(most recent call last\)|File \"/|sqlalchemy|sqlite3?\.|asyncpg|psycopg"
    r"|\bSELECT\b.+\bFROM\b|\bINSERT INTO\b|\bUPDATE\b.+\bSET\b|\bDELETE FROM\b"
    r"|IntegrityError|OperationalError|ProgrammingError|\bat 0x[0-9a-f]+",
    re.IGNORECASE,
)
PATH_PARAM_RE = re.compile(r"\{[^}]+\}")
METHODS = ("get", "post", "put", "patch", "delete")


def fuzz_settings(default_examples: int) -> Any:
    """Hypothesis settings of the API fuzzers: MLGATE_FUZZ_EXAMPLES examples (small by
    default; `make fuzz` sets 500), no deadline, no example database."""
    return settings(
        max_examples=int(os.environ.get("MLGATE_FUZZ_EXAMPLES", str(default_examples))),
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )


def assert_problem(response: httpx.Response, status: int | None = None) -> dict[str, Any]:
    """An RFC 9457 answer as DESIGN § Errors promises it, with nothing internal leaking."""
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text[:500])
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith("application/problem+json"), (content_type, response.text[:300])
    body = response.json()
    assert isinstance(body, dict), body
    for key in ("type", "title", "status", "detail", "code", "request_id"):
        assert key in body, (key, body)
    assert body["status"] == response.status_code, body
    assert body["type"] == f"urn:mlgate:problem:{body['code']}", body
    assert body["request_id"] == response.headers.get("x-request-id"), body
    assert_no_leak(response)
    return body


def assert_no_leak(response: httpx.Response) -> None:
    match = LEAK_RE.search(response.text)
    assert match is None, f"internal detail {match.group(0)!r} leaked: {response.text[:500]}"


async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    spec: dict[str, Any] = response.json()
    return spec


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) for every operation of the schema."""
    out = []
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                out.append((path, method, item[method]))
    return out


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow local `$ref`s (and a single-branch allOf) to the schema they name."""
    seen = 0
    while True:
        if "$ref" in schema:
            ref = schema["$ref"]
            assert ref.startswith("#/"), ref
            node: Any = spec
            for part in ref[2:].split("/"):
                node = node[part]
            schema = node
        elif "allOf" in schema and len(schema["allOf"]) == 1:
            schema = schema["allOf"][0]
        else:
            return schema
        seen += 1
        assert seen < 50, "reference cycle"


def json_body_schema(spec: dict[str, Any], op: dict[str, Any]) -> dict[str, Any] | None:
    content = op.get("requestBody", {}).get("content", {})
    media = content.get("application/json")
    if media is None or "schema" not in media:
        return None
    return resolve(spec, media["schema"])


def fill_path(path: str, value: str) -> str:
    return PATH_PARAM_RE.sub(value, path)


def has_path(spec: dict[str, Any], path: str, method: str | None = None) -> bool:
    item = spec.get("paths", {}).get(path)
    if item is None:
        return False
    return method is None or method.lower() in item
