"""Usage and abuse-control routes: a user's own usage, an admin's view of anyone's
usage, and unlocking an account locked by failed logins."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Response

from mlgate.auth.throttle import unlock_account
from mlgate.deps import Authenticated, ContextDep, MetaDep, PrincipalDep, Require, SessionDep
from mlgate.limits.service import accounting_of
from mlgate.openapi import AUTH_RESPONSES, NOT_FOUND, responses
from mlgate.rbac.permissions import Permission

router = APIRouter(tags=["usage"])


@router.get("/api/v1/users/me/usage", dependencies=[Authenticated()], responses=AUTH_RESPONSES)
async def my_usage(principal: PrincipalDep, session: SessionDep, ctx: ContextDep) -> dict[str, Any]:
    """Predictions and rows by model, today and this month, with your limits."""
    return await accounting_of(ctx).usage(session, principal.user_id)


@router.get(
    "/api/v1/admin/users/{user_id}/usage",
    dependencies=[Require(Permission.USERS_READ)],
    responses=responses(AUTH_RESPONSES, NOT_FOUND),
)
async def user_usage(user_id: uuid.UUID, session: SessionDep, ctx: ContextDep) -> dict[str, Any]:
    return await accounting_of(ctx).usage(session, user_id)


@router.post(
    "/api/v1/admin/users/{user_id}/unlock",
    status_code=204,
    dependencies=[Require(Permission.USERS_WRITE)],
    responses=responses(AUTH_RESPONSES, NOT_FOUND),
)
async def unlock(
    user_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, ctx: ContextDep, meta: MetaDep
) -> Response:
    """Clear the login lockout and failure counters of an account."""
    await unlock_account(ctx, session, user_id, meta=meta, principal=principal)
    return Response(status_code=204)
