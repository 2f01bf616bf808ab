"""Who is calling: the result of authentication, placed in the ASGI scope by middleware."""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mlgate.errors import MlgateError

PRINCIPAL_KEY = "mlgate.principal"
AUTH_ERROR_KEY = "mlgate.auth_error"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user through a token, or a user's API key.

    `permissions` is already the effective set: the token's or key's scope intersected
    with the owner's current permissions.
    """

    user_id: uuid.UUID
    username: str
    kind: Literal["user", "api_key"]
    roles: frozenset[str]
    permissions: frozenset[str]
    session_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    token_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def has(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def actor_type(self) -> Literal["user", "api_key"]:
        return self.kind


def principal_from_scope(scope: MutableMapping[str, Any]) -> Principal | None:
    value = scope.get(PRINCIPAL_KEY)
    return value if isinstance(value, Principal) else None


def auth_error_from_scope(scope: MutableMapping[str, Any]) -> MlgateError | None:
    value = scope.get(AUTH_ERROR_KEY)
    return value if isinstance(value, MlgateError) else None
