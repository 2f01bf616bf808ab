"""Self-service API keys under /api/v1/users/me/api-keys."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from mlgate.auth.keys import ApiKeyCreatedOut, ApiKeyCreateIn, ApiKeyOut, ApiKeyService
from mlgate.deps import ContextDep, MetaDep, PrincipalDep, Require, SessionDep
from mlgate.openapi import AUTH_RESPONSES, CONFLICT, NOT_FOUND, responses
from mlgate.rbac.permissions import Permission

router = APIRouter(prefix="/api/v1/users/me/api-keys", tags=["api keys"])
GUARD = Require(Permission.APIKEYS_WRITE)


async def key_service(ctx: ContextDep) -> ApiKeyService:
    return ApiKeyService(ctx.auth)


KeysDep = Annotated[ApiKeyService, Depends(key_service)]


@router.post(
    "",
    status_code=201,
    dependencies=[GUARD],
    responses=responses(AUTH_RESPONSES, CONFLICT),
    summary="Mint an API key (the key is shown once)",
)
async def create_key(
    body: ApiKeyCreateIn, keys: KeysDep, session: SessionDep, principal: PrincipalDep, meta: MetaDep
) -> ApiKeyCreatedOut:
    created = await keys.create(session, meta, principal, body)
    return created.out()


@router.get("", dependencies=[GUARD], responses=AUTH_RESPONSES, summary="My API keys")
async def list_keys(keys: KeysDep, session: SessionDep, principal: PrincipalDep) -> list[ApiKeyOut]:
    return await keys.list_for(session, principal.user_id)


@router.delete(
    "/{key_id}",
    status_code=204,
    dependencies=[GUARD],
    responses=responses(AUTH_RESPONSES, NOT_FOUND),
    summary="Revoke one of my API keys",
)
async def revoke_key(
    key_id: uuid.UUID, keys: KeysDep, session: SessionDep, principal: PrincipalDep, meta: MetaDep
) -> Response:
    await keys.revoke(session, meta, principal, principal.user_id, key_id)
    return Response(status_code=204)
