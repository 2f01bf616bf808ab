"""A user's own sessions (logins): list them, end one. Never imports fastapi."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.audit.events import Action, AuditEvent
from mlgate.auth import repository as auth_repo
from mlgate.auth.principal import Principal
from mlgate.auth.service import AuthService
from mlgate.context import RequestMeta
from mlgate.db import utcnow
from mlgate.errors import NotFound, PermissionDenied
from mlgate.users.admin_schemas import SessionOut


async def list_sessions(session: AsyncSession, principal: Principal) -> list[SessionOut]:
    """Live sessions of the caller, oldest first; the caller's own is marked `current`."""
    rows = await auth_repo.sessions_of(session, principal.user_id, utcnow())
    return [
        SessionOut(
            id=row.id,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            expires_at=row.expires_at,
            ip=row.ip,
            user_agent=row.user_agent,
            current=row.id == principal.session_id,
        )
        for row in rows
    ]


async def end_session(
    auth: AuthService,
    session: AsyncSession,
    meta: RequestMeta,
    principal: Principal,
    sid: uuid.UUID,
) -> None:
    """End one of the caller's live sessions. Anyone else's, or an ended one, is 404."""
    if principal.kind != "user":
        raise PermissionDenied("An API key cannot end sessions; sign in as the user")
    if not await auth.revoke_session(session, principal.user_id, sid):
        raise NotFound("No such session")
    auth.audit.record(
        session,
        AuditEvent.of(
            Action.SESSION_REVOKE,
            "success",
            meta=meta,
            principal=principal,
            resource=f"session:{sid}",
            status=204,
        ),
    )
