"""Custom roles: create, change, delete. Never imports fastapi and never commits.

Creating or changing a role needs the caller to hold every permission of the role, old
and new (no privilege escalation). Built-in roles are immutable. A role in use cannot be
deleted. Every change is announced as "role" so each replica drops cached permissions.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.audit.events import Action, AuditEvent
from mlgate.auth.principal import Principal
from mlgate.auth.service import AuthService
from mlgate.context import RequestMeta
from mlgate.errors import Conflict, LastAdmin, NotFound, PrivilegeEscalation, ValidationFailed
from mlgate.rbac import repository as roles_repo
from mlgate.rbac.permissions import ADMIN_CORE
from mlgate.rbac.schemas import RoleCreateIn, RoleOut, RoleUpdateIn
from mlgate.rbac.tables import RoleRow
from mlgate.users import repository as users_repo

UNSET_FIELDS = frozenset({"rate_limit", "daily_quota"})


def describe(role: RoleRow, permissions: frozenset[str]) -> RoleOut:
    return RoleOut(
        name=role.name,
        description=role.description,
        permissions=sorted(permissions),
        builtin=role.builtin,
        rate_limit=role.rate_limit,
        daily_quota=role.daily_quota,
        created_at=role.created_at,
    )


def require_holds(principal: Principal, permissions: frozenset[str], what: str) -> None:
    missing = permissions - principal.permissions
    if missing:
        raise PrivilegeEscalation(
            f"{what} needs permissions you do not hold: {', '.join(sorted(missing))}"
        )


class RoleService:
    def __init__(self, auth: AuthService) -> None:
        self.auth = auth

    async def list_roles(self, session: AsyncSession) -> list[RoleOut]:
        return [describe(role, perms) for role, perms in await roles_repo.list_all(session)]

    async def create(
        self, session: AsyncSession, meta: RequestMeta, principal: Principal, body: RoleCreateIn
    ) -> RoleOut:
        permissions = await self._checked_permissions(session, body.permissions)
        require_holds(principal, permissions, "Creating this role")
        if await roles_repo.get(session, body.name) is not None:
            raise Conflict(f"A role named '{body.name}' already exists")
        role = RoleRow(
            name=body.name,
            description=body.description,
            builtin=False,
            rate_limit=body.rate_limit,
            daily_quota=body.daily_quota,
        )
        await roles_repo.add(session, role, permissions)
        await self._record(session, meta, principal, Action.ROLE_CREATE, role, 201, permissions)
        return describe(role, permissions)

    async def update(
        self,
        session: AsyncSession,
        meta: RequestMeta,
        principal: Principal,
        name: str,
        body: RoleUpdateIn,
    ) -> RoleOut:
        role = await self._mutable(session, name)
        old = await roles_repo.permissions_of(session, name)
        require_holds(principal, old, "Changing this role")
        permissions = old
        if body.permissions is not None:
            permissions = await self._checked_permissions(session, body.permissions)
            require_holds(principal, permissions, "Changing this role")
        if body.description is not None:
            role.description = body.description
        for field in UNSET_FIELDS & body.model_fields_set:
            setattr(role, field, getattr(body, field))
        if permissions != old:
            await roles_repo.set_permissions(session, name, permissions)
            for user in await roles_repo.holders(session, name):
                user.auth_epoch += 1
            await users_repo.lock_admin_guard(session)
            if not await users_repo.active_holders_of(session, ADMIN_CORE):
                raise LastAdmin("That change would leave no active administrator")
        await self.auth.announce(session, "role", name)
        await self._record(session, meta, principal, Action.ROLE_UPDATE, role, 200, permissions)
        return describe(role, permissions)

    async def delete(
        self, session: AsyncSession, meta: RequestMeta, principal: Principal, name: str
    ) -> None:
        role = await self._mutable(session, name)
        permissions = await roles_repo.permissions_of(session, name)
        require_holds(principal, permissions, "Deleting this role")
        if await roles_repo.holders(session, name):
            raise Conflict(f"Role '{name}' is in use; take it off its users first")
        await self._record(session, meta, principal, Action.ROLE_DELETE, role, 204, permissions)
        await roles_repo.remove(session, role)
        await self.auth.announce(session, "role", name)

    async def _mutable(self, session: AsyncSession, name: str) -> RoleRow:
        role = await roles_repo.get(session, name)
        if role is None:
            raise NotFound(f"No role named '{name}'")
        if role.builtin:
            raise Conflict(f"The built-in role '{name}' cannot be changed or deleted")
        return role

    async def _checked_permissions(
        self, session: AsyncSession, wanted: Iterable[str]
    ) -> frozenset[str]:
        names = frozenset(str(p) for p in wanted)
        unknown = names - await roles_repo.catalogue(session)
        if unknown:
            raise ValidationFailed(
                f"Unknown permissions: {', '.join(sorted(unknown))}",
                errors=[
                    {
                        "loc": ["body", "permissions"],
                        "msg": f"Unknown permission '{name}'",
                        "pointer": "/permissions",
                    }
                    for name in sorted(unknown)
                ],
            )
        return names

    async def _record(
        self,
        session: AsyncSession,
        meta: RequestMeta,
        principal: Principal,
        action: str,
        role: RoleRow,
        status: int,
        permissions: frozenset[str],
    ) -> None:
        self.auth.audit.record(
            session,
            AuditEvent.of(
                action,
                "success",
                meta=meta,
                principal=principal,
                resource=f"role:{role.name}",
                status=status,
                details={"permissions": sorted(permissions)},
            ),
        )
