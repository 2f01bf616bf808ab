"""Reading users as clients see them."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.auth.view import AuthView
from mlgate.errors import NotFound
from mlgate.users import repository as users_repo
from mlgate.users.schemas import UserOut
from mlgate.users.tables import UserRow


async def describe(session: AsyncSession, user: UserRow) -> UserOut:
    roles = await users_repo.roles_of(session, user.id)
    permissions = await users_repo.permissions_of_roles(session, roles)
    return UserOut(
        id=user.id,
        username=user.username,
        email=user.email,
        roles=roles,
        permissions=sorted(permissions),
        is_active=user.is_active,
        created_at=user.created_at,
        last_login_at=user.last_login_at,
    )


async def describe_current(view: AuthView, user_id: uuid.UUID) -> UserOut:
    state = await view.user(user_id)
    if state is None or state.created_at is None:
        raise NotFound("No such user")
    return UserOut(
        id=state.id,
        username=state.username,
        email=state.email,
        roles=sorted(state.roles),
        permissions=sorted(state.permissions),
        is_active=state.is_active,
        created_at=state.created_at,
        last_login_at=state.last_login_at,
    )


async def describe_many(session: AsyncSession, users: list[UserRow]) -> list[UserOut]:
    roles = await users_repo.roles_of_many(session, [u.id for u in users])
    cache: dict[tuple[str, ...], frozenset[str]] = {}
    out = []
    for user in users:
        key = tuple(roles[user.id])
        if key not in cache:
            cache[key] = await users_repo.permissions_of_roles(session, key)
        out.append(
            UserOut(
                id=user.id,
                username=user.username,
                email=user.email,
                roles=list(key),
                permissions=sorted(cache[key]),
                is_active=user.is_active,
                created_at=user.created_at,
                last_login_at=user.last_login_at,
            )
        )
    return out


async def require(session: AsyncSession, user_id: uuid.UUID) -> UserRow:
    user = await users_repo.get(session, user_id)
    if user is None:
        raise NotFound("No such user")
    return user
