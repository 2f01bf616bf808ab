"""Self-service routes under /api/v1/users/me."""

from __future__ import annotations

from fastapi import APIRouter, Response

from mlgate.deps import Authenticated, ContextDep, MetaDep, PrincipalDep, SessionDep
from mlgate.openapi import AUTH_RESPONSES, CONFLICT, responses
from mlgate.users import service as users_service
from mlgate.users.schemas import PasswordChangeIn, UpdateMeIn, UserOut

router = APIRouter(prefix="/api/v1/users", tags=["users"])


@router.get("/me", dependencies=[Authenticated()], responses=AUTH_RESPONSES)
async def me(principal: PrincipalDep, ctx: ContextDep) -> UserOut:
    # Served from the in-memory auth view the request was authenticated with: no query.
    return await users_service.describe_current(ctx.view, principal.user_id)


@router.patch("/me", dependencies=[Authenticated()], responses=responses(AUTH_RESPONSES, CONFLICT))
async def update_me(
    body: UpdateMeIn, principal: PrincipalDep, session: SessionDep, ctx: ContextDep, meta: MetaDep
) -> UserOut:
    if body.email is None:
        user = await users_service.require(session, principal.user_id)
    else:
        user = await ctx.auth.change_email(
            session, meta, principal, email=str(body.email), current_password=body.current_password
        )
    return await users_service.describe(session, user)


@router.post(
    "/me/password", status_code=204, dependencies=[Authenticated()], responses=AUTH_RESPONSES
)
async def change_password(
    body: PasswordChangeIn,
    principal: PrincipalDep,
    session: SessionDep,
    ctx: ContextDep,
    meta: MetaDep,
) -> Response:
    await ctx.auth.change_password(
        session,
        meta,
        principal,
        current_password=body.current_password,
        new_password=body.new_password,
    )
    return Response(status_code=204)
