"""SQL for roles and their permissions."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.rbac.tables import PermissionRow, RolePermissionRow, RoleRow
from mlgate.users.tables import UserRoleRow, UserRow


async def catalogue(session: AsyncSession) -> frozenset[str]:
    """Every permission name the database knows."""
    return frozenset((await session.execute(select(PermissionRow.name))).scalars())


async def get(session: AsyncSession, name: str) -> RoleRow | None:
    return await session.get(RoleRow, name)


async def list_all(session: AsyncSession) -> list[tuple[RoleRow, frozenset[str]]]:
    roles = list((await session.execute(select(RoleRow).order_by(RoleRow.name))).scalars())
    perms: dict[str, set[str]] = {role.name: set() for role in roles}
    stmt = select(RolePermissionRow.role_name, RolePermissionRow.permission)
    for role_name, permission in await session.execute(stmt):
        perms.setdefault(role_name, set()).add(permission)
    return [(role, frozenset(perms[role.name])) for role in roles]


async def permissions_of(session: AsyncSession, name: str) -> frozenset[str]:
    stmt = select(RolePermissionRow.permission).where(RolePermissionRow.role_name == name)
    return frozenset((await session.execute(stmt)).scalars())


async def add(session: AsyncSession, role: RoleRow, permissions: Iterable[str]) -> None:
    session.add(role)
    await session.flush()
    await set_permissions(session, role.name, permissions)


async def set_permissions(session: AsyncSession, name: str, permissions: Iterable[str]) -> None:
    await session.execute(delete(RolePermissionRow).where(RolePermissionRow.role_name == name))
    for permission in sorted(set(permissions)):
        session.add(RolePermissionRow(role_name=name, permission=permission))
    await session.flush()


async def holders(session: AsyncSession, name: str) -> list[UserRow]:
    """Users (not deleted) that hold the role."""
    stmt = (
        select(UserRow)
        .join(UserRoleRow, UserRoleRow.user_id == UserRow.id)
        .where(UserRoleRow.role_name == name, UserRow.deleted_at.is_(None))
    )
    return list((await session.execute(stmt)).scalars())


async def remove(session: AsyncSession, role: RoleRow) -> None:
    await session.execute(delete(RolePermissionRow).where(RolePermissionRow.role_name == role.name))
    await session.delete(role)
    await session.flush()
