"""Auth routes: register, the OAuth2 token endpoint, revocation, logout, JWKS."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData

from mlgate.auth.schemas import JwksOut, RegisterIn, TokenOut
from mlgate.deps import Authenticated, ContextDep, MetaDep, PrincipalDep, Public, SessionDep
from mlgate.errors import OAuthError
from mlgate.limits.service import REVOKE_RATE, accounting_of
from mlgate.openapi import AUTH_RESPONSES, CONFLICT, PROBLEM, PUBLIC_RESPONSES
from mlgate.users import service as users_service

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
jwks_router = APIRouter(tags=["auth"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
TOKEN_FORM_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["password", "refresh_token"]},
                        "username": {"type": "string"},
                        "password": {"type": "string", "format": "password"},
                        "refresh_token": {"type": "string"},
                        "scope": {"type": "string"},
                    },
                }
            }
        },
    }
}


@router.post(
    "/register",
    status_code=201,
    dependencies=[Public()],
    responses={
        **PUBLIC_RESPONSES,
        **CONFLICT,
        400: {"description": "Invalid request", "content": PROBLEM},
        403: {"description": "Registration is closed", "content": PROBLEM},
        413: {"description": "Payload too large", "content": PROBLEM},
        429: {"description": "Too many registrations from one IP", "content": PROBLEM},
    },
    summary="Create an account",
)
async def register(
    body: RegisterIn, session: SessionDep, ctx: ContextDep, meta: MetaDep
) -> dict[str, Any]:
    # Per client IP (RATE_LIMIT_REGISTER); every attempt counts, so probing is limited too.
    await accounting_of(ctx).limit_ip("register", meta.ip, ctx.settings.rate_limit_register)
    user = await ctx.auth.register(
        session, meta, username=body.username, email=str(body.email), password=body.password
    )
    return (await users_service.describe(session, user)).model_dump(mode="json")


async def _form(request: Request) -> FormData:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "Send the parameters form-encoded")
    try:
        return await request.form()
    except Exception:
        raise OAuthError("invalid_request", "The form body could not be read") from None


def _param(form: FormData, name: str, *, required: bool = True) -> str | None:
    values = form.getlist(name)
    if len(values) > 1:
        raise OAuthError("invalid_request", f"Parameter '{name}' is repeated")
    if not values or not isinstance(values[0], str):
        if required:
            raise OAuthError("invalid_request", f"Parameter '{name}' is missing")
        return None
    return values[0]


@router.post(
    "/token",
    dependencies=[Public()],
    response_model=TokenOut,
    openapi_extra=TOKEN_FORM_DOC,
    responses={400: {"description": "RFC 6749 error"}, 429: {"description": "Throttled"}},
    summary="OAuth2 token endpoint (password and refresh_token grants)",
)
async def token(
    request: Request, session: SessionDep, ctx: ContextDep, meta: MetaDep
) -> JSONResponse:
    form = await _form(request)
    grant_type = _param(form, "grant_type")
    scope = _param(form, "scope", required=False)
    if grant_type == "password":
        pair = await ctx.auth.password_grant(
            session,
            meta,
            login=_param(form, "username") or "",
            password=_param(form, "password") or "",
            scope=scope,
        )
    elif grant_type == "refresh_token":
        pair = await ctx.auth.refresh_grant(
            session, meta, refresh_token=_param(form, "refresh_token") or "", scope=scope
        )
    else:
        raise OAuthError("unsupported_grant_type", "Use grant_type password or refresh_token")
    body = TokenOut(
        access_token=pair.access_token,
        expires_in=pair.expires_in,
        refresh_token=pair.refresh_token,
        scope=pair.scope,
    )
    return JSONResponse(body.model_dump(), headers=NO_STORE)


@router.post(
    "/revoke",
    dependencies=[Public()],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["token"],
                        "properties": {
                            "token": {"type": "string"},
                            "token_type_hint": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
    response_class=Response,
    responses={
        200: {
            "description": "Revoked, or unknown (RFC 7009 answers 200 either way)",
            "content": {},
        },
        400: {"description": "RFC 6749 error"},
        413: {"description": "Payload too large", "content": PROBLEM},
        429: {"description": "Too many requests from this address", "content": PROBLEM},
    },
    summary="Revoke a refresh token, access token or API key (RFC 7009)",
)
async def revoke(request: Request, session: SessionDep, ctx: ContextDep, meta: MetaDep) -> Response:
    await accounting_of(ctx).limit_ip("revoke", meta.ip, REVOKE_RATE)
    form = await _form(request)
    token_value = _param(form, "token")
    _param(form, "token_type_hint", required=False)
    await ctx.auth.revoke_token(session, meta, token_value or "")
    return Response(status_code=200, headers=NO_STORE)


@router.post(
    "/logout",
    status_code=204,
    dependencies=[Authenticated()],
    responses=AUTH_RESPONSES,
    summary="End this session: its refresh tokens and access token stop working",
)
async def logout(
    principal: PrincipalDep, session: SessionDep, ctx: ContextDep, meta: MetaDep
) -> Response:
    await ctx.auth.logout(session, meta, principal)
    return Response(status_code=204)


@jwks_router.get(
    "/.well-known/jwks.json",
    dependencies=[Public()],
    response_model=JwksOut,
    summary="Public signing keys",
)
async def jwks(ctx: ContextDep) -> dict[str, Any]:
    return ctx.tokens.jwks()

