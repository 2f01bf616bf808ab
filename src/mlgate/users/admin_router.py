"""Admin user management under /api/v1/admin/users (`users:read` / `users:write`)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from mlgate.auth.keys import ApiKeyOut
from mlgate.deps import ContextDep, MetaDep, PrincipalDep, Require, SessionDep
from mlgate.openapi import AUTH_RESPONSES, CONFLICT, NOT_FOUND, responses
from mlgate.rbac.permissions import Permission
from mlgate.users.admin_schemas import (
    AdminPasswordIn,
    AdminUserCreateIn,
    AdminUserOut,
    AdminUserPatchIn,
    UserPage,
)
from mlgate.users.admin_service import MAX_PAGE, AdminUserService

router = APIRouter(prefix="/api/v1/admin/users", tags=["admin: users"])
READ = Require(Permission.USERS_READ)
WRITE = Require(Permission.USERS_WRITE)
READ_RESPONSES = responses(AUTH_RESPONSES, NOT_FOUND)
WRITE_RESPONSES = responses(AUTH_RESPONSES, NOT_FOUND, CONFLICT)


async def admin_service(ctx: ContextDep) -> AdminUserService:
    return AdminUserService(ctx.auth)


AdminDep = Annotated[AdminUserService, Depends(admin_service)]


@router.get("", dependencies=[READ], responses=AUTH_RESPONSES, summary="List users")
async def list_users(
    admin: AdminDep,
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=100, description="Part of username or email")] = None,
    role: Annotated[str | None, Query(max_length=32)] = None,
    is_active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> UserPage:
    return await admin.list_users(
        session, q=q, role=role, is_active=is_active, limit=limit, cursor=cursor
    )


@router.post("", status_code=201, dependencies=[WRITE], responses=WRITE_RESPONSES)
async def create_user(
    body: AdminUserCreateIn,
    admin: AdminDep,
    session: SessionDep,
    principal: PrincipalDep,
    meta: MetaDep,
) -> AdminUserOut:
    return await admin.create(session, meta, principal, body)


@router.get("/{user_id}", dependencies=[READ], responses=READ_RESPONSES)
async def get_user(user_id: uuid.UUID, admin: AdminDep, session: SessionDep) -> AdminUserOut:
    return await admin.get(session, user_id)


@router.patch("/{user_id}", dependencies=[WRITE], responses=WRITE_RESPONSES)
async def update_user(
    user_id: uuid.UUID,
    body: AdminUserPatchIn,
    admin: AdminDep,
    session: SessionDep,
    principal: PrincipalDep,
    meta: MetaDep,
) -> AdminUserOut:
    return await admin.update(session, meta, principal, user_id, body)


@router.delete("/{user_id}", status_code=204, dependencies=[WRITE], responses=WRITE_RESPONSES)
async def delete_user(
    user_id: uuid.UUID, admin: AdminDep, session: SessionDep, principal: PrincipalDep, meta: MetaDep
) -> Response:
    await admin.delete(session, meta, principal, user_id)
    return Response(status_code=204)


@router.delete(
    "/{user_id}/sessions",
    status_code=204,
    dependencies=[WRITE],
    responses=WRITE_RESPONSES,
    summary="Force logout: end every session of the user",
)
async def revoke_sessions(
    user_id: uuid.UUID, admin: AdminDep, session: SessionDep, principal: PrincipalDep, meta: MetaDep
) -> Response:
    await admin.revoke_sessions(session, meta, principal, user_id)
    return Response(status_code=204)


@router.post(
    "/{user_id}/password",
    status_code=204,
    dependencies=[WRITE],
    responses=WRITE_RESPONSES,
    summary="Set the user's password (policy applies; the user's sessions end)",
)
async def set_password(
    user_id: uuid.UUID,
    body: AdminPasswordIn,
    admin: AdminDep,
    session: SessionDep,
    principal: PrincipalDep,
    meta: MetaDep,
) -> Response:
    await admin.set_password(session, meta, principal, user_id, body.password)
    return Response(status_code=204)


@router.get("/{user_id}/api-keys", dependencies=[READ], responses=READ_RESPONSES)
async def list_keys(user_id: uuid.UUID, admin: AdminDep, session: SessionDep) -> list[ApiKeyOut]:
    return await admin.list_keys(session, user_id)


@router.delete(
    "/{user_id}/api-keys/{key_id}", status_code=204, dependencies=[WRITE], responses=WRITE_RESPONSES
)
async def revoke_key(
    user_id: uuid.UUID,
    key_id: uuid.UUID,
    admin: AdminDep,
    session: SessionDep,
    principal: PrincipalDep,
    meta: MetaDep,
) -> Response:
    await admin.revoke_key(session, meta, principal, user_id, key_id)
    return Response(status_code=204)
