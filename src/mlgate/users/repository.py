"""SQL for users and their roles."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Select, delete, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.rbac.tables import RolePermissionRow, RoleRow
from mlgate.users.tables import UserRoleRow, UserRow


def username_key(username: str) -> str:
    return username.casefold()


def email_key(email: str) -> str:
    return email.strip().casefold()


async def get(session: AsyncSession, user_id: uuid.UUID) -> UserRow | None:
    row = await session.get(UserRow, user_id)
    return row if row is not None and row.deleted_at is None else None


async def get_for_update(session: AsyncSession, user_id: uuid.UUID) -> UserRow | None:
    stmt = select(UserRow).where(UserRow.id == user_id, UserRow.deleted_at.is_(None))
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def find_by_login(session: AsyncSession, login: str) -> UserRow | None:
    """A user by username or email, without regard to case."""
    key = login.strip().casefold()
    stmt = select(UserRow).where(or_(UserRow.username_key == key, UserRow.email_key == key))
    return (await session.execute(stmt.limit(1))).scalar_one_or_none()


async def username_taken(session: AsyncSession, username: str) -> bool:
    stmt = select(UserRow.id).where(UserRow.username_key == username_key(username))
    return (await session.execute(stmt)).first() is not None


async def email_taken(
    session: AsyncSession, email: str, *, except_id: uuid.UUID | None = None
) -> bool:
    stmt = select(UserRow.id).where(UserRow.email_key == email_key(email))
    if except_id is not None:
        stmt = stmt.where(UserRow.id != except_id)
    return (await session.execute(stmt)).first() is not None


async def add(session: AsyncSession, user: UserRow, roles: Iterable[str]) -> None:
    session.add(user)
    await session.flush()
    for role in sorted(set(roles)):
        session.add(UserRoleRow(user_id=user.id, role_name=role))
    await session.flush()


async def roles_of(session: AsyncSession, user_id: uuid.UUID) -> list[str]:
    stmt = select(UserRoleRow.role_name).where(UserRoleRow.user_id == user_id)
    return sorted((await session.execute(stmt)).scalars())


async def roles_of_many(
    session: AsyncSession, user_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[str]]:
    out: dict[uuid.UUID, list[str]] = {uid: [] for uid in user_ids}
    if not user_ids:
        return out
    stmt = select(UserRoleRow.user_id, UserRoleRow.role_name).where(
        UserRoleRow.user_id.in_(user_ids)
    )
    for uid, role in await session.execute(stmt):
        out[uid].append(role)
    for roles in out.values():
        roles.sort()
    return out


async def set_roles(session: AsyncSession, user_id: uuid.UUID, roles: Iterable[str]) -> None:
    await session.execute(delete(UserRoleRow).where(UserRoleRow.user_id == user_id))
    for role in sorted(set(roles)):
        session.add(UserRoleRow(user_id=user_id, role_name=role))
    await session.flush()


async def permissions_of_roles(session: AsyncSession, roles: Iterable[str]) -> frozenset[str]:
    names = list(roles)
    if not names:
        return frozenset()
    stmt = select(RolePermissionRow.permission).where(RolePermissionRow.role_name.in_(names))
    return frozenset((await session.execute(stmt)).scalars())


async def existing_roles(session: AsyncSession, names: Iterable[str]) -> set[str]:
    wanted = list(names)
    if not wanted:
        return set()
    stmt = select(RoleRow.name).where(RoleRow.name.in_(wanted))
    return set((await session.execute(stmt)).scalars())


ADMIN_GUARD_LOCK = 0x6D6C6761646D  # "mlgadm"


async def lock_admin_guard(session: AsyncSession) -> None:
    """Serialize changes that could remove the last administrator until this transaction
    ends. PostgreSQL needs the lock (READ COMMITTED would let two demotions each see the
    other admin); SQLite already serializes writers and the check runs after our write."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": ADMIN_GUARD_LOCK})


async def active_holders_of(session: AsyncSession, permissions: frozenset[str]) -> set[uuid.UUID]:
    """Active users whose roles together grant every permission given."""
    stmt = (
        select(UserRow.id, RolePermissionRow.permission)
        .join(UserRoleRow, UserRoleRow.user_id == UserRow.id)
        .join(RolePermissionRow, RolePermissionRow.role_name == UserRoleRow.role_name)
        .where(
            UserRow.is_active.is_(True),
            UserRow.deleted_at.is_(None),
            RolePermissionRow.permission.in_(list(permissions)),
        )
    )
    held: dict[uuid.UUID, set[str]] = {}
    for uid, perm in await session.execute(stmt):
        held.setdefault(uid, set()).add(perm)
    return {uid for uid, perms in held.items() if perms >= permissions}


def list_query(*, q: str | None, role: str | None, is_active: bool | None) -> Select[UserRow]:
    stmt = select(UserRow).where(UserRow.deleted_at.is_(None))
    if q:
        pattern = (
            "%" + q.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        stmt = stmt.where(
            or_(
                UserRow.username_key.like(pattern, escape="\\"),
                UserRow.email_key.like(pattern, escape="\\"),
            )
        )
    if role:
        stmt = stmt.where(
            UserRow.id.in_(select(UserRoleRow.user_id).where(UserRoleRow.role_name == role))
        )
    if is_active is not None:
        stmt = stmt.where(UserRow.is_active.is_(is_active))
    return stmt


async def list_page(
    session: AsyncSession,
    *,
    q: str | None,
    role: str | None,
    is_active: bool | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[UserRow]:
    """Users in (created_at, id) order, keyset-paginated after the given position."""
    stmt = list_query(q=q, role=role, is_active=is_active)
    if after is not None:
        created, uid = after
        stmt = stmt.where(
            or_(UserRow.created_at > created, (UserRow.created_at == created) & (UserRow.id > uid))
        )
    stmt = stmt.order_by(UserRow.created_at, UserRow.id).limit(limit)
    return list((await session.execute(stmt)).scalars())
