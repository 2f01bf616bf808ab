"""Accounts and the token lifecycle: register, password and refresh grants, logout,
revocation, password change. Never imports fastapi and never commits: the request's
unit of work does. Events that must survive a refused request (a failed login, a
detected token reuse) are written in a unit of work of their own before the refusal."""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.audit.events import Action, AuditEvent
from mlgate.audit.service import AuditService
from mlgate.auth import repository as auth_repo
from mlgate.auth.authenticate import digest
from mlgate.auth.passwords import PasswordService
from mlgate.auth.principal import Principal
from mlgate.auth.tables import RefreshTokenRow, SessionRow
from mlgate.auth.throttle import LoginThrottle
from mlgate.auth.tokens import TokenService
from mlgate.auth.view import AuthView
from mlgate.context import RequestMeta
from mlgate.db import Database, after_commit, utcnow
from mlgate.errors import (
    EmailTaken,
    OAuthError,
    PermissionDenied,
    RegistrationClosed,
    TokenExpired,
    TokenInvalid,
    UsernameTaken,
    ValidationFailed,
)
from mlgate.rbac.permissions import format_scope, parse_scope
from mlgate.settings import Settings
from mlgate.users import repository as users_repo
from mlgate.users.tables import UserRow

log = logging.getLogger(__name__)
MAX_LOGIN_PASSWORD_CHARS = 4096
BAD_CREDENTIALS = "Invalid username or password"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    scope: str


