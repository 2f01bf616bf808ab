"""Permissions are data: a catalogue of `resource:action` names and the built-in roles."""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    MODELS_READ = "models:read"
    MODELS_PREDICT = "models:predict"
    MODELS_WRITE = "models:write"
    USERS_READ = "users:read"
    USERS_WRITE = "users:write"
    ROLES_WRITE = "roles:write"
    AUDIT_READ = "audit:read"
    APIKEYS_WRITE = "apikeys:write"
    METRICS_READ = "metrics:read"


ALL_PERMISSIONS: frozenset[str] = frozenset(p.value for p in Permission)

GUEST, USER, ADMIN = "guest", "user", "admin"

BUILTIN_ROLES: dict[str, tuple[str, frozenset[str]]] = {
    GUEST: (
        "Anonymous-grade access: read and predict on models that admit guests",
        frozenset({Permission.MODELS_READ, Permission.MODELS_PREDICT}),
    ),
    USER: (
        "Standard user: read and predict on models that admit users, own API keys",
        frozenset({Permission.MODELS_READ, Permission.MODELS_PREDICT, Permission.APIKEYS_WRITE}),
    ),
    ADMIN: ("Administrator: every permission", ALL_PERMISSIONS),
}

# The last active holder of both may not be removed: without them nobody can repair access.
ADMIN_CORE: frozenset[str] = frozenset({Permission.USERS_WRITE, Permission.ROLES_WRITE})


def parse_scope(scope: str | None) -> frozenset[str]:
    """Space-separated permission names, as OAuth2 writes scopes."""
    return frozenset(part for part in (scope or "").split() if part)


def format_scope(permissions: frozenset[str] | set[str]) -> str:
    return " ".join(sorted(permissions))
