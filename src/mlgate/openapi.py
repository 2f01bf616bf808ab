"""Error responses declared in OpenAPI so the schema tells the truth."""

from __future__ import annotations

from typing import Any

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _r(description: str) -> dict[str, Any]:
    return {"description": description, "content": PROBLEM}


PUBLIC_RESPONSES: dict[int | str, dict[str, Any]] = {422: _r("Validation error")}
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _r("Invalid request"),
    401: _r("Not authenticated"),
    403: _r("Permission denied"),
    422: _r("Validation error"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _r("Not found")}
CONFLICT: dict[int | str, dict[str, Any]] = {409: _r("Conflict")}


def responses(*groups: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for group in groups:
        out.update(group)
    return out


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code", "request_id"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {}},
                    "msg": {"type": "string"},
                    "pointer": {"type": "string"},
                },
            },
        },
    },
}
