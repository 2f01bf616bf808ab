"""Roles: anyone signed in reads them; `roles:write` manages custom ones."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from mlgate.deps import Authenticated, ContextDep, MetaDep, PrincipalDep, Require, SessionDep
from mlgate.openapi import AUTH_RESPONSES, CONFLICT, NOT_FOUND, responses
from mlgate.rbac.permissions import Permission
from mlgate.rbac.schemas import RoleCreateIn, RoleOut, RoleUpdateIn
from mlgate.rbac.service import RoleService

router = APIRouter(prefix="/api/v1", tags=["roles"])
WRITE = Require(Permission.ROLES_WRITE)
WRITE_RESPONSES = responses(AUTH_RESPONSES, NOT_FOUND, CONFLICT)
NameDep = Annotated[str, Path(max_length=64)]


async def role_service(ctx: ContextDep) -> RoleService:
    return RoleService(ctx.auth)


RolesDep = Annotated[RoleService, Depends(role_service)]


@router.get("/roles", dependencies=[Authenticated()], responses=AUTH_RESPONSES)
async def list_roles(roles: RolesDep, session: SessionDep) -> list[RoleOut]:
    return await roles.list_roles(session)


@router.post("/admin/roles", status_code=201, dependencies=[WRITE], responses=WRITE_RESPONSES)
async def create_role(
    body: RoleCreateIn, roles: RolesDep, session: SessionDep, principal: PrincipalDep, meta: MetaDep
) -> RoleOut:
    return await roles.create(session, meta, principal, body)


@router.patch("/admin/roles/{name}", dependencies=[WRITE], responses=WRITE_RESPONSES)
async def update_role(
    name: NameDep,
    body: RoleUpdateIn,
    roles: RolesDep,
    session: SessionDep,
    principal: PrincipalDep,
    meta: MetaDep,
) -> RoleOut:
    return await roles.update(session, meta, principal, name, body)


@router.delete(
    "/admin/roles/{name}", status_code=204, dependencies=[WRITE], responses=WRITE_RESPONSES
)
async def delete_role(
    name: NameDep, roles: RolesDep, session: SessionDep, principal: PrincipalDep, meta: MetaDep
) -> Response:
    await roles.delete(session, meta, principal, name)
    return Response(status_code=204)
