"""API keys: minted by their owner, shown once, stored as a SHA-256 digest.

A key is `mlg_` + 32 random bytes (url-safe base64, 43 characters). Its `prefix` (first
12 characters) is kept in clear so owners can tell keys apart. Its scopes must be a
subset of the minting principal's effective permissions; at use, they are intersected
with the owner's current permissions (see `Authenticator.api_key`).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.audit.events import Action, AuditEvent
from mlgate.auth import repository as auth_repo
from mlgate.auth.authenticate import API_KEY_PREFIX, digest
from mlgate.auth.principal import Principal
from mlgate.auth.service import AuthService
from mlgate.auth.tables import ApiKeyRow
from mlgate.context import RequestMeta
from mlgate.db import utcnow
from mlgate.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from mlgate.rbac.permissions import format_scope, parse_scope

PREFIX_CHARS = 12
MAX_ACTIVE_KEYS = 100

KeyName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class ApiKeyCreateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: KeyName
    scopes: list[str] | None = Field(None, min_length=1, max_length=64)
    expires_in_days: int | None = Field(None, ge=1)


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The key itself. Shown once: store it now.")


def describe(row: ApiKeyRow) -> ApiKeyOut:
    return ApiKeyOut(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=sorted(parse_scope(row.scopes)),
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
    )


def new_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class CreatedKey:
    row: ApiKeyRow
    key: str

    def out(self) -> ApiKeyCreatedOut:
        return ApiKeyCreatedOut(**describe(self.row).model_dump(), key=self.key)


class ApiKeyService:
    def __init__(self, auth: AuthService) -> None:
        self.auth = auth

    async def create(
        self, session: AsyncSession, meta: RequestMeta, principal: Principal, body: ApiKeyCreateIn
    ) -> CreatedKey:
        if principal.kind != "user":
            raise PermissionDenied("An API key cannot mint API keys; sign in as the user")
        scopes = self._scopes(principal, body.scopes)
        max_days = self.auth.settings.api_key_max_days
        days = body.expires_in_days if body.expires_in_days is not None else max_days
        if days > max_days:
            raise ValidationFailed(
                f"An API key lives at most {max_days} days",
                errors=[_err("expires_in_days", f"Must be at most {max_days}")],
            )
        if len(await auth_repo.api_keys_of(session, principal.user_id)) >= MAX_ACTIVE_KEYS:
            raise Conflict(f"At most {MAX_ACTIVE_KEYS} active API keys per user")
        key, now = new_key(), utcnow()
        row = ApiKeyRow(
            id=uuid.uuid4(),
            user_id=principal.user_id,
            name=body.name,
            prefix=key[:PREFIX_CHARS],
            key_hash=digest(key),
            scopes=format_scope(scopes),
            created_at=now,
            expires_at=now + timedelta(days=days),
        )
        session.add(row)
        await session.flush()
        self._record(session, meta, principal, Action.APIKEY_CREATE, row, 201)
        return CreatedKey(row, key)

    async def list_for(self, session: AsyncSession, user_id: uuid.UUID) -> list[ApiKeyOut]:
        """The user's keys that are not revoked (expired ones included). No secrets."""
        return [describe(row) for row in await auth_repo.api_keys_of(session, user_id)]

    async def revoke(
        self,
        session: AsyncSession,
        meta: RequestMeta,
        principal: Principal,
        user_id: uuid.UUID,
        key_id: uuid.UUID,
    ) -> None:
        """Revoke one of `user_id`'s keys. Another user's key is 404, like a missing one."""
        row = await session.get(ApiKeyRow, key_id)
        if row is None or row.user_id != user_id or row.revoked_at is not None:
            raise NotFound("No such API key")
        row.revoked_at = utcnow()
        await self.auth.announce(session, "api_key", row.id)
        self._record(session, meta, principal, Action.APIKEY_REVOKE, row, 204)

    async def revoke_all(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        for key_id in await auth_repo.revoke_api_keys_of(session, user_id, utcnow()):
            await self.auth.announce(session, "api_key", key_id)

    def _scopes(self, principal: Principal, requested: list[str] | None) -> frozenset[str]:
        if requested is None:
            return principal.permissions
        wanted = frozenset(requested)
        beyond = wanted - principal.permissions
        if beyond:
            raise ValidationFailed(
                f"Scopes beyond your permissions: {', '.join(sorted(beyond))}",
                errors=[_err("scopes", f"Not granted to you: '{name}'") for name in sorted(beyond)],
            )
        return wanted

    def _record(
        self,
        session: AsyncSession,
        meta: RequestMeta,
        principal: Principal,
        action: str,
        row: ApiKeyRow,
        status: int,
    ) -> None:
        self.auth.audit.record(
            session,
            AuditEvent.of(
                action,
                "success",
                meta=meta,
                principal=principal,
                resource=f"apikey:{row.id}",
                status=status,
                details={
                    "owner_id": str(row.user_id),
                    "name": row.name,
                    "prefix": row.prefix,
                    "scopes": sorted(parse_scope(row.scopes)),
                },
            ),
        )


def _err(field: str, msg: str) -> dict[str, object]:
    return {"loc": ["body", field], "msg": msg, "pointer": f"/{field}"}
