"""Self-service sessions under /api/v1/users/me/sessions."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from mlgate.deps import Authenticated, ContextDep, MetaDep, PrincipalDep, SessionDep
from mlgate.openapi import AUTH_RESPONSES, NOT_FOUND, responses
from mlgate.users import sessions_service
from mlgate.users.admin_schemas import SessionOut

router = APIRouter(prefix="/api/v1/users/me/sessions", tags=["users"])


@router.get("", dependencies=[Authenticated()], responses=AUTH_RESPONSES, summary="My sessions")
async def list_sessions(principal: PrincipalDep, session: SessionDep) -> list[SessionOut]:
    return await sessions_service.list_sessions(session, principal)


@router.delete(
    "/{sid}",
    status_code=204,
    dependencies=[Authenticated()],
    responses=responses(AUTH_RESPONSES, NOT_FOUND),
    summary="End one of my sessions (its tokens stop working)",
)
async def end_session(
    sid: uuid.UUID, principal: PrincipalDep, session: SessionDep, ctx: ContextDep, meta: MetaDep
) -> Response:
    await sessions_service.end_session(ctx.auth, session, meta, principal, sid)
    return Response(status_code=204)
