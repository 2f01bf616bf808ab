"""Admin user management. Never imports fastapi and never commits.

`actor` is the calling principal, or None for the local operator (the CLI), who is
trusted with every permission but still bound by the last-admin guard.

Rules enforced here:
- assigning or removing a role needs every permission of that role, and acting on a
  user who holds permissions the caller lacks is refused (403 privilege_escalation):
  otherwise a user manager could reset an administrator's password and become one;
- the last active holder of `users:write` + `roles:write` cannot be demoted, disabled
  or deleted (409 last_admin);
- disabling or re-roling bumps the user's authorization epoch and announces "user", so
  every replica drops the cached user within its poll interval (and this one at once).
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.audit.events import Action, AuditEvent
from mlgate.auth.keys import ApiKeyOut, ApiKeyService
from mlgate.auth.principal import Principal
from mlgate.auth.service import AuthService
from mlgate.context import RequestMeta
from mlgate.db import utcnow
from mlgate.errors import (
    EmailTaken,
    LastAdmin,
    NotFound,
    PrivilegeEscalation,
    ValidationFailed,
)
from mlgate.rbac.permissions import ADMIN_CORE
from mlgate.users import repository as users_repo
from mlgate.users import service as users_service
from mlgate.users.admin_schemas import (
    AdminUserCreateIn,
    AdminUserOut,
    AdminUserPatchIn,
    UserPage,
)
from mlgate.users.schemas import UserOut
from mlgate.users.tables import UserRow

MAX_PAGE = 200
CLI_META = RequestMeta(request_id="cli", ip="local", user_agent="mlgate-cli")


def encode_cursor(user: UserRow) -> str:
    raw = json.dumps([user.created_at.isoformat(), str(user.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, ident = json.loads(raw)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("naive")
        return when, uuid.UUID(ident)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed(
            "The cursor is not valid; use a next_cursor from a previous page",
            errors=[{"loc": ["query", "cursor"], "msg": "Invalid cursor", "pointer": "/cursor"}],
        ) from None


class AdminUserService:
    def __init__(self, auth: AuthService) -> None:
        self.auth = auth
        self.keys = ApiKeyService(auth)

    # -- reading --------------------------------------------------------------------------

    async def list_users(
        self,
        session: AsyncSession,
        *,
        q: str | None,
        role: str | None,
        is_active: bool | None,
        limit: int,
        cursor: str | None,
    ) -> UserPage:
        limit = max(1, min(limit, MAX_PAGE))
        after = decode_cursor(cursor) if cursor else None
        rows = await users_repo.list_page(
            session, q=q, role=role, is_active=is_active, after=after, limit=limit + 1
        )
        more = len(rows) > limit
        rows = rows[:limit]
        described = await users_service.describe_many(session, rows)
        items = [self._out(out, row) for out, row in zip(described, rows, strict=True)]
        return UserPage(items=items, next_cursor=encode_cursor(rows[-1]) if more else None)

    async def get(self, session: AsyncSession, user_id: uuid.UUID) -> AdminUserOut:
        return await self.describe(session, await self._user(session, user_id))

    async def describe(self, session: AsyncSession, user: UserRow) -> AdminUserOut:
        return self._out(await users_service.describe(session, user), user)

    async def list_keys(self, session: AsyncSession, user_id: uuid.UUID) -> list[ApiKeyOut]:
        await self._user(session, user_id)
        return await self.keys.list_for(session, user_id)

    # -- changing -------------------------------------------------------------------------

    async def create(
        self,
        session: AsyncSession,
        meta: RequestMeta,
        actor: Principal | None,
        body: AdminUserCreateIn,
    ) -> AdminUserOut:
        roles = sorted(set(body.roles if body.roles is not None else [self.settings_role]))
        await self._check_roles(session, roles, actor)
        user = await self.auth.create_user(
            session,
            username=body.username,
            email=str(body.email),
            password=body.password,
            roles=roles,
            is_active=body.is_active,
        )
        details = {"roles": roles, "is_active": body.is_active}
        self._record(session, meta, actor, Action.ADMIN_USER_CREATE, user, 201, details)
        return await self.describe(session, user)

    async def update(
        self,
        session: AsyncSession,
        meta: RequestMeta,
        actor: Principal | None,
        user_id: uuid.UUID,
        body: AdminUserPatchIn,
    ) -> AdminUserOut:
        user = await self._target(session, user_id, actor)
        changed: dict[str, Any] = {}
        if body.roles is not None:
            old = await users_repo.roles_of(session, user.id)
            new = sorted(set(body.roles))
            if new != old:
                await self._check_roles(session, set(new) ^ set(old), actor, known=set(new))
                await users_repo.set_roles(session, user.id, new)
                changed["roles"] = new
        if body.is_active is not None and body.is_active != user.is_active:
            user.is_active = body.is_active
            changed["is_active"] = body.is_active
        if body.email is not None and users_repo.email_key(str(body.email)) != user.email_key:
            if await users_repo.email_taken(session, str(body.email), except_id=user.id):
                raise EmailTaken("That email is already registered")
            user.email, user.email_key = str(body.email), users_repo.email_key(str(body.email))
            changed["email"] = True
        if "daily_quota" in body.model_fields_set and body.daily_quota != user.daily_quota:
            user.daily_quota = body.daily_quota
            changed["daily_quota"] = body.daily_quota
        if "roles" in changed or "is_active" in changed:
            await self._access_changed(session, user)
        if changed:
            self._record(session, meta, actor, Action.ADMIN_USER_UPDATE, user, 200, changed)
        return await self.describe(session, user)

    async def set_active(
        self, session: AsyncSession, actor: Principal | None, user_id: uuid.UUID, active: bool
    ) -> UserRow:
        await self.update(session, CLI_META, actor, user_id, AdminUserPatchIn(is_active=active))
        return await self._user(session, user_id)

    async def delete(
        self, session: AsyncSession, meta: RequestMeta, actor: Principal | None, user_id: uuid.UUID
    ) -> None:
        """Disable, revoke sessions and keys, free username and email; keep the id."""
        user = await self._target(session, user_id, actor)
        self._record(session, meta, actor, Action.ADMIN_USER_DELETE, user, 204, {})
        tombstone = f"deleted-{user.id}"
        user.is_active = False
        user.username, user.username_key = tombstone, None
        user.email, user.email_key = tombstone, None
        user.password_hash = None
        user.deleted_at = utcnow()
        await users_repo.set_roles(session, user.id, [])
        await self.keys.revoke_all(session, user.id)
        await self._access_changed(session, user)

    async def revoke_sessions(
        self, session: AsyncSession, meta: RequestMeta, actor: Principal | None, user_id: uuid.UUID
    ) -> int:
        user = await self._user(session, user_id)
        ids = await self.auth.revoke_all_sessions(session, user.id)
        self._record(
            session, meta, actor, Action.ADMIN_USER_SESSIONS, user, 204, {"sessions": len(ids)}
        )
        return len(ids)

    async def set_password(
        self,
        session: AsyncSession,
        meta: RequestMeta,
        actor: Principal | None,
        user_id: uuid.UUID,
        password: str,
    ) -> None:
        """Set a password (policy applies) and end every session of the user."""
        user = await self._target(session, user_id, actor)
        passwords = self.auth.passwords
        await passwords.check_policy(password, username=user.username, email=user.email)
        user.password_hash = await passwords.hash(password)
        await self.auth.revoke_all_sessions(session, user.id)
        self._record(session, meta, actor, Action.ADMIN_USER_PASSWORD, user, 204, {})

    async def revoke_key(
        self,
        session: AsyncSession,
        meta: RequestMeta,
        actor: Principal,
        user_id: uuid.UUID,
        key_id: uuid.UUID,
    ) -> None:
        await self._user(session, user_id)
        await self.keys.revoke(session, meta, actor, user_id, key_id)

    async def find(self, session: AsyncSession, login: str) -> UserRow:
        user = await users_repo.find_by_login(session, login)
        if user is None or user.deleted_at is not None:
            raise NotFound(f"No user '{login}'")
        return user

    # -- helpers --------------------------------------------------------------------------

    @property
    def settings_role(self) -> str:
        return self.auth.settings.default_role

    async def _user(self, session: AsyncSession, user_id: uuid.UUID) -> UserRow:
        user = await users_repo.get(session, user_id)
        if user is None:
            raise NotFound("No such user")
        return user

    async def _target(
        self, session: AsyncSession, user_id: uuid.UUID, actor: Principal | None
    ) -> UserRow:
        """The user to change, locked; refused when it holds more than the caller."""
        user = await users_repo.get_for_update(session, user_id)
        if user is None:
            raise NotFound("No such user")
        if actor is not None:
            held = await users_repo.permissions_of_roles(
                session, await users_repo.roles_of(session, user.id)
            )
            if not held <= actor.permissions:
                raise PrivilegeEscalation(
                    "That user holds permissions you do not: "
                    + ", ".join(sorted(held - actor.permissions))
                )
        return user

    async def _check_roles(
        self,
        session: AsyncSession,
        roles: Iterable[str],
        actor: Principal | None,
        *,
        known: set[str] | None = None,
    ) -> None:
        """Unknown role names are 422; each role needs all its permissions held."""
        names = set(roles) | (known or set())
        unknown = names - await users_repo.existing_roles(session, names)
        if unknown:
            raise ValidationFailed(
                f"Unknown roles: {', '.join(sorted(unknown))}",
                errors=[
                    {"loc": ["body", "roles"], "msg": f"Unknown role '{n}'", "pointer": "/roles"}
                    for n in sorted(unknown)
                ],
            )
        if actor is None:
            return
        for role in sorted(set(roles)):
            missing = await users_repo.permissions_of_roles(session, [role]) - actor.permissions
            if missing:
                raise PrivilegeEscalation(
                    f"Role '{role}' has permissions you do not hold: {', '.join(sorted(missing))}"
                )

    async def _access_changed(self, session: AsyncSession, user: UserRow) -> None:
        await users_repo.lock_admin_guard(session)
        if not await users_repo.active_holders_of(session, ADMIN_CORE):
            raise LastAdmin("That would leave no active administrator (users:write + roles:write)")
        user.auth_epoch += 1
        if not user.is_active:
            await self.auth.revoke_all_sessions(session, user.id)
        await self.auth.announce(session, "user", user.id)

    def _out(self, base: UserOut, user: UserRow) -> AdminUserOut:
        return AdminUserOut(
            **base.model_dump(), daily_quota=user.daily_quota, updated_at=user.updated_at
        )

    def _record(
        self,
        session: AsyncSession,
        meta: RequestMeta,
        actor: Principal | None,
        action: str,
        user: UserRow,
        status: int,
        details: dict[str, Any],
    ) -> None:
        self.auth.audit.record(
            session,
            AuditEvent.of(
                action,
                "success",
                meta=meta,
                principal=actor,
                actor="cli" if actor is None else None,
                resource=f"user:{user.id}",
                status=status,
                details={"username": user.username, **details},
            ),
        )