class AuthService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        passwords: PasswordService,
        tokens: TokenService,
        view: AuthView,
        audit: AuditService,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.throttle = throttle
        self.settings = settings
        self.db = db
        self.passwords = passwords
        self.tokens = tokens
        self.view = view
        self.audit = audit

    # -- accounts -------------------------------------------------------------------------

    async def create_user(
        self,
        session: AsyncSession,
        *,
        username: str,
        email: str,
        password: str,
        roles: list[str],
        is_active: bool = True,
    ) -> UserRow:
        """Create an account after the uniqueness and password-policy checks."""
        if await users_repo.username_taken(session, username):
            raise UsernameTaken("That username is already taken")
        if await users_repo.email_taken(session, email):
            raise EmailTaken("That email is already registered")
        await self.passwords.check_policy(password, username=username, email=email)
        user = UserRow(
            id=uuid.uuid4(),
            username=username,
            username_key=users_repo.username_key(username),
            email=email,
            email_key=users_repo.email_key(email),
            password_hash=await self.passwords.hash(password),
            is_active=is_active,
        )
        await users_repo.add(session, user, roles)
        return user

    async def register(
        self, session: AsyncSession, meta: RequestMeta, *, username: str, email: str, password: str
    ) -> UserRow:
        if self.settings.registration != "open":
            raise RegistrationClosed("Registration is closed on this server")
        user = await self.create_user(
            session,
            username=username,
            email=email,
            password=password,
            roles=[self.settings.default_role],
        )
        self.audit.record(
            session,
            AuditEvent.of(
                Action.REGISTER,
                "success",
                meta=meta,
                actor_id=user.id,
                actor=user.username,
                resource=f"user:{user.id}",
                status=201,
            ),
        )
        return user

    # -- grants ---------------------------------------------------------------------------

    async def password_grant(
        self,
        session: AsyncSession,
        meta: RequestMeta,
        *,
        login: str,
        password: str,
        scope: str | None,
    ) -> TokenPair:
        from mlgate.auth.throttle import account_key

        throttle = self.throttle
        user: UserRow | None = None
        if throttle is not None:
            try:
                # A locked-out IP is refused before any query or hash: a flood from one
                # address then costs almost nothing.
                await throttle.check(None, meta.ip)
            except OAuthError:
                await self._login_failed(meta, login, None, "throttled")
                raise
        user = await users_repo.find_by_login(session, login)
        account = account_key(login, user.id if user is not None else None)
        if throttle is not None:
            try:
                await throttle.check(account, meta.ip)  # before any hash is computed
            except OAuthError:
                await self._login_failed(meta, login, user, "throttled")
                raise
        if len(password) > MAX_LOGIN_PASSWORD_CHARS:
            password = ""  # still pay for one hash, so the answer's timing tells nothing
            user_hash = None
        else:
            user_hash = user.password_hash if user is not None else None
        ok, new_hash = await self.passwords.verify_and_update(password, user_hash)
        if user is None or not ok:
            await self._login_failed(meta, login, user, "bad_credentials")
            raise OAuthError("invalid_grant", BAD_CREDENTIALS)
        if not user.is_active:
            await self._login_failed(meta, login, user, "account_disabled")
            raise OAuthError("invalid_grant", "The account is disabled")
        if throttle is not None:
            await throttle.succeeded(account)
        roles = await users_repo.roles_of(session, user.id)
        permissions = await users_repo.permissions_of_roles(session, roles)
        granted = self._grant_scope(scope, permissions)
        now = utcnow()
        if new_hash is not None:
            user.password_hash = new_hash
        user.last_login_at = now
        login_session = SessionRow(
            id=uuid.uuid4(),
            user_id=user.id,
            scope=format_scope(granted),
            created_at=now,
            last_used_at=now,
            expires_at=now + timedelta(seconds=self.settings.refresh_token_max_lifetime_seconds),
            ip=meta.ip,
            user_agent=meta.user_agent[:512] or None,
        )
        session.add(login_session)
        await session.flush()
        return self._issue(
            session, meta, Action.LOGIN_SUCCESS, user.id, user.username, login_session, granted
        )

    async def refresh_grant(
        self, session: AsyncSession, meta: RequestMeta, *, refresh_token: str, scope: str | None
    ) -> TokenPair:
        now = utcnow()
        row = await auth_repo.find_refresh(session, digest(refresh_token))
        if row is None:
            raise OAuthError("invalid_grant", "The refresh token is not valid")
        login_session = await auth_repo.get_session(session, row.session_id)
        if login_session is None or login_session.revoked_at is not None:
            raise OAuthError("invalid_grant", "The refresh token's session has ended")
        if row.used_at is not None or not await auth_repo.spend_refresh(session, row.id, now):
            await self._reused(meta, row, login_session, now)
            raise OAuthError("invalid_grant", "The refresh token has already been used")
        if row.expires_at <= now or login_session.expires_at <= now:
            raise OAuthError("invalid_grant", "The refresh token has expired")
        user = await self.view.user(login_session.user_id)
        if user is None or not user.is_active:
            raise OAuthError("invalid_grant", "The account is disabled")
        allowed = parse_scope(login_session.scope) & user.permissions
        granted = self._grant_scope(scope, allowed)
        login_session.last_used_at = now
        return self._issue(
            session, meta, Action.TOKEN_REFRESH, user.id, user.username, login_session, granted
        )

    def _issue(
        self,
        session: AsyncSession,
        meta: RequestMeta,
        action: str,
        user_id: uuid.UUID,
        username: str,
        login_session: SessionRow,
        granted: frozenset[str],
    ) -> TokenPair:
        """A new refresh token of the session and an access token, audited as `action`."""
        refresh = self._new_refresh(session, login_session, login_session.last_used_at)
        access = self.tokens.issue_access(
            user_id=user_id, session_id=login_session.id, scope=granted
        )
        self.audit.record(
            session,
            AuditEvent.of(
                action,
                "success",
                meta=meta,
                actor_id=user_id,
                actor=username,
                resource=f"session:{login_session.id}",
                status=200,
            ),
        )
        return TokenPair(access.token, access.expires_in, refresh, format_scope(granted))

    def _grant_scope(self, requested: str | None, allowed: frozenset[str]) -> frozenset[str]:
        wanted = parse_scope(requested)
        if not wanted:
            return allowed
        if not wanted <= allowed:
            extra = " ".join(sorted(wanted - allowed))
            raise OAuthError("invalid_scope", f"Scope not granted to this account: {extra}")
        return wanted

    def _new_refresh(self, session: AsyncSession, login_session: SessionRow, now: datetime) -> str:
        token = secrets.token_urlsafe(32)  # 256 bits, 43 characters
        expires = min(
            now + timedelta(seconds=self.settings.refresh_token_ttl_seconds),
            login_session.expires_at,
        )
        session.add(
            RefreshTokenRow(
                session_id=login_session.id,
                token_hash=digest(token),
                created_at=now,
                expires_at=expires,
            )
        )
        return token

    async def _reused(
        self, meta: RequestMeta, row: RefreshTokenRow, login_session: SessionRow, now: datetime
    ) -> None:
        """A spent refresh token came back: revoke the family unless within the grace."""
        grace = self.settings.refresh_reuse_grace_seconds
        if grace and row.used_at is not None and (now - row.used_at).total_seconds() <= grace:
            return
        log.warning("refresh token reuse detected; session %s revoked", login_session.id)
        async with self.db.session() as own:
            await auth_repo.revoke_sessions(own, login_session.user_id, now, only=login_session.id)
            await self.announce(own, "session", login_session.id)
            self.audit.record(
                own,
                AuditEvent.of(
                    Action.TOKEN_REUSE,
                    "denied",
                    meta=meta,
                    actor_id=login_session.user_id,
                    resource=f"session:{login_session.id}",
                    status=400,
                ),
            )

    async def _login_failed(
        self, meta: RequestMeta, login: str, user: UserRow | None, reason: str
    ) -> None:
        from mlgate.auth.throttle import account_key

        account = account_key(login, user.id if user is not None else None)
        throttle = self.throttle
        if throttle is not None and reason == "bad_credentials":
            await throttle.failed(account, meta.ip)
        details = {"reason": reason}
        if user is None:
            # People type passwords into the username field: an unknown name is kept
            # only as the digest the throttle uses (compute it to search for a name).
            details["login_digest"] = account.removeprefix("n:")
        event = AuditEvent.of(
            Action.LOGIN_FAILURE,
            "failure",
            meta=meta,
            actor_id=user.id if user is not None else None,
            actor=user.username if user is not None else None,
            resource=f"user:{user.id}" if user is not None else None,
            status=429 if reason == "throttled" else 400,
            details=details,
        )
        if reason == "throttled":
            # A flood against a locked account is one event per IP, account and minute.
            key = f"{Action.LOGIN_FAILURE}|throttled|{meta.ip}|{account}"
            await self.audit.submit_aggregated(event, key)
        else:
            await self.audit.submit(event)

    # -- ending sessions ------------------------------------------------------------------

    async def logout(self, session: AsyncSession, meta: RequestMeta, principal: Principal) -> None:
        if principal.kind != "user":
            raise PermissionDenied("An API key cannot log out; revoke the key instead")
        if principal.session_id is not None:
            await self.revoke_session(session, principal.user_id, principal.session_id)
        self.audit.record(
            session,
            AuditEvent.of(
                Action.LOGOUT,
                "success",
                meta=meta,
                principal=principal,
                resource=f"session:{principal.session_id}",
                status=204,
            ),
        )

    async def revoke_session(
        self, session: AsyncSession, user_id: uuid.UUID, sid: uuid.UUID
    ) -> bool:
        ids = await auth_repo.revoke_sessions(session, user_id, utcnow(), only=sid)
        for revoked in ids:
            await self.announce(session, "session", revoked)
        return bool(ids)

    async def revoke_all_sessions(
        self, session: AsyncSession, user_id: uuid.UUID, *, keep: uuid.UUID | None = None
    ) -> list[uuid.UUID]:
        ids = await auth_repo.revoke_sessions(session, user_id, utcnow(), keep=keep)
        for revoked in ids:
            await self.announce(session, "session", revoked)
        return ids

    async def revoke_token(self, session: AsyncSession, meta: RequestMeta, token: str) -> None:
        """RFC 7009: revoke a refresh token, an API key or an access token's session.
        Unknown tokens are not an error (the answer is always 200)."""
        now = utcnow()
        target: str | None = None
        actor: uuid.UUID | None = None
        if token.startswith("mlg_"):
            key = await auth_repo.find_api_key(session, digest(token))
            if key is not None and key.revoked_at is None:
                key.revoked_at = now
                await self.announce(session, "api_key", key.id)
                target, actor = f"apikey:{key.id}", key.user_id
        else:
            row = await auth_repo.find_refresh(session, digest(token))
            sid: uuid.UUID | None = row.session_id if row is not None else None
            if sid is None:
                try:
                    sid = self.tokens.verify(token).sid
                except (TokenInvalid, TokenExpired):  # RFC 7009: unknown tokens are no error
                    sid = None
            login_session = await auth_repo.get_session(session, sid) if sid else None
            if login_session is not None and login_session.revoked_at is None:
                await self.revoke_session(session, login_session.user_id, login_session.id)
                target, actor = f"session:{login_session.id}", login_session.user_id
        if target is not None:
            self.audit.record(
                session,
                AuditEvent.of(
                    Action.TOKEN_REVOKE,
                    "success",
                    meta=meta,
                    actor_id=actor,
                    resource=target,
                    status=200,
                ),
            )

    # -- self service ---------------------------------------------------------------------

    async def change_password(
        self,
        session: AsyncSession,
        meta: RequestMeta,
        principal: Principal,
        *,
        current_password: str,
        new_password: str,
    ) -> None:
        user = await self._verified_self(session, principal, current_password)
        await self.passwords.check_policy(new_password, username=user.username, email=user.email)
        user.password_hash = await self.passwords.hash(new_password)
        await self.revoke_all_sessions(session, user.id, keep=principal.session_id)
        self.audit.record(
            session,
            AuditEvent.of(
                Action.PASSWORD_CHANGE,
                "success",
                meta=meta,
                principal=principal,
                resource=f"user:{user.id}",
                status=204,
            ),
        )

    async def change_email(
        self,
        session: AsyncSession,
        meta: RequestMeta,
        principal: Principal,
        *,
        email: str,
        current_password: str | None,
    ) -> UserRow:
        if current_password is None:
            raise ValidationFailed(
                "Changing the email needs the current password",
                errors=[
                    {
                        "loc": ["body", "current_password"],
                        "msg": "Field required",
                        "pointer": "/current_password",
                    }
                ],
            )
        user = await self._verified_self(session, principal, current_password)
        if await users_repo.email_taken(session, email, except_id=user.id):
            raise EmailTaken("That email is already registered")
        user.email = email
        user.email_key = users_repo.email_key(email)
        self.audit.record(
            session,
            AuditEvent.of(
                Action.EMAIL_CHANGE,
                "success",
                meta=meta,
                principal=principal,
                resource=f"user:{user.id}",
                status=200,
            ),
        )
        return user

    async def _verified_self(
        self, session: AsyncSession, principal: Principal, current_password: str
    ) -> UserRow:
        if principal.kind != "user":
            raise PermissionDenied("An API key cannot change the account's password or email")
        user = await users_repo.get(session, principal.user_id)
        if user is None:
            raise PermissionDenied("The account no longer exists")
        ok, _ = await self.passwords.verify_and_update(
            current_password[:MAX_LOGIN_PASSWORD_CHARS], user.password_hash
        )
        if not ok:
            raise ValidationFailed(
                "The current password is not correct",
                errors=[
                    {
                        "loc": ["body", "current_password"],
                        "msg": "The current password is not correct",
                        "pointer": "/current_password",
                    }
                ],
            )
        return user

    # -- change log -----------------------------------------------------------------------

    async def announce(self, session: AsyncSession, kind: str, subject: uuid.UUID | str) -> None:
        """Record a change every replica must see; drop our own cache once committed."""
        await auth_repo.add_change(session, kind, str(subject))
        after_commit(session, lambda: self.view.local_change(kind, str(subject)))
